"""The gateway process, in data-path order: sources -> frame verification -> pipeline -> buffer -> signer -> uplink."""
