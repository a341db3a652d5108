"""Wristbands over BLE, all in one place: the scanners' source (source.py, with sim_scanner.py on the
virtual air), the advert (advert.py, docs/protocol.md §10), its resolution to a band (resolver.py),
and the alert engine (alerts.py) with its venue file (venue.py)."""
