#!/usr/bin/env bash
# Builds the QEMU that the real-kernel tier runs inside its guest: Debian's
# qemu-system-x86 from bookworm-backports (QEMU 10.0, which takes the fds that
# svad hands out), not the host's QEMU 7.2 that runs the guest itself. The
# packages are extracted with mmdebstrap into a scratch root (nothing is
# installed on this machine, and its apt sources stay as they are); the
# bundle keeps only what `qemu-system-x86_64 -machine q35 -accel tcg` loads
# there: the binary, the libraries its ld.so resolves inside that root, the
# ld.so, and the firmware of the machine and of virtio-net-pci. It is cached
# outside the clone, keyed by the package list and this recipe, and reused
# while both match.
#
#   tests/kernel/build-qemu.sh     prints the path of the cached bundle, a
#                                  folder laid out like / (usr/bin/..., lib/...)
#
# SVAD_KERNEL_CACHE (default /var/cache/svad-kernel-tier) is the cache folder
# (the bundle goes to its qemu-bookworm-backports-KEY/ subfolder),
# DEBIAN_MIRROR (default http://deb.debian.org) the archive the packages come
# from.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${SVAD_KERNEL_CACHE:-/var/cache/svad-kernel-tier}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org}

die() {
  echo "build-qemu: $*" >&2
  exit 1
}

# shellcheck source=../../packaging/lib/needs.sh
source "$here/../../packaging/lib/needs.sh"
NEEDS_PREFIX=build-qemu
# needs:begin
needs+=(
  mmdebstrap:mmdebstrap sha256sum:coreutils cut:coreutils mkdir:coreutils
  mktemp:coreutils rm:coreutils mv:coreutils cp:coreutils date:coreutils
  dirname:coreutils readlink:coreutils du:coreutils tail:coreutils
  cat:coreutils
  find:findutils awk:mawk sed:sed strip:binutils
  # what mmdebstrap runs to download and extract
  apt-get:apt dpkg-deb:dpkg tar:tar mount:mount umount:mount
)
needs_packages+=(debian-archive-keyring)
# needs:end
needs_check

# qemu-system-x86 from backports wants its own common, data and seabios
# packages from there too; apt takes the rest of its dependencies from
# bookworm.
packages="qemu-system-x86 qemu-system-common qemu-system-data seabios"

# The recipe below is part of the key too: change it and the bundle is rebuilt.
key=$( (echo "$packages"; sed -n '/^# recipe:begin/,/^# recipe:end/p' "${BASH_SOURCE[0]}") |
  sha256sum | cut -c1-16)
out=$cache/qemu-bookworm-backports-$key

if [ -f "$out/done" ] && [ -x "$out/bundle/usr/bin/qemu-system-x86_64" ]; then
  echo "build-qemu: reusing $out" >&2
  echo "$out/bundle"
  exit 0
fi

mkdir -p "$cache"
work=$(mktemp -d "$cache/qemu.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "build-qemu: extracting $packages from bookworm-backports" >&2
start=$(date +%s)

# recipe:begin
include=
for p in $packages; do
  include=$include${include:+,}$p/bookworm-backports
done
# extract: the packages and their dependencies are unpacked, not installed
# (no maintainer script runs, no Essential set), which is all a copy needs.
mmdebstrap --variant=extract --include="$include" \
  bookworm "$work/root" \
  "deb $mirror/debian bookworm main" \
  "deb $mirror/debian bookworm-updates main" \
  "deb $mirror/debian-security bookworm-security main" \
  "deb $mirror/debian bookworm-backports main" >"$work/mmdebstrap.log" 2>&1 || {
  tail -n 30 "$work/mmdebstrap.log" >&2
  die "mmdebstrap failed (last lines above)"
}

# A path of the scratch root, its symlinks followed inside that root (the
# root's /lib64/ld-linux-x86-64.so.2 points to an absolute path).
in_root() {
  local p=$1 target n=0
  while [ -L "$work/root$p" ]; do
    n=$((n + 1))
    [ "$n" -le 40 ] || die "$p: too many symlinks in the scratch root"
    target=$(readlink "$work/root$p")
    case "$target" in
      /*) p=$target ;;
      *) p=$(dirname "$p")/$target ;;
    esac
  done
  [ -e "$work/root$p" ] || die "$p is not in the scratch root"
  echo "$work/root$p"
}

# The libraries, as the root's own ld.so resolves them there: every path it
# prints must lie in the root, else a library came from this machine.
ldso=$(in_root /lib64/ld-linux-x86-64.so.2)
listing=$("$ldso" --inhibit-cache \
  --library-path "$work/root/lib/x86_64-linux-gnu:$work/root/usr/lib/x86_64-linux-gnu" \
  --list "$work/root/usr/bin/qemu-system-x86_64") ||
  die "the root's ld.so cannot load qemu-system-x86_64: $listing"
libs=$(echo "$listing" | awk '$1 !~ /^\// && /=> / { print $3 }')
# The ld.so goes at the path the binary names (PT_INTERP).
files="/usr/bin/qemu-system-x86_64 /lib64/ld-linux-x86-64.so.2"
for lib in $libs; do
  case "$lib" in
    "$work/root"/*) files="$files ${lib#"$work/root"}" ;;
    *) die "qemu-system-x86_64 loads $lib, which is not in the scratch root" ;;
  esac
done
# -machine q35 loads seabios and the vapic option ROM, virtio-net-pci its
# iPXE ROM, each from a folder of Debian's firmware path.
files="$files /usr/share/seabios/bios-256k.bin /usr/share/qemu/kvmvapic.bin
  /usr/lib/ipxe/qemu/efi-virtio.rom"

for f in $files; do
  src=$(in_root "$f")
  mkdir -p "$work/bundle$(dirname "$f")"
  cp "$src" "$work/bundle$f"
done
# Debian ships them stripped already; this keeps the bundle small whatever
# a later package ships.
find "$work/bundle" -type f \( -name '*.so*' -o -path '*/bin/*' \) \
  -exec strip --strip-unneeded {} +
"$work/bundle/lib64/ld-linux-x86-64.so.2" --inhibit-cache \
  --library-path "$work/bundle/lib/x86_64-linux-gnu:$work/bundle/usr/lib/x86_64-linux-gnu" \
  "$work/bundle/usr/bin/qemu-system-x86_64" --version | sed -n 1p >"$work/version" ||
  die "the bundle's qemu-system-x86_64 does not run"
# recipe:end

rm -rf "$work/root"
date -u +%FT%TZ >"$work/done"
rm -rf "$out"
mv "$work" "$out"
trap - EXIT
echo "build-qemu: built $out ($(cat "$out/version"); $(find "$out/bundle" -type f | awk 'END { print NR }') files, $(du -sm "$out/bundle" | cut -f1) MiB) in $(($(date +%s) - start)) s" >&2
echo "$out/bundle"
