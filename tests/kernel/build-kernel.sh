#!/usr/bin/env bash
# Builds the real-kernel tier's kernel from Debian's linux-source-6.12:
# `make tinyconfig`, then tests/kernel/kernel.config merged over it, everything
# built in. The result (bzImage, .config and the uAPI headers of `make
# headers_install`) is cached outside the clone, keyed by the source package's
# version and the fragment's hash, and reused when both match.
#
#   tests/kernel/build-kernel.sh        prints the path of the cached bzImage
#
# SVAD_KERNEL_CACHE (default /var/cache/svad-kernel-tier) is the cache folder,
# JOBS (default 2) the parallel jobs of the build.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
fragment=$here/kernel.config
cache=${SVAD_KERNEL_CACHE:-/var/cache/svad-kernel-tier}
jobs=${JOBS:-2}
tarball=/usr/src/linux-source-6.12.tar.xz

die() {
  echo "build-kernel: $*" >&2
  exit 1
}

# shellcheck source=../../packaging/lib/needs.sh
source "$here/../../packaging/lib/needs.sh"
NEEDS_PREFIX=build-kernel
# needs:begin
needs+=(
  dpkg-query:dpkg sha256sum:coreutils cut:coreutils cat:coreutils mkdir:coreutils
  mktemp:coreutils rm:coreutils cp:coreutils mv:coreutils date:coreutils
  basename:coreutils tail:coreutils sed:sed grep:grep tar:tar
  # what the kernel's own build runs
  xz:xz-utils make:make gcc:gcc bc:bc flex:flex bison:bison ld:binutils
  objcopy:binutils nm:binutils awk:mawk gzip:gzip perl:perl-base
  rsync:rsync # make headers_install
)
needs_packages+=(linux-source-6.12 libelf-dev libssl-dev)
# needs:end
needs_check

[ -f "$tarball" ] || die "$tarball is missing: install the Debian package linux-source-6.12"
version=$(dpkg-query -W -f='${Version}' linux-source-6.12 2>/dev/null) ||
  die "cannot read the version of linux-source-6.12"
# The recipe below is part of the key too: change it and the kernel is rebuilt.
key=$( (cat "$fragment"; sed -n '/^# recipe:begin/,/^# recipe:end/p' "${BASH_SOURCE[0]}") |
  sha256sum | cut -c1-16)
out=$cache/linux-$version-$key

if [ -f "$out/bzImage" ] && [ -f "$out/config" ] && [ -d "$out/include/linux" ]; then
  echo "build-kernel: reusing $out" >&2
  echo "$out/bzImage"
  exit 0
fi

mkdir -p "$cache"
work=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$work"' EXIT

# The uAPI headers that the tier's test client is built with.
install_headers() {
  make -s ARCH=x86_64 headers_install INSTALL_HDR_PATH="$work/headers" >/dev/null ||
    die "make headers_install failed"
  rm -rf "$1/include"
  cp -r "$work/headers/include" "$1/include"
}

if [ -f "$out/bzImage" ] && [ -f "$out/config" ]; then
  echo "build-kernel: adding the uAPI headers to $out" >&2
  tar -xJf "$tarball" -C "$work"
  cd "$work/linux-source-6.12"
  install_headers "$out"
  echo "$out/bzImage"
  exit 0
fi
echo "build-kernel: building linux-source-6.12 $version with $(basename "$fragment") in $work" >&2
start=$(date +%s)

# recipe:begin
tar -xJf "$tarball" -C "$work"
src=$work/linux-source-6.12
cd "$src"
make -s ARCH=x86_64 tinyconfig >/dev/null
scripts/kconfig/merge_config.sh -m .config "$fragment" >/dev/null
make -s ARCH=x86_64 olddefconfig >/dev/null
# recipe:end

# A merged fragment silently loses what Kconfig cannot satisfy: every option
# the fragment sets must be in the final .config as written.
missing=()
while IFS= read -r line; do
  case "$line" in
    CONFIG_*=*) grep -qxF "$line" .config || missing+=("$line") ;;
    '# CONFIG_'*' is not set')
      opt=${line#\# }
      opt=${opt%% *}
      grep -q "^$opt=" .config && missing+=("$line")
      ;;
  esac
done <"$fragment"
if [ ${#missing[@]} -gt 0 ]; then
  die "the final .config lacks what kernel.config asks for: ${missing[*]}"
fi

make -s ARCH=x86_64 -j "$jobs" bzImage >"$work/build.log" 2>&1 || {
  tail -n 40 "$work/build.log" >&2
  die "the kernel build failed (last lines above)"
}

rm -rf "$out.tmp"
mkdir -p "$out.tmp"
cp arch/x86/boot/bzImage "$out.tmp/bzImage"
cp .config "$out.tmp/config"
install_headers "$out.tmp"
rm -rf "$out"
mv "$out.tmp" "$out"
echo "build-kernel: built $out in $(($(date +%s) - start)) s" >&2
echo "$out/bzImage"
