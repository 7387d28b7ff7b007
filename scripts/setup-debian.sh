#!/usr/bin/env bash
# Installs what Fors's demo and tests need on a Debian machine: Debian's tor (for the private
# network's authorities, relays and client), python3 (network orchestration), python3-stem (the
# ControlPort test), unbound (the local DNS resolver exit tests use), prometheus (scrapes the
# MetricsPort in tests), a C toolchain, and what the Debian package test needs
# (systemd-analyze, binutils, adduser).
# Idempotent; safe to run on every invocation.
#
# Installing the tor package on a systemd machine normally enables tor@default, which would
# bootstrap into the public Tor network. Fors's rule is that nothing leaves the machine, so the
# packages are installed with service starts blocked, and the system services are stopped and
# masked afterwards.
set -euo pipefail

need=()
command -v tor >/dev/null 2>&1 || need+=(tor)
command -v tor-gencert >/dev/null 2>&1 || need+=(tor)
command -v python3 >/dev/null 2>&1 || need+=(python3)
# stem (the controller library nyx is built on) drives the ControlPort test.
dpkg -s python3-stem >/dev/null 2>&1 || need+=(python3-stem)
# nyx, run headless inside tmux against a live relay (tests/nyx_relay.rs).
command -v nyx >/dev/null 2>&1 || need+=(nyx); command -v tmux >/dev/null 2>&1 || need+=(tmux)
command -v unbound >/dev/null 2>&1 || need+=(unbound)
# A real Prometheus scrapes the MetricsPort in tests (tests/daemon_starvation.rs).
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v cc >/dev/null 2>&1 || need+=(gcc)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
# Network-namespace tests (scripts/netns.py): unshare, nsenter and setpriv (util-linux), ip.
command -v unshare >/dev/null 2>&1 || need+=(util-linux)
command -v setpriv >/dev/null 2>&1 || need+=(util-linux)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
# The Debian package test (tests/package_deb.rs): systemd-analyze (verify, syscall-filter),
# objdump and strip (packaging/build-deb.sh), adduser (the package's postinst), curl (the
# directory cache tests ask the DirPort as an operator would).
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v objdump >/dev/null 2>&1 || need+=(binutils)
command -v strip >/dev/null 2>&1 || need+=(binutils)
command -v adduser >/dev/null 2>&1 || need+=(adduser)
# fors(8) is rendered with man --warnings (tests/package_deb.rs).
command -v man >/dev/null 2>&1 || need+=(man-db)
command -v curl >/dev/null 2>&1 || need+=(curl)
# Building arti under CI (below): its default TLS is native-tls, i.e. OpenSSL's headers.
if [ "${CI:-}" = true ]; then dpkg -s libssl-dev >/dev/null 2>&1 || need+=(libssl-dev); fi

if [ "${#need[@]}" -gt 0 ]; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    echo "setup: installing ${need[*]} (services will not be started)" >&2
    policy=/usr/sbin/policy-rc.d
    had_policy=0
    [ -e "$policy" ] && had_policy=1
    if [ "$had_policy" -eq 0 ]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
        $SUDO chmod 755 "$policy"
    fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" tor-geoipdb- >/dev/null
    if [ "$had_policy" -eq 0 ]; then $SUDO rm -f "$policy"; fi
fi

# Whatever happened before us, make sure no system tor or unbound is running or will start.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    for unit in tor.service tor@default.service unbound.service prometheus.service; do
        $SUDO systemctl disable --now "$unit" >/dev/null 2>&1 || true
        $SUDO systemctl mask "$unit" >/dev/null 2>&1 || true
    done
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: Rust is missing. Install it with rustup (https://rustup.rs), then run again." >&2
    exit 1
fi
echo "setup: $(tor --version | head -1); $(cargo --version)" >&2

# arti (crates.io), the second real client (tests/dircache_arti.rs). Under CI=true its test
# fails without it, so it is built once into target/arti (several minutes on 2 cores; a later
# run finds it there); elsewhere the test says SKIPPED unless ARTI_BIN or `arti` is found.
ARTI_ROOT=${ARTI_ROOT:-$PWD/target/arti}
if [ "${CI:-}" = true ] && ! command -v arti >/dev/null 2>&1 && [ ! -x "$ARTI_ROOT/bin/arti" ]; then
    echo "setup: building arti 2.7.0 into $ARTI_ROOT" >&2
    nice cargo install arti --version 2.7.0 --locked --root "$ARTI_ROOT" --quiet
fi
