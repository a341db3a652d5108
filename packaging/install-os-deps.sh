#!/usr/bin/env bash
# Installs the OS packages Guardian Edge needs on Debian / Raspberry Pi OS:
#   mosquitto  the brokers of the tests, the demo and the gateway
#   chromium   headless, for the browser tests of the gateway's status page
#              (tests/test_status_page_browser.py); a gateway does not need it:
#              GE_OS_DEPS=runtime installs mosquitto only
# Idempotent: does nothing when the binaries are already there. Uses apt-get, through sudo
# when not root; when neither works it stops and says exactly what to install.
set -euo pipefail

have_mosquitto() {
    command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]
}

have_chromium() {
    command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]
}

missing=()
have_mosquitto || missing+=(mosquitto)
if [ "${GE_OS_DEPS:-all}" != "runtime" ]; then
    have_chromium || missing+=(chromium)
    # the page's text renders the same on a machine with no fonts yet: DejaVu for Latin,
    # WenQuanYi Micro Hei (5 MB) for Chinese zone and venue names
    [ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
    [ -e /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || missing+=(fonts-wqy-microhei)
fi

if [ "${#missing[@]}" = "0" ]; then
    exit 0
fi

echo "install-os-deps: ${missing[*]} not found; installing from the OS packages" >&2
if [ "$(id -u)" = "0" ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    echo "install-os-deps: cannot install ${missing[*]}: not root and no password-less sudo." >&2
    echo "install-os-deps: run 'sudo apt-get install -y ${missing[*]}' (Debian/Raspberry Pi OS)" >&2
    echo "install-os-deps: or put a mosquitto >= 2.0 binary (and chromium for the browser tests) on PATH," >&2
    echo "install-os-deps: then re-run make." >&2
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-os-deps: apt-get not found; install ${missing[*]} with your package manager" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# A fresh machine may have no package lists yet; update only when the first try fails.
if ! $SUDO apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; then
    $SUDO apt-get update >/dev/null
    $SUDO apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! have_mosquitto; then
    echo "install-os-deps: apt-get finished but no mosquitto binary was found" >&2
    exit 1
fi
if [ "${GE_OS_DEPS:-all}" != "runtime" ] && ! have_chromium; then
    echo "install-os-deps: apt-get finished but no chromium binary was found" >&2
    exit 1
fi
echo "install-os-deps: ${missing[*]} installed" >&2
