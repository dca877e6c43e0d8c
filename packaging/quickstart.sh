#!/usr/bin/env bash
# svad's quick start: installs the Debian packages svad needs (if any are
# missing), builds, then runs the demo or the whole test suite.
#
#   packaging/quickstart.sh demo [--keep]   build, then walk through a sample host
#   packaging/quickstart.sh test            build, then run every test tier that runs here
#
# Works as root or as a user with sudo. BUILD_DIR overrides the build folder.
set -euo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BUILD_DIR:-$top/build}
jobs=${JOBS:-2}

# shellcheck source=lib/needs.sh
source "$top/packaging/lib/needs.sh"
NEEDS_PREFIX=quickstart
# needs:begin
needs+=(
  cmake:cmake ctest:cmake ninja:ninja-build g++:g++ pkg-config:pkgconf ccache:ccache
  sdbus-c++-xml2cpp:libsdbus-c++-bin
  # the tests: a private bus, busctl and lspci as oracles, a second uid, hotplug under umockdev
  dbus-daemon:dbus-daemon busctl:systemd lspci:pciutils setpriv:util-linux
  umockdev-wrapper:umockdev sh:dash readlink:coreutils
)
needs_packages+=(
  libsdbus-c++-dev libsystemd-dev libudev-dev libyaml-cpp-dev prometheus-cpp-dev
  libboost-dev libsqlite3-dev libxml2-dev libacl1-dev libumockdev-dev libgtest-dev libgmock-dev
)
needs_load packaging/demo.sh
# needs:end

usage() {
  sed -n '2,9s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
  exit 2
}

prepare() {
  needs_install
  needs_check
}

build() {
  if [ ! -f "$build/build.ninja" ]; then
    cmake -S "$top" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  fi
  cmake --build "$build" -j "$jobs"
}

cmd=${1:-}
[ -n "$cmd" ] || usage
shift
case "$cmd" in
  demo)
    prepare
    build
    exec "$top/packaging/demo.sh" --build "$build" "$@"
    ;;
  test)
    prepare
    build
    cd "$build"
    # Not the libvirt tier (label libvirt): it runs as root in a namespace of
    # its own with Debian's libvirt, which this suite does not install;
    # tests/libvirt/run.sh installs it and runs the tier (CI does).
    exec ctest --output-on-failure -j "$jobs" --timeout 600 -LE libvirt "$@"
    ;;
  *)
    usage
    ;;
esac
