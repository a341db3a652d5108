# the venue sensor app: see app.py
