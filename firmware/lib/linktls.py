# TLS for the MQTT link (lib/mqttlink.py loads this module only for a config.json with
# tls_ca): an SSLContext that requires the broker's certificate and checks it against the CA
# certificate (DER) at `ca`, made once per link. Not named tls.py: MicroPython's built-in
# `tls` module would be imported in its place.
from link import LinkError


def context(ca):
    try:
        import ssl
    except ImportError:
        raise LinkError("tls_ca is set but this firmware has no ssl module")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        with open(ca, "rb") as f:
            ctx.load_verify_locations(cadata=f.read())
    except (OSError, ValueError) as e:
        raise LinkError("tls_ca %s: %s" % (ca, e))
    return ctx
