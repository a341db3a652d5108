"""Shared by the gateway, central's tools, provisioning and the rig: protocol facts, wire codecs, key files."""
