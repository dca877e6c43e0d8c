#!/usr/bin/env bash
# The systemd tier: svad's Debian package in a real Debian system (systemd as
# PID 1, dbus-daemon, udev, journald) on the real-kernel tier's Linux 6.12
# with an emulated Intel IOMMU, under QEMU (software emulation: no KVM
# needed). The checks (tests/kernel/guest-systemd.sh) run in the guest as a
# oneshot unit after multi-user.target: the unit's Type=notify start and
# reload, the shipped bus policy, journald's structured records, udev events,
# auto_bind under the unit's sandbox, the watchdog, the metrics endpoint's
# reach, and a reinstall of the package.
#
#   tests/kernel/run-systemd.sh [--no-install]
#
# Installs the Debian packages it needs (unless --no-install), builds svad's
# .deb with packaging/build-deb.sh if DEB_DIR holds none, takes the kernel
# (build-kernel.sh) and the Debian root (build-root.sh) from their cache or
# builds them, installs the .deb in a copy of the root, makes an ext4 image
# of it (mke2fs -d), boots it and reads the results from the serial console.
# Exits 0 when no check failed, 1 otherwise (or when the guest never reported).
#
# BUILD_DIR (default build/) is where the console log goes, DEB_DIR (default
# BUILD_DIR/deb) where the .debs are, SVAD_KERNEL_CACHE (default
# /var/cache/svad-kernel-tier) the cache of the kernel and the root, JOBS
# (default 2) the build jobs, SYSTEMD_TIER_TIMEOUT (default 900) the seconds
# the guest may run, SYSTEMD_TIER_LOG (default BUILD_DIR/systemd-tier.log)
# the console log.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/../.." && pwd)
build=${BUILD_DIR:-$top/build}
deb_dir=${DEB_DIR:-$build/deb}
timeout_s=${SYSTEMD_TIER_TIMEOUT:-900}
log=${SYSTEMD_TIER_LOG:-$build/systemd-tier.log}

die() {
  echo "systemd-tier: $*" >&2
  exit 1
}

# shellcheck source=../../packaging/lib/needs.sh
source "$top/packaging/lib/needs.sh"
NEEDS_PREFIX=systemd-tier
# needs:begin
needs+=(
  mktemp:coreutils date:coreutils cp:coreutils mkdir:coreutils chmod:coreutils
  rm:coreutils ls:coreutils head:coreutils du:coreutils cut:coreutils
  timeout:coreutils tr:coreutils tee:coreutils tail:coreutils basename:coreutils
  grep:grep chroot:coreutils dpkg:dpkg useradd:passwd mke2fs:e2fsprogs
  qemu-system-x86_64:qemu-system-x86
)
needs_load packaging/build-deb.sh tests/kernel/build-kernel.sh tests/kernel/build-root.sh
# needs:end

install=1
for arg in "$@"; do
  case "$arg" in
    --no-install) install=0 ;;
    -h | --help)
      sed -n '2,26s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
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

# ---- the package -----------------------------------------------------------------
newest_deb() {
  ls -1t "$deb_dir"/svad_*.deb 2>/dev/null | head -n 1
}
deb=$(newest_deb)
if [ -z "$deb" ]; then
  deb_start=$(date +%s)
  "$top/packaging/build-deb.sh" "$deb_dir" >&2 || die "packaging/build-deb.sh failed"
  deb=$(newest_deb)
  [ -n "$deb" ] || die "packaging/build-deb.sh left no svad_*.deb in $deb_dir"
  echo "systemd-tier: built $(basename "$deb") in $(($(date +%s) - deb_start)) s"
fi
echo "systemd-tier: package $deb"

# ---- the kernel and the root ------------------------------------------------------
kernel_start=$(date +%s)
bzimage=$("$here/build-kernel.sh")
echo "systemd-tier: kernel ready in $(($(date +%s) - kernel_start)) s: $bzimage"
root_start=$(date +%s)
cached_root=$("$here/build-root.sh")
echo "systemd-tier: Debian root ready in $(($(date +%s) - root_start)) s: $cached_root"

# ---- this run's image: a copy of the root with the package and the checks ----------------
assemble_start=$(date +%s)
work=$(mktemp -d "${TMPDIR:-/var/tmp}/svad-systemd-tier.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
cp -a "$cached_root" "$root"
mkdir -p "$root/var/cache/svad-tier"
cp "$deb" "$root/var/cache/svad-tier/"
chroot "$root" dpkg -i "/var/cache/svad-tier/$(basename "$deb")" >"$work/dpkg.log" 2>&1 || {
  tail -n 20 "$work/dpkg.log" >&2
  die "dpkg -i of $(basename "$deb") in the root failed: a dependency missing from the root belongs in the needs_packages of tests/kernel/guest-systemd.sh"
}
# A member of group svad (which the package created) and an ordinary user.
useradd --root "$root" --no-create-home --groups svad tenant ||
  die "cannot add user tenant to group svad: the package should have created the group"
useradd --root "$root" --no-create-home visitor || die "cannot add user visitor"
mkdir -p "$root/usr/local/lib/svad-tier"
cp "$here/guest-systemd.sh" "$root/usr/local/lib/svad-tier/guest-systemd.sh"
chmod 755 "$root/usr/local/lib/svad-tier/guest-systemd.sh"
cp "$here/systemd/svad-tier.service" "$here/systemd/svad-tier.target" "$root/etc/systemd/system/"
# A machine id: not a first boot (which would ask for a locale on the console).
echo 5ad5ad5ad5ad5ad5ad5ad5ad5ad5ad5a >"$root/etc/machine-id"
size_mb=$(($(du -sm "$root" | cut -f1) + 512))
mke2fs -q -t ext4 -L svad-tier -d "$root" -F "$work/root.img" "${size_mb}M" >"$work/mke2fs.log" 2>&1 || {
  tail -n 20 "$work/mke2fs.log" >&2
  die "mke2fs -d failed"
}
echo "systemd-tier: image of ${size_mb} MiB assembled in $(($(date +%s) - assemble_start)) s"

# ---- boot ------------------------------------------------------------------------------
# 00:03.0 e1000e, 00:04.0 edu and 00:05.0 the root on virtio-blk, behind VT-d
# in scalable mode with PASID.
mkdir -p "$(dirname "$log")"
boot_start=$(date +%s)
set +e
timeout --foreground -k 10 "$timeout_s" qemu-system-x86_64 \
  -M q35,kernel-irqchip=split -accel tcg -cpu max -m 1G -smp 1 \
  -nodefaults -display none -monitor none -serial stdio -no-reboot \
  -device intel-iommu,intremap=on,caching-mode=on,x-scalable-mode=on,x-pasid-mode=on \
  -device e1000e,addr=03.0,romfile= -device edu,addr=04.0 \
  -drive file="$work/root.img",if=none,id=root,format=raw,cache=unsafe \
  -device virtio-blk-pci,drive=root,addr=05.0 \
  -kernel "$bzimage" \
  -append 'console=ttyS0 root=/dev/vda rw rootfstype=ext4 init=/lib/systemd/systemd panic=-1 loglevel=4 systemd.show_status=error systemd.unit=svad-tier.target' \
  </dev/null 2>&1 | tr -d '\r' | tee "$log"
qemu_status=${PIPESTATUS[0]}
set -e
boot_s=$(($(date +%s) - boot_start))

echo "systemd-tier: guest ran $boot_s s (qemu exit $qemu_status); whole tier $(($(date +%s) - tier_start)) s; console log $log"
summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed(, [0-9]+ skipped)?$' "$log" | tail -n 1 || true)
if [ -z "$summary" ]; then
  [ "$qemu_status" = 124 ] && die "the guest did not finish within $timeout_s s"
  die "the guest never reported its results (see $log)"
fi
if grep -q '^FAIL: ' "$log" || ! echo "$summary" | grep -q ' 0 failed\(, [0-9]* skipped\)\{0,1\}$'; then
  echo "systemd-tier: failures:" >&2
  grep '^FAIL: ' "$log" >&2 || true
  exit 1
fi
echo "systemd-tier: $summary"
