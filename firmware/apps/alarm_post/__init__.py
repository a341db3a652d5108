# the alarm post app: see app.py
