#!/usr/bin/env bash
# Builds svad on another Debian release, in a root of its own: the Debian
# package (packaging/build-deb.sh there: dpkg-buildpackage, lintian), then
# the source tree with its tests (cmake, ctest: unit, conformance, plugin,
# bus and hotplug tiers; the bus tests start their own dbus-daemon).
#
#   packaging/build-on.sh SUITE [--keep]     SUITE: bookworm, trixie, ...
#
# The root is made with mmdebstrap (minbase, the packages the project's
# scripts list, and packaging/debian/control's Build-Depends) and kept as a
# tarball in $SVAD_BUILD_ON_CACHE (default /var/cache/svad-build-on), named
# after the suite and a hash of those inputs and of this script: a second run
# only unpacks it. ccache's cache for the suite lives there too. The source is
# this clone's tracked files as they are in the work tree (as build-deb.sh
# stages them). The root's apt sources point at this machine's Debian mirror.
# --keep leaves the unpacked root and the logs (in a folder of TMPDIR or
# /var/tmp). Needs root. Exits non-zero if any step fails.
set -euo pipefail

top=$(cd "${BASH_SOURCE[0]%/*}/.." && pwd)

die() {
  echo "build-on: $*" >&2
  exit 1
}

# shellcheck source=lib/needs.sh
source "$top/packaging/lib/needs.sh"
NEEDS_PREFIX=build-on
# needs:begin
needs+=(
  mmdebstrap:mmdebstrap git:git tar:tar chroot:coreutils mount:mount umount:mount
  mountpoint:util-linux sha256sum:coreutils cut:coreutils mkdir:coreutils mktemp:coreutils
  cp:coreutils rm:coreutils mv:coreutils date:coreutils tail:coreutils du:coreutils
  sort:coreutils cat:coreutils paste:coreutils awk:mawk sed:sed id:coreutils
  dpkg-query:dpkg
)
# needs:end

suite=
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --keep) keep=1; shift ;;
    -h | --help) sed -n '2,18s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 0 ;;
    -*) die "unknown argument '$1' (try --help)" ;;
    *) [ -z "$suite" ] || die "one suite only"; suite=$1; shift ;;
  esac
done
[ -n "$suite" ] || die "usage: packaging/build-on.sh SUITE [--keep] (try --help)"
[ "$(id -u)" -eq 0 ] || die "run this as root (mmdebstrap, chroot and mounts need it)"

needs_install
needs_check

jobs=${JOBS:-2}
cache=${SVAD_BUILD_ON_CACHE:-/var/cache/svad-build-on}
mkdir -p "$cache"

# The packages the root gets: what the package build and the test suite
# install (the lists of build-deb.sh and of the scripts it loads), read in a
# subshell so that this script's own list stays its own.
packages=$(
  needs=()
  needs_packages=()
  needs_load packaging/build-deb.sh
  needs_all_packages | sort -u
)
control=$top/packaging/debian/control

# This machine's Debian mirror (deb822 or one-line sources), for the root.
mirror=
for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
  [ -f "$f" ] || continue
  mirror=$(awk '/^URIs:/ && $2 !~ /security/ { print $2; exit }
                /^deb / && $2 !~ /security/ { print $2; exit }' "$f")
  [ -z "$mirror" ] || break
done
[ -n "$mirror" ] || die "no Debian mirror found in this machine's apt sources"

# Makes the root, as a tarball at $1. Its text is part of the cache key.
make_root() {
  mkdir -p "$work/ctl/debian"
  cp "$control" "$work/ctl/debian/control"
  # shellcheck disable=SC2016 # the hooks are expanded by mmdebstrap
  mmdebstrap --quiet --variant=minbase \
    --include="$(echo "$packages" | paste -sd, -)" \
    --customize-hook='mkdir -p "$1/tmp/svad-control"' \
    --customize-hook="copy-in $work/ctl/debian /tmp/svad-control" \
    --customize-hook='chroot "$1" env DEBIAN_FRONTEND=noninteractive apt-get build-dep -y -q --no-install-recommends /tmp/svad-control' \
    --customize-hook='rm -rf "$1/tmp/svad-control"' \
    "$suite" "$1" "deb $mirror $suite main" >"$logs/mmdebstrap.log" 2>&1
}

# The cached root is named after the suite, the packages, the control file and make_root.
key=$( (
  echo "$suite"
  echo "$packages"
  cat "$control"
  sed -n '/^make_root() {$/,/^}$/p' "${BASH_SOURCE[0]}"
) | sha256sum | cut -c1-16)
tarball=$cache/$suite-$key.tar

work=$(mktemp -d "${TMPDIR:-/var/tmp}/svad-build-on.XXXXXX")
root=$work/root
logs=$work/logs
mkdir -p "$root" "$logs"

mounted=()
cleanup() {
  local i m busy=0
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
    umount -R "${mounted[i]}" 2>/dev/null || umount -l "${mounted[i]}" 2>/dev/null || true
  done
  # Never remove a root that still has the host's /dev, /sys or /proc in it.
  for m in "${mounted[@]}"; do
    if mountpoint -q "$m"; then
      echo "build-on: $m is still mounted" >&2
      busy=1
    fi
  done
  if [ "$keep" -eq 0 ] && [ "$busy" -eq 0 ]; then
    rm -rf --one-file-system "$work"
  else
    echo "build-on: the root and the logs stay in $work"
  fi
}
trap cleanup EXIT

total_start=$(date +%s)
if [ -f "$tarball" ]; then
  echo "build-on: using the cached $suite root $tarball"
  root_how=cached
else
  echo "build-on: building a $suite root (mmdebstrap, once for these inputs) ..."
  root_how=built
  s=$(date +%s)
  make_root "$work/new.tar" || {
    tail -n 30 "$logs/mmdebstrap.log" >&2
    keep=1
    die "mmdebstrap failed"
  }
  mv "$work/new.tar" "$tarball"
  echo "build-on: root built in $(($(date +%s) - s)) s ($(du -sm "$tarball" | cut -f1) MiB)"
fi
s=$(date +%s)
tar -xf "$tarball" -C "$root"
unpack_s=$(($(date +%s) - s))

for m in proc sys dev; do
  mkdir -p "$root/$m"
  mount --rbind "/$m" "$root/$m"
  mount --make-rslave "$root/$m"
  mounted+=("$root/$m")
done
mountpoint -q "$root/dev" || die "binding /dev into the root failed"
mkdir -p "$cache/ccache-$suite" "$root/var/cache/ccache"
mount --bind "$cache/ccache-$suite" "$root/var/cache/ccache"
mounted+=("$root/var/cache/ccache")

# The tracked files as they are in the work tree, made a git work tree again
# (build-deb.sh stages from git's list of files).
src=$root/src/svad
mkdir -p "$src"
git -C "$top" ls-files -z --cached | (cd "$top" && tar --null -T - -cf -) | tar -xf - -C "$src"
echo "build-on: staged $(git -C "$top" rev-parse --short HEAD) and the work tree's changes"

results=()
in_root() {
  local name=$1
  shift
  local log=$logs/$name.log s status
  echo "build-on: $name ..."
  s=$(date +%s)
  set +e
  chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb JOBS="$jobs" \
    CCACHE_DIR=/var/cache/ccache CCACHE_BASEDIR=/ CCACHE_NOHASHDIR=true \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    bash -c "set -euo pipefail; cd /src/svad && $*" </dev/null >"$log" 2>&1
  status=$?
  set -e
  s=$(($(date +%s) - s))
  results+=("$name: $s s, exit $status")
  echo "build-on: $name: $s s, exit $status"
  if [ "$status" -ne 0 ]; then
    tail -n 60 "$log" >&2
    return 1
  fi
  tail -n 3 "$log"
}

ok=1
in_root stage 'git init -q && git add -A' || ok=0
[ "$ok" = 1 ] && { in_root package ./packaging/build-deb.sh /src/deb || ok=0; }
[ "$ok" = 1 ] && { in_root build "cmake -S . -B /src/build -G Ninja >/dev/null && cmake --build /src/build -j$jobs" || ok=0; }
# Not the libvirt tier (label libvirt): as in quickstart.sh test.
[ "$ok" = 1 ] && { in_root test "ctest --test-dir /src/build --output-on-failure -j$jobs --timeout 600 -LE libvirt" || ok=0; }

echo
echo "build-on: $suite summary ($(chroot "$root" dpkg-query -W -f='sdbus-c++ ${Version}' libsdbus-c++-dev))"
echo "  root: $root_how, unpacked in $unpack_s s"
for r in "${results[@]}"; do
  echo "  $r"
done
echo "  total: $(($(date +%s) - total_start)) s"
[ "$ok" = 1 ] || { keep=1; die "$suite: a step failed (logs in $logs)"; }
echo "build-on: $suite: the package built and the tests passed"
