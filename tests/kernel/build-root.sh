#!/usr/bin/env bash
# Builds the systemd tier's Debian root: bookworm with mmdebstrap (variant
# apt: the Essential packages and apt) and the packages that the guest's
# checks list in their needs block (tests/kernel/guest-systemd.sh), all but
# svad itself (run-systemd.sh installs the package under test in a copy).
# The root folder is cached outside the clone, keyed by the package list and
# this recipe, and reused while both match; a run copies it, so the cache
# stays clean.
#
#   tests/kernel/build-root.sh     prints the path of the cached root folder
#
# SVAD_KERNEL_CACHE (default /var/cache/svad-kernel-tier) is the cache folder
# (the root goes to its debian-bookworm-KEY/ subfolder), DEBIAN_MIRROR
# (default http://deb.debian.org) the archive the packages come from.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${SVAD_KERNEL_CACHE:-/var/cache/svad-kernel-tier}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org}

die() {
  echo "build-root: $*" >&2
  exit 1
}

# shellcheck source=../../packaging/lib/needs.sh
source "$here/../../packaging/lib/needs.sh"
NEEDS_PREFIX=build-root
# needs:begin
needs+=(
  mmdebstrap:mmdebstrap sha256sum:coreutils cut:coreutils mkdir:coreutils
  mktemp:coreutils rm:coreutils mv:coreutils date:coreutils tr:coreutils
  sort:coreutils du:coreutils tail:coreutils sed:sed
  # what mmdebstrap runs in root mode
  apt-get:apt dpkg:dpkg chroot:coreutils mount:mount umount:mount
)
needs_packages+=(debian-archive-keyring)
# needs:end
needs_check

# The guest's packages: its checks' needs block, without svad.
packages=$(
  needs=()
  needs_packages=()
  needs_load tests/kernel/guest-systemd.sh
  needs_all_packages | LC_ALL=C sort -u | sed '/^svad$/d' | tr '\n' ' '
) || die "cannot read the needs block of tests/kernel/guest-systemd.sh"
packages=${packages% }

# The recipe below is part of the key too: change it and the root is rebuilt.
key=$( (echo "$packages"; sed -n '/^# recipe:begin/,/^# recipe:end/p' "${BASH_SOURCE[0]}") |
  sha256sum | cut -c1-16)
out=$cache/debian-bookworm-$key

if [ -f "$out/done" ] && [ -x "$out/root/lib/systemd/systemd" ]; then
  echo "build-root: reusing $out" >&2
  echo "$out/root"
  exit 0
fi

mkdir -p "$cache"
work=$(mktemp -d "$cache/root.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "build-root: mmdebstrap bookworm with: $packages" >&2
start=$(date +%s)

# recipe:begin
# The guest logs in nowhere and has no network: no getty on the console (the
# checks write there), no apt timers.
mmdebstrap --variant=apt --include="${packages// /,}" \
  --customize-hook='echo svad-tier >"$1/etc/hostname"' \
  --customize-hook='chroot "$1" systemctl mask serial-getty@ttyS0.service getty@tty1.service apt-daily.timer apt-daily-upgrade.timer' \
  --customize-hook='printf "[Journal]\nStorage=volatile\nForwardToConsole=no\n" >"$1/etc/systemd/journald.conf"' \
  bookworm "$work/root" \
  "deb $mirror/debian bookworm main" \
  "deb $mirror/debian bookworm-updates main" \
  "deb $mirror/debian-security bookworm-security main" >"$work/mmdebstrap.log" 2>&1 || {
  tail -n 30 "$work/mmdebstrap.log" >&2
  die "mmdebstrap failed (last lines above)"
}
# recipe:end

date -u +%FT%TZ >"$work/done"
rm -rf "$out"
mv "$work" "$out"
trap - EXIT
echo "build-root: built $out ($(du -sm "$out/root" | cut -f1) MiB) in $(($(date +%s) - start)) s" >&2
echo "$out/root"
