# after boot.py; launch.py starts the app
import launch  # noqa: F401
