"""The hardware-in-the-loop rig: resources (what exists), drivers (what you can do with it),
and the pytest plugin that hands them to tests (hil_tests/plugin.py). docs/hil.md."""
