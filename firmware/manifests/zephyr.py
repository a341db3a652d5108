# Frozen modules for the zephyr port's Guardian Edge image (wristband): the apps' import
# closure (provisioning/closure.py; tests/provisioning/test_manifests.py keeps the two equal), frozen
# so their bytecode and constants run from flash instead of the heap. Build with
#   make -C ports/zephyr BOARD=<board> FROZEN_MANIFEST=<this file>   (MicroPython source tree)
# boot.py, main.py and config.json stay on the filesystem (the start-up runs them by name).
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

# the hardware layer: hal/__init__.py, the port's module and what it imports
package("hal", files=["__init__.py", "zephyr.py"], base_path="..")

# the apps this image serves, and the self-test
package(
    "apps", files=["__init__.py", "wristband/__init__.py", "wristband/app.py", "wristband/check.py"], base_path=".."
)
module("selftest.py", base_path="..")
