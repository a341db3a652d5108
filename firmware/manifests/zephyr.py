# Frozen modules for the zephyr port's Guardian Edge image (wristband): the apps' import closure
# on this port (provisioning/closure.py), written by `python -m provisioning.manifests`; do not
# edit (tests/provisioning/test_manifests.py keeps the two equal). Frozen, the modules' bytecode
# and constants run from flash instead of the heap. Build with
#   make -C ports/zephyr BOARD=<board> FROZEN_MANIFEST=<this file>   (MicroPython source tree)
# boot.py, main.py, config.json and boards/<board>.json stay on the filesystem.
# The port's own frozen modules come first.
include("$(PORT_DIR)/boards/manifest.py")

# lib/: the pure modules
module("advert.py", base_path="../lib")
module("aesccm.py", base_path="../lib")
module("bandclock.py", base_path="../lib")
module("button.py", base_path="../lib")
module("clock.py", base_path="../lib")
module("devconfig.py", base_path="../lib")
module("fall.py", base_path="../lib")
module("record.py", base_path="../lib")
module("sos.py", base_path="../lib")

# the hardware layer: hal/__init__.py, the port's module and what it imports,
# and the drivers of the parts its boards name (lis3dh)
package(
    "hal",
    files=[
        "__init__.py",
        "accel.py",
        "analog.py",
        "ble.py",
        "civil.py",
        "lis3dh.py",
        "machineboard.py",
        "start.py",
        "wifi.py",
        "zephyr.py",
    ],
    base_path="..",
)

# the apps this image serves, and the self-test
package(
    "apps",
    files=[
        "__init__.py",
        "wristband/__init__.py",
        "wristband/app.py",
        "wristband/check.py",
    ],
    base_path="..",
)
module("fwswitch.py", base_path="..")
module("launch.py", base_path="..")
module("selftest.py", base_path="..")
