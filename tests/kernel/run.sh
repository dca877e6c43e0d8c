#!/usr/bin/env bash
# The real-kernel tier: svad's linux backend against a real Linux 6.12 with
# iommufd, VFIO device cdevs and vdpa_sim, booted under QEMU with an emulated
# Intel IOMMU (software emulation: no KVM needed).
#
#   tests/kernel/run.sh [--no-install]
#
# Installs the Debian packages it needs (unless --no-install), builds svad
# (if BUILD_DIR lacks it) and the kernel (or takes it from the cache), builds
# the test client against that kernel's uAPI headers, assembles an initramfs,
# boots it and reads the results from the serial console. The guest runs a
# second QEMU itself, 10.0 from bookworm-backports (build-qemu.sh), with the
# fds svad hands out. Exits 0 when every check passed, 1 otherwise (or when
# the guest never reported).
#
# BUILD_DIR (default build/) is svad's build folder, SVAD_KERNEL_CACHE
# (default /var/cache/svad-kernel-tier) the kernel cache, JOBS (default 2)
# the build jobs, KERNEL_TIER_TIMEOUT (default 900) the seconds the guest may
# run, KERNEL_TIER_LOG (default BUILD_DIR/kernel-tier.log) the console log.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/../.." && pwd)
build=${BUILD_DIR:-$top/build}
jobs=${JOBS:-2}
timeout_s=${KERNEL_TIER_TIMEOUT:-900}
log=${KERNEL_TIER_LOG:-$build/kernel-tier.log}

die() {
  echo "kernel-tier: $*" >&2
  exit 1
}

# shellcheck source=../../packaging/lib/needs.sh
source "$top/packaging/lib/needs.sh"
NEEDS_PREFIX=kernel-tier
# needs:begin
needs+=(
  mktemp:coreutils date:coreutils cp:coreutils ln:coreutils mkdir:coreutils
  chmod:coreutils basename:coreutils sort:coreutils stat:coreutils rm:coreutils
  timeout:coreutils tr:coreutils tee:coreutils cat:coreutils tail:coreutils
  find:findutils awk:mawk grep:grep strip:binutils ldd:libc-bin cpio:cpio
  gzip:gzip du:coreutils cut:coreutils
  qemu-system-x86_64:qemu-system-x86
  # copied into the guest
  busybox:busybox-static dbus-daemon:dbus-daemon vdpa:iproute2 lspci:pciutils
)
needs_packages+=(libc6-dev) # kt-client is linked -static
needs_load packaging/quickstart.sh tests/kernel/build-kernel.sh tests/kernel/build-qemu.sh
# needs:end

install=1
for arg in "$@"; do
  case "$arg" in
    --no-install) install=0 ;;
    -h | --help)
      sed -n '2,17s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
      exit 0
      ;;
    *) die "unknown argument '$arg' (try --help)" ;;
  esac
done

if [ "$install" = 1 ]; then
  needs_install
fi
needs_check

tier_start=$(date +%s)

# ---- svad --------------------------------------------------------------------
if [ ! -f "$build/build.ninja" ]; then
  cmake -S "$top" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
cmake --build "$build" -j "$jobs" --target svad svactl >/dev/null ||
  die "building svad and svactl in $build failed"
# The allocation benchmark, where the build has the benchmarks: run in the
# guest against its svad, it gives the linux backend's round trip.
bench=$build/bench/svad_bench_alloc_roundtrip
if grep -q '^SVAD_BUILD_BENCH:BOOL=ON' "$build/CMakeCache.txt" &&
  grep -q '^SVAD_BUILD_TESTS:BOOL=ON' "$build/CMakeCache.txt"; then
  cmake --build "$build" -j "$jobs" --target svad_bench_alloc_roundtrip >/dev/null ||
    die "building svad_bench_alloc_roundtrip in $build failed"
else
  bench=
fi

# ---- the kernel and its uAPI headers --------------------------------------------
kernel_start=$(date +%s)
bzimage=$("$here/build-kernel.sh")
kdir=$(dirname "$bzimage")
[ -d "$kdir/include/linux" ] || die "$kdir/include has no uAPI headers"
echo "kernel-tier: kernel ready in $(($(date +%s) - kernel_start)) s: $bzimage"

# ---- the guest's QEMU ------------------------------------------------------------
qemu_start=$(date +%s)
qemu_bundle=$("$here/build-qemu.sh")
echo "kernel-tier: guest QEMU ready in $(($(date +%s) - qemu_start)) s: $qemu_bundle"

# ---- the initramfs -----------------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/svad-kernel-tier.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,usr/local/bin,lib64,etc,proc,sys,dev,run,tmp,root}

g++ -std=c++20 -O2 -Wall -Wextra -static -isystem "$kdir/include" \
  -o "$root/usr/local/bin/kt-client" "$here/kt_client.cpp" ||
  die "building the test client failed"

busybox=$(command -v busybox) || die "busybox is missing (Debian package busybox-static)"
cp "$busybox" "$root/bin/busybox"
for applet in $("$root/bin/busybox" --list); do
  [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done

# A dynamically linked program and every library it loads, at the same paths.
copy_with_libs() {
  local src=$1 dst=$2
  mkdir -p "$(dirname "$root$dst")"
  cp "$src" "$root$dst"
  strip --strip-unneeded "$root$dst" 2>/dev/null || true
  local lib
  for lib in $(ldd "$src" | awk '/=> \// { print $3 } /^[[:space:]]*\// { print $1 }'); do
    if [ ! -e "$root$lib" ]; then
      mkdir -p "$(dirname "$root$lib")"
      cp -L "$lib" "$root$lib"
    fi
  done
}
copy_with_libs "$build/svad" /usr/local/bin/svad
copy_with_libs "$build/svactl" /usr/local/bin/svactl
[ -n "$bench" ] && copy_with_libs "$bench" /usr/local/bin/svad-bench-alloc
copy_with_libs "$(command -v dbus-daemon)" /usr/bin/dbus-daemon
copy_with_libs "$(command -v vdpa)" /usr/sbin/vdpa
if command -v lspci >/dev/null 2>&1; then
  copy_with_libs "$(command -v lspci)" /usr/bin/lspci
  # lspci -vvv with numbers only needs no pci.ids, but looks for it.
  mkdir -p "$root/usr/share/misc"
  [ -f /usr/share/misc/pci.ids ] && cp /usr/share/misc/pci.ids "$root/usr/share/misc/"
fi

# QEMU 10.0 with its libraries and firmware, at the paths of a Debian system.
# Where the image has a file already (svad's libraries, glibc above all) the
# copy from this machine stays: both are bookworm's, and one glibc serves all.
cp -a -n "$qemu_bundle/." "$root/"
# Every library QEMU loads must then be in the image, as the guest resolves it.
qemu_libs=$("$root/lib64/ld-linux-x86-64.so.2" --inhibit-cache \
  --library-path "$root/lib/x86_64-linux-gnu:$root/usr/lib/x86_64-linux-gnu" \
  --list "$root/usr/bin/qemu-system-x86_64") || die "the guest's QEMU does not load: $qemu_libs"
outside=$(echo "$qemu_libs" | awk -v r="$root/" '/=>/ && index($3, r) != 1 { print $1 }' | tr '\n' ' ')
[ -z "$outside" ] || die "the guest's QEMU loads libraries that are not in the image: $outside"

# svad's policy plugins, where this build has them (no fd leaves svad without
# one's ALLOW), with a configuration that lets root have what they accept.
if compgen -G "$build/plugins/*.so" >/dev/null; then
  for plugin in "$build"/plugins/*.so; do
    copy_with_libs "$plugin" "/usr/local/lib/svad/plugins/$(basename "$plugin")"
    chmod 644 "$root/usr/local/lib/svad/plugins/$(basename "$plugin")"
  done
  chmod 755 "$root/usr/local/lib/svad" "$root/usr/local/lib/svad/plugins"
  mkdir -p "$root/etc/svad"
  cp "$here/svad.yaml" "$root/etc/svad/svad.yaml"
fi

printf 'root:x:0:0:root:/root:/bin/sh\nmessagebus:x:100:101::/run:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nmessagebus:x:101:\n' >"$root/etc/group"
echo 0123456789abcdef0123456789abcdef >"$root/etc/machine-id"
cp "$here/guest-init.sh" "$root/init"
chmod 755 "$root/init"
# Compressed: QEMU 10.0 makes the image 80 MiB, gzip 24 MiB. The guest's
# kernel unpacks it in about 3.5 s more under software emulation (measured;
# zstd was no faster there).
(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) | gzip -6 \
  >"$work/initramfs.cpio.gz" || die "cpio or gzip failed"
echo "kernel-tier: initramfs $(($(stat -c %s "$work/initramfs.cpio.gz") / 1048576)) MiB ($(du -sm "$root" | cut -f1) MiB unpacked)"

# ---- boot ------------------------------------------------------------------------------
# 00:03.0 e1000e and 00:04.0 edu, behind VT-d in scalable mode with PASID.
mkdir -p "$(dirname "$log")"
boot_start=$(date +%s)
set +e
timeout --foreground -k 10 "$timeout_s" qemu-system-x86_64 \
  -M q35,kernel-irqchip=split -accel tcg -cpu max -m 1G -smp 1 \
  -nodefaults -display none -monitor none -serial stdio -no-reboot \
  -device intel-iommu,intremap=on,caching-mode=on,x-scalable-mode=on,x-pasid-mode=on \
  -device e1000e,addr=03.0,romfile= -device edu,addr=04.0 \
  -kernel "$bzimage" -initrd "$work/initramfs.cpio.gz" \
  -append 'console=ttyS0 panic=-1 loglevel=4 rdinit=/init' </dev/null 2>&1 |
  tr -d '\r' | tee "$log"
qemu_status=${PIPESTATUS[0]}
set -e
boot_s=$(($(date +%s) - boot_start))

echo "kernel-tier: guest ran $boot_s s (qemu exit $qemu_status); whole tier $(($(date +%s) - tier_start)) s; console log $log"
summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -n 1 || true)
if [ -z "$summary" ]; then
  [ "$qemu_status" = 124 ] && die "the guest did not finish within $timeout_s s"
  die "the guest never reported its results (see $log)"
fi
if grep -q '^FAIL ' "$log" || ! echo "$summary" | grep -q ' 0 failed$'; then
  echo "kernel-tier: failures:" >&2
  grep '^FAIL ' "$log" >&2 || true
  exit 1
fi
echo "kernel-tier: $summary"
