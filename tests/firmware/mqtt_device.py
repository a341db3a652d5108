# Device side of tests/firmware/test_mqtt_client.py: one scenario per run, driving
# firmware/lib/mqtt.py the way device code would. Runs unchanged on the MicroPython unix
# port and on CPython (no f-strings, no pytest).
#   <interpreter> mqtt_device.py SCENARIO PORT [key=value ...]
# Options: id (client id), keepalive, retry_ms, max_retries, timeout_ms, max_packet, user,
# password, will (1: last will "offline", retained, QoS 1, on ge/dev/<id>/status), ca (TLS,
# trusting the certificate in <ca>.der through the devices' lib/linktls.py on MicroPython,
# <ca>.pem on CPython).
# It reports on stdout, one line per event, which the test reads:
#   "connected <session present>", "msg <topic> <payload hex> ", "puback <pid>",
#   "error <ms> <code> <reason>" for an MQTTException that ends the scenario (ms since the
#   script started), "done" at the end. Anything else ends with a traceback (on stdout under
#   MicroPython, on stderr under CPython).
import select
import sys

from clock import sleep_ms, ticks_add, ticks_diff, ticks_ms
from mqtt import MQTTClient, MQTTException

HOST = "127.0.0.1"
_T0 = ticks_ms()


def say(*words):
    print(" ".join(str(w) for w in words))


received = [0]


def on_msg(topic, msg):
    received[0] += 1
    say("msg", topic.decode(), msg.hex(), "")


def on_puback(pid):
    say("puback", pid)


def tls_context(ca):
    # on MicroPython, the devices' own TLS context (lib/linktls.py)
    if sys.implementation.name == "micropython":
        import linktls

        return linktls.context(ca + ".der")
    import ssl

    return ssl.create_default_context(cafile=ca + ".pem")


def make(port, opts):
    c = MQTTClient(
        opts.get("id", "dev"),
        HOST,
        port,
        user=opts.get("user"),
        password=opts.get("password"),
        keepalive=int(opts.get("keepalive", "0")),
        ssl=tls_context(opts["ca"]) if "ca" in opts else None,
        max_packet=int(opts.get("max_packet", "4096")),
    )
    if opts.get("will") == "1":
        c.set_last_will("ge/dev/%s/status" % opts.get("id", "dev"), "offline", retain=True, qos=1)
    for name in ("retry_ms", "max_retries", "timeout_ms"):
        if name in opts:
            setattr(c, name, int(opts[name]))
    c.set_callback(on_msg)
    c.set_puback_callback(on_puback)
    return c


def wait_msgs(c, count, ms):
    # handles packets until `count` PUBLISH packets came in (or ms passed)
    deadline = ticks_add(ticks_ms(), ms)
    got = 0
    while got < count:
        left = ticks_diff(deadline, ticks_ms())
        if left <= 0:
            say("timeout", "waiting for", count - got, "messages")
            return
        op = c.wait_msg(left)
        if op is not None and op & 0xF0 == 0x30:
            got += 1


def sc_pubsub(c):
    say("connected", c.connect())
    say("granted", c.subscribe("ge/test/in", 1))
    c.publish("ge/test/out/q0", b"zero")
    say("pid", c.publish(b"ge/test/out/q1", "one \u2713", qos=1))
    c.publish("ge/test/out/retained", "kept", retain=True, qos=1)
    say("published")
    wait_msgs(c, 2, 5000)
    c.disconnect()


def sc_session(c):
    # persistent session: a QoS 1 message acknowledged once is not redelivered
    say("connected", c.connect(clean_session=False))
    c.subscribe("ge/test/sess", 1)
    say("subscribed")
    wait_msgs(c, 1, 5000)
    c.disconnect()
    say("connected", c.connect(clean_session=False))
    wait_msgs(c, 1, 5000)
    c.disconnect()


def sc_will(c):
    say("connected", c.connect())
    c.publish(c.lw_topic, "online", retain=True, qos=1)
    say("ready")
    while True:
        c.wait_msg()


def sc_retry(c):
    # wait=True: the fake broker acks the third transmission, then never again
    say("connected", c.connect())
    say("acked", c.publish("ge/test/r", "first", qos=1))
    c.publish("ge/test/r", "second", qos=1)
    say("acked?!")


def sc_nowait(c):
    say("connected", c.connect())
    pids = [c.publish("ge/test/nw", "m%d" % i, qos=1, wait=False) for i in range(3)]
    say("pids", *pids)
    say("pending", *c.pending())
    # an app loop: its own poll on c.sock, PUBACKs handled by check_msg, retry() on a timer
    poller = select.poll()
    poller.register(c.sock, select.POLLIN)
    deadline = ticks_add(ticks_ms(), 5000)
    retried = 0
    while c.pending() and ticks_diff(deadline, ticks_ms()) > 0:
        if poller.poll(50):
            while c.check_msg() is not None:
                pass
        retried += c.retry()
    say("retried", retried)
    say("pending", *c.pending())
    c.publish("ge/test/nw/end", "end", qos=1)
    c.disconnect()


def sc_resume(c):
    # QoS 1 messages still in flight when the connection drops go out again after connect()
    say("connected", c.connect(clean_session=False))
    c.publish("ge/test/resume", "r1", qos=1, wait=False)
    c.publish("ge/test/resume", "r2", qos=1, wait=False)
    try:
        while True:
            c.wait_msg()
    except MQTTException as e:
        say("lost", e)
    say("pending", *c.pending())
    say("connected", c.connect(clean_session=False))
    deadline = ticks_add(ticks_ms(), 5000)
    while c.pending() and ticks_diff(deadline, ticks_ms()) > 0:
        c.wait_msg(100)
    say("pending", *c.pending())
    c.disconnect()


def sc_keepalive(c):
    # idle for 5 s with keepalive 2 s, pinging from the app loop
    say("connected", c.connect())
    c.subscribe("ge/test/ka", 1)
    say("idle")
    poller = select.poll()
    poller.register(c.sock, select.POLLIN)
    end = ticks_add(ticks_ms(), 5000)
    pings = 0
    while ticks_diff(end, ticks_ms()) > 0:
        if c.keepalive_due():
            c.ping()
            pings += 1
        if poller.poll(100):
            op = c.check_msg()
            if op is not None and op & 0xF0 == 0x30:
                say("unexpected message while idle")
    say("pings", pings)
    c.publish("ge/test/ka/out", "still here", qos=1)
    say("awake")
    wait_msgs(c, 1, 5000)
    c.disconnect()


def sc_loopback(c):
    # subscribes to its own topic and publishes QoS 1 messages of growing size to it
    say("connected", c.connect())
    say("granted", c.subscribe("ge/test/loop", 1))
    for n in (1, 100, 1000):
        c.publish("ge/test/loop", "x" * n, qos=1, wait=False)
    deadline = ticks_add(ticks_ms(), 5000)
    while (c.pending() or received[0] < 3) and ticks_diff(deadline, ticks_ms()) > 0:
        c.wait_msg(100)
    c.disconnect()


def sc_wait(c):
    # connect, then wait for messages until the connection fails
    say("connected", c.connect())
    while True:
        c.wait_msg()


def sc_subfail(c):
    say("connected", c.connect())
    try:
        c.subscribe("ge/test/denied", 1)
    except MQTTException as e:
        say("refused", e.code, e)
    say("granted", c.subscribe("ge/test/ok", 0))
    c.publish("ge/test/after", "still connected")
    c.disconnect()


def sc_reconnect(c):
    # the broker is killed while the client waits, then comes back
    say("connected", c.connect())
    c.subscribe("ge/test/k", 1)
    say("ready")
    try:
        while True:
            c.wait_msg()
    except MQTTException as e:
        say("lost", e)
    refused = False
    deadline = ticks_add(ticks_ms(), 15000)
    while True:
        try:
            c.connect(timeout_ms=1000)
            break
        except MQTTException as e:
            # a killed broker's listener can still take a connection in the moment before
            # the process is gone, and then reset it: what counts is a refused connection
            if not refused and str(e).startswith("cannot connect"):
                say("refused", e)
                refused = True
            if ticks_diff(deadline, ticks_ms()) <= 0:
                raise
            sleep_ms(50)
    c.subscribe("ge/test/k", 1)
    say("reconnected")
    wait_msgs(c, 1, 5000)
    c.publish("ge/test/k/back", "back", qos=1)
    c.disconnect()


def main(argv):
    name = argv[1]
    port = int(argv[2])
    opts = {}
    for arg in argv[3:]:
        k, v = arg.split("=", 1)
        opts[k] = v
    c = make(port, opts)
    try:
        globals()["sc_" + name](c)
    except MQTTException as e:
        say("error", ticks_diff(ticks_ms(), _T0), e.code, e)
        return 0
    say("done")
    return 0


sys.exit(main(sys.argv))
