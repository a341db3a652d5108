# Frozen modules for the rp2 port's Guardian Edge image (alarm_post, sensor): the apps' import closure
# on this port (provisioning/closure.py), written by `python -m provisioning.manifests`; do not
# edit (tests/provisioning/test_manifests.py keeps the two equal). Frozen, the modules' bytecode
# and constants run from flash instead of the heap. Build with
#   make -C ports/rp2 BOARD=<board> FROZEN_MANIFEST=<this file>   (MicroPython source tree)
# boot.py, main.py, config.json and boards/<board>.json stay on the filesystem.
# The port's own frozen modules come first.
include("$(PORT_DIR)/boards/manifest.py")

# lib/: the pure modules
module("button.py", base_path="../lib")
module("cbor.py", base_path="../lib")
module("clock.py", base_path="../lib")
module("cobsframe.py", base_path="../lib")
module("cose.py", base_path="../lib")
module("detector.py", base_path="../lib")
module("devconfig.py", base_path="../lib")
module("frame.py", base_path="../lib")
module("framecheck.py", base_path="../lib")
module("link.py", base_path="../lib")
module("linktls.py", base_path="../lib")
module("mqtt.py", base_path="../lib")
module("mqttlink.py", base_path="../lib")
module("record.py", base_path="../lib")
module("reporter.py", base_path="../lib")
module("store.py", base_path="../lib")
module("uartlink.py", base_path="../lib")
module("utf8.py", base_path="../lib")

# the hardware layer: hal/__init__.py, the port's module and what it imports,
# and the drivers of the parts its boards name (pwm)
package(
    "hal",
    files=[
        "__init__.py",
        "analog.py",
        "machineboard.py",
        "pwm.py",
        "rp2.py",
        "start.py",
        "wifi.py",
    ],
    base_path="..",
)

# the apps this image serves, and the self-test
package(
    "apps",
    files=[
        "__init__.py",
        "alarm_post/__init__.py",
        "alarm_post/app.py",
        "alarm_post/check.py",
        "sensor/__init__.py",
        "sensor/app.py",
        "sensor/check.py",
    ],
    base_path="..",
)
module("fwswitch.py", base_path="..")
module("launch.py", base_path="..")
module("selftest.py", base_path="..")
