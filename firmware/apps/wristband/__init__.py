# the wristband app: see app.py
