# The board's start-up runs this file by name after boot.py. The start lives in launch.py
# (the app config.json names, safe mode, one line and the REPL for a board that does not fit),
# which the bundle carries compiled: a board compiles no source at power-up, and keeps 1 KB
# of .mpy on its flash instead of 2.7 KB of commented source.
import launch  # noqa: F401 - importing it starts the app
