#!/usr/bin/env bash
# The libvirt tier as CI runs it: installs what the tier needs (Debian's
# libvirt daemon, its QEMU driver, virsh and QEMU; none of them starts a
# service), builds svad (if BUILD_DIR lacks it), then runs the tier through
# ctest: `ctest -L libvirt` runs tests/libvirt/tier.sh once and then one test
# per check, each reading its PASS or FAIL line.
#
#   tests/libvirt/run.sh [--no-install]
#
# As root, or with sudo for apt-get (the tier itself needs root). BUILD_DIR
# (default build/) is svad's build folder, JOBS (default 2) the build jobs.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/../.." && pwd)
build=${BUILD_DIR:-$top/build}
jobs=${JOBS:-2}

die() {
  echo "libvirt-tier: $*" >&2
  exit 1
}

# shellcheck source=../../packaging/lib/needs.sh
source "$top/packaging/lib/needs.sh"
NEEDS_PREFIX=libvirt-tier
# needs:begin
needs+=(date:coreutils)
# ctest runs the tier; the build needs what the quick start builds with.
needs_load packaging/quickstart.sh tests/libvirt/tier.sh
# needs:end

install=1
for arg in "$@"; do
  case "$arg" in
    --no-install) install=0 ;;
    -h | --help)
      sed -n '2,11s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
      exit 0
      ;;
    *) die "unknown argument '$arg' (try --help)" ;;
  esac
done

if [ "$install" = 1 ]; then
  install_start=$(date +%s)
  needs_install
  echo "libvirt-tier: packages ready in $(($(date +%s) - install_start)) s"
fi
needs_check

if [ ! -f "$build/build.ninja" ]; then
  cmake -S "$top" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
cmake --build "$build" -j "$jobs" --target svad svactl svad-hostgen svad_plugin_vfio \
  svad_plugin_vdpa svad_plugin_idxd >/dev/null || die "building svad in $build failed"

ctest --test-dir "$build" -L libvirt --output-on-failure
