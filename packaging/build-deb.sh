#!/usr/bin/env bash
# Builds the Debian package fors_<version>_<arch>.deb with dpkg-deb alone (no cargo-deb, no
# debhelper: both would have to be installed on every CI machine; dpkg-deb is on every
# Debian system). Contents:
#   /usr/bin/fors                          the relay (debug info stripped)
#   /etc/fors/torrc                        a commented exit-relay example (conffile)
#   /etc/logrotate.d/fors                  log rotation (conffile)
#   /usr/share/fors/hw-profiles/*.toml     hardware profiles (Fors looks there)
#   /usr/lib/systemd/system/fors.service   Type=notify, hardened; fors@.service for instances
#   /usr/share/doc/fors/                   README, docs (operating, config, architecture)
#   /usr/share/man/man8/fors.8.gz          the man page (packaging/fors.8, by hand in roff)
# and maintainer scripts that create the _fors system user and /var/lib/fors (0700).
#
# Usage: packaging/build-deb.sh [--binary PATH] [--out DIR]
#   --binary PATH  package this fors binary (default: cargo build --release, then
#                  target/release/fors; $CARGO_TARGET_DIR is honoured)
#   --out DIR      where the .deb goes (default: target/debian)
# Prints the path of the package on stdout.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PKG=$ROOT/packaging
binary=""
out=""
while [ $# -gt 0 ]; do
    case $1 in
        --binary) binary=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        *) echo "build-deb: unknown argument $1" >&2; exit 2 ;;
    esac
done
target=${CARGO_TARGET_DIR:-$ROOT/target}
out=${out:-$target/debian}
for tool in dpkg-deb dpkg objdump strip gzip; do
    command -v "$tool" >/dev/null || { echo "build-deb: $tool is missing" >&2; exit 1; }
done
if [ -z "$binary" ]; then
    (cd "$ROOT" && cargo build --release --bin fors >&2)
    binary=$target/release/fors
fi
[ -x "$binary" ] || { echo "build-deb: no executable at $binary" >&2; exit 1; }

# The version from Cargo.toml's [package] table.
version=$(awk '/^\[package\]/ { p = 1; next } /^\[/ { p = 0 }
               p && $1 == "version" { gsub(/"/, "", $3); print $3; exit }' "$ROOT/Cargo.toml")
[ -n "$version" ] || { echo "build-deb: no version in Cargo.toml" >&2; exit 1; }
arch=$(dpkg --print-architecture)

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
d=$stage/fors
install -d -m 0755 "$d/DEBIAN" "$d/usr/bin" "$d/etc/fors/instances" "$d/etc/logrotate.d" \
    "$d/usr/share/fors/hw-profiles" "$d/usr/lib/systemd/system" "$d/usr/share/doc/fors" \
    "$d/usr/share/man/man8" \
    "$d/var/lib/fors" "$d/var/lib/fors-instances" "$d/var/log/fors"
# Debian ships binaries without debug info (the release profile keeps line tables).
strip --strip-debug -o "$d/usr/bin/fors" "$binary"
chmod 0755 "$d/usr/bin/fors"
install -m 0644 "$PKG/torrc" "$d/etc/fors/torrc"
install -m 0644 "$PKG/fors.logrotate" "$d/etc/logrotate.d/fors"
install -m 0644 "$ROOT"/hw-profiles/*.toml "$ROOT/hw-profiles/README.md" "$d/usr/share/fors/hw-profiles/"
install -m 0644 "$PKG/fors.service" "$PKG/fors@.service" "$d/usr/lib/systemd/system/"
install -m 0644 "$PKG/copyright" "$d/usr/share/doc/fors/copyright"
install -m 0644 "$ROOT/README.md" "$ROOT/docs/operating.md" "$ROOT/docs/config.md" \
    "$ROOT/docs/architecture.md" "$d/usr/share/doc/fors/"
# Debian policy 12.1: man pages compressed with gzip -9n (no name or time stamp inside).
gzip -9n <"$PKG/fors.8" >"$d/usr/share/man/man8/fors.8.gz"
chmod 0644 "$d/usr/share/man/man8/fors.8.gz"
install -m 0755 "$PKG/postinst" "$PKG/prerm" "$PKG/postrm" "$d/DEBIAN/"
printf '/etc/fors/torrc\n/etc/logrotate.d/fors\n' >"$d/DEBIAN/conffiles"

# Depends: the newest glibc symbol version the binary uses (what dpkg-shlibdeps would find
# for libc6; libgcc_s and libm come with it), and adduser for the maintainer scripts.
glibc=$(objdump -T "$d/usr/bin/fors" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' \
    | sort -uV | tail -n 1)
[ -n "$glibc" ] || { echo "build-deb: cannot read the glibc version the binary needs" >&2; exit 1; }
size=$(du -sk --exclude=DEBIAN "$d" | cut -f1)
cat >"$d/DEBIAN/control" <<CONTROL
Package: fors
Version: $version
Architecture: $arch
Maintainer: Fors developers <fors@example.invalid>
Installed-Size: $size
Depends: libc6 (>= $glibc), libgcc-s1, adduser
Suggests: logrotate
Section: net
Priority: optional
Description: thread-per-core Tor relay
 Fors is a Tor relay: one relay identity that fills every core, one shard per
 core on io_uring, with onion-skin and relay-cell cryptography batched across
 circuits. It reads C tor's torrc syntax.
 .
 The package ships fors.service (Type=notify, hardened, with a watchdog that
 restarts a relay whose shard stops) and fors@.service for several relays on
 one machine. Nothing starts until the relay is configured in /etc/fors/torrc.
CONTROL
(cd "$d" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | sort -z \
    | xargs -0 md5sum) >"$d/DEBIAN/md5sums"
chmod 0644 "$d/DEBIAN/control" "$d/DEBIAN/conffiles" "$d/DEBIAN/md5sums"

mkdir -p "$out"
deb=$out/fors_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$d" "$deb" >&2
echo "$deb"
