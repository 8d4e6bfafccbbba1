#!/usr/bin/env bash
# Installs the Debian packages the test suite runs for real (not mocked), when they are missing.
# Idempotent: a machine that already has them is left untouched and nothing is downloaded.
set -euo pipefail

# Debian package -> a file that proves it is installed.
declare -A PACKAGES=(
    [prometheus]=/usr/bin/prometheus
    [chromium]=/usr/bin/chromium
)

missing=()
for package in "${!PACKAGES[@]}"; do
    if [[ ! -x "${PACKAGES[$package]}" ]]; then
        missing+=("$package")
    fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "ensure-system-packages: all present (${!PACKAGES[*]})"
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    echo "ensure-system-packages: missing ${missing[*]}; run as root or install them yourself:" >&2
    echo "    sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
fi

# The tests start their own servers on private ports; a package's service started by its postinst
# would hold the default port and outlive the test run. policy-rc.d (exit 101) forbids that start;
# ours is only put in place when the machine has none, and removed afterwards.
policy=/usr/sbin/policy-rc.d
if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
fi

echo "ensure-system-packages: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# A fresh image often has no package lists at all, but updating them on every run would be slow:
# only when the first attempt fails.
if ! apt-get install -y --no-install-recommends "${missing[@]}"; then
    echo "ensure-system-packages: install failed, refreshing package lists and retrying"
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}"
fi

for package in "${missing[@]}"; do
    if [[ ! -x "${PACKAGES[$package]}" ]]; then
        echo "ensure-system-packages: $package installed but ${PACKAGES[$package]} is missing" >&2
        exit 1
    fi
done

# Report, not fail: the tests never use the default port, but a server there is worth knowing about.
if command -v pgrep >/dev/null && pgrep -x prometheus >/dev/null; then
    echo "ensure-system-packages: note: a prometheus process is running (pids $(pgrep -x prometheus | tr '\n' ' ')), probably the package's own service on :9090; the tests do not use it"
fi
echo "ensure-system-packages: installed ${missing[*]}"
