# the rig fixture app (Raspberry Pi Pico): see app.py and docs/hil.md
