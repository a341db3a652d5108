"""Wristbands over BLE: the advert (docs/protocol.md §10) and its resolution to a band."""
