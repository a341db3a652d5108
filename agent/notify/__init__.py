"""guardian-notify: verified alerts become messages to people (families, care staff, venue staff).

The core is shared by central (the `guardian-notify` service) and the gateway's fallback, so it
imports only agent.shared and its own modules (tests/test_layout.py); central's feed that
verifies batches and sends acknowledgements as signed commands is agent/central/notify_feed.py,
and cli.py, central's service command, wires the two:

    alert.py     Alert: one notifiable event and its identity (device, boot, seq)
    circle.py    care circles: residents, contacts in order, staff, channels (TOML, validated)
    channels.py  Apprise channels: URL validation, masking, one send per (contact, channel)
    modem.py     SMS through a serial modem (python-gsmmodem-new) as the Apprise gsm:// schema
    messages.py  Chinese and English texts
    ledger.py    the durable delivery ledger (SQLite, WAL, fsync)
    links.py     signed single-use acknowledgement links
    notifier.py  Notifier: alert in -> deliveries; ack in; tick (escalation, retries)
    web.py       the acknowledgement page and /metrics (aiohttp)
    cli.py       guardian-notify run | check | test CONTACT
"""
