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

packages=(
  cmake ninja-build g++ pkg-config ccache
  libsdbus-c++-dev libsdbus-c++-bin libsystemd-dev libudev-dev
  libyaml-cpp-dev prometheus-cpp-dev libboost-dev umockdev libumockdev-dev
  libgtest-dev libgmock-dev dbus pciutils
)

usage() {
  sed -n '2,9s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
  exit 2
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    echo "quickstart: '$*' needs root: run this as root or install sudo" >&2
    exit 1
  fi
}

install_packages() {
  local missing=()
  for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
      missing+=("$p")
    fi
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "quickstart: installing ${missing[*]}"
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
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
    install_packages
    build
    exec "$top/packaging/demo.sh" --build "$build" "$@"
    ;;
  test)
    install_packages
    build
    cd "$build"
    exec ctest --output-on-failure -j "$jobs" --timeout 600 "$@"
    ;;
  *)
    usage
    ;;
esac
