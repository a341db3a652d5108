# Run by name after boot.py: the start is launch.py (on flash compiled; why: its first comment)
import launch  # noqa: F401 - importing it starts the app
