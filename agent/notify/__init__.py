"""guardian-notify: verified alerts become messages to people (families, care staff, venue staff).

The package is shared by central (the `guardian-notify` service) and, later, the gateway's
fallback. It imports only the shared wire code (agent.errors, agent.frames, agent.cose,
agent.tomlcheck, agent.keyfiles, agent.backoff, agent.log), the verifier's public API
(agent.verifier.Verifier) and the central command sender (agent.commands), and its own modules:

    alert.py     Alert: one notifiable event and its identity (device, boot, seq)
    circle.py    care circles: residents, contacts in order, staff, channels (TOML, validated)
    channels.py  Apprise channels: URL validation, masking, one send per (contact, channel)
    modem.py     SMS through a serial modem (python-gsmmodem-new) as the Apprise gsm:// schema
    messages.py  Chinese and English texts
    ledger.py    the durable delivery ledger (SQLite, WAL, fsync)
    links.py     signed single-use acknowledgement links
    notifier.py  Notifier: alert in -> deliveries; ack in; tick (escalation, retries)
    central.py   central's feed (broker -> BatchVerifier -> Notifier) and the ACK command sender
    web.py       the acknowledgement page and /metrics (aiohttp)
    cli.py       guardian-notify run | check | test CONTACT
"""
