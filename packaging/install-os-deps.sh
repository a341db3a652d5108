#!/usr/bin/env bash
# Installs the OS packages Guardian Edge needs on Debian / Raspberry Pi OS: Mosquitto.
# Idempotent: does nothing when the binaries are already there. Uses apt-get, through sudo
# when not root; when neither works it stops and says exactly what to install.
set -euo pipefail

have_mosquitto() {
    command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]
}

if have_mosquitto; then
    exit 0
fi

echo "install-os-deps: mosquitto not found; installing it from the OS packages" >&2
if [ "$(id -u)" = "0" ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    echo "install-os-deps: cannot install mosquitto: not root and no password-less sudo." >&2
    echo "install-os-deps: run 'sudo apt-get install -y mosquitto' (Debian/Raspberry Pi OS)" >&2
    echo "install-os-deps: or put a mosquitto >= 2.0 binary on PATH, then re-run make." >&2
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-os-deps: apt-get not found; install Mosquitto >= 2.0 with your package manager" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# A fresh machine may have no package lists yet; update only when the first try fails.
if ! $SUDO apt-get install -y --no-install-recommends mosquitto >/dev/null; then
    $SUDO apt-get update >/dev/null
    $SUDO apt-get install -y --no-install-recommends mosquitto >/dev/null
fi

if ! have_mosquitto; then
    echo "install-os-deps: apt-get finished but no mosquitto binary was found" >&2
    exit 1
fi
echo "install-os-deps: mosquitto installed" >&2
