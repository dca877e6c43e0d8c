#!/usr/bin/env bash
# The suite under sanitizers: builds svad, svactl, the plugins and the tests
# a mode runs with GCC's sanitizers, in a build folder of their own, and runs
# those tests there (never the minute-long ones, label long, nor the libvirt
# tier).
#
#   tests/sanitize/run.sh address|thread [--no-install] [CTEST ARGS...]
#
# address: ASan with UBSan (every UB check aborts), LeakSanitizer on; the unit,
#          plugin and bus tests.
# thread:  TSan, for what runs on threads of its own: the plugin host's release
#          thread (the plugin tests), and in svad discovery's readers, the
#          hotplug worker, the offload workers, the rescan queue and the
#          metrics endpoint (the bus and hotplug tests, whose every svad runs
#          them).
# Every sanitized process (the tests, and the svad, svactl and plugins they
# start) writes its reports under BUILD/sanitizer-reports; any report there
# fails the run, even one from a process whose exit no test looked at. (The
# hotplug tests under TSan are the exception, see below.)
# SANITIZE_BUILD_DIR (default build-MODE/) is the build folder, JOBS (default
# 2) the build and test jobs.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/../.." && pwd)
jobs=${JOBS:-2}

die() {
  echo "sanitize: $*" >&2
  exit 1
}

# shellcheck source=../../packaging/lib/needs.sh
source "$top/packaging/lib/needs.sh"
NEEDS_PREFIX=sanitize
# needs:begin
needs+=(cmake:cmake ctest:cmake ninja:ninja-build g++:g++ mkdir:coreutils rm:coreutils
  ls:coreutils head:coreutils tail:coreutils date:coreutils wc:coreutils)
needs_load packaging/quickstart.sh
# needs:end

[ $# -ge 1 ] || die "usage: tests/sanitize/run.sh address|thread [--no-install] [CTEST ARGS...]"
mode=$1
shift
case "$mode" in
  address)
    targets=(svad svactl svad_unit_tests svad_plugin_tests svad_bus_tests)
    labels='^(unit|plugin|bus)$'
    ;;
  thread)
    targets=(svad svactl svad_plugin_tests svad_bus_tests svad_hotplug_tests)
    labels='^(plugin|bus)$' # and hotplug, below
    ;;
  *) die "unknown mode '$mode' (address or thread)" ;;
esac
install=1
if [ "${1-}" = --no-install ]; then
  install=0
  shift
fi
build=${SANITIZE_BUILD_DIR:-$top/build-$mode}

if [ "$install" = 1 ]; then
  needs_install
fi
needs_check

start=$(date +%s)
mkdir -p "$build"
buildlog=$build/sanitize-build.log
# Configured each time with the mode: a build folder of another mode, or of
# none, is made this mode's (or the tests would run unsanitized and pass).
# -O1 -g1: half the compile time of -O2 -g on these two cores, with the line
# tables a report's stack needs (and -O1 keeps ASan's and TSan's checks whole).
# Without RelWithDebInfo's -DNDEBUG, the asserts (Boost's too) are on here.
cmake -S "$top" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Sanitize \
  -DCMAKE_CXX_FLAGS_SANITIZE="-O1 -g1" \
  -DSVAD_SANITIZE="$mode" -DSVAD_BUILD_BENCH=OFF >"$buildlog" 2>&1 || {
  tail -n 40 "$buildlog" >&2
  die "configuring $build failed (last lines above, all in $buildlog)"
}
cmake --build "$build" -j "$jobs" --target "${targets[@]}" >>"$buildlog" 2>&1 || {
  tail -n 40 "$buildlog" >&2
  die "building $build failed (last lines above, all in $buildlog)"
}
echo "sanitize: $mode build in $(($(date +%s) - start)) s"

reports=$build/sanitizer-reports
rm -rf "$reports"
mkdir -p "$reports"
# The suppression files say beside each entry why it is there.
common="halt_on_error=1:log_path=$reports/report"
export ASAN_OPTIONS="$common:detect_leaks=1:detect_stack_use_after_return=1"
export UBSAN_OPTIONS="$common:print_stacktrace=1"
export LSAN_OPTIONS="suppressions=$here/lsan.supp:print_suppressions=0"
tsan="second_deadlock_stack=1:suppressions=$here/tsan.supp:print_suppressions=0"
export TSAN_OPTIONS="$common:$tsan"

status=0
# (A label that selects no test is an error, not a pass.)
(cd "$build" && ctest --output-on-failure --no-tests=error -j "$jobs" -L "$labels" "$@") ||
  status=1
if [ "$mode" = thread ]; then
  # The hotplug tests run under umockdev-wrapper. In a TSan process with a
  # log_path other than stderr, umockdev's preload library is lost (LD_PRELOAD
  # is gone before main): a test program would refuse to run, and its svad
  # would get no uevent. So these tests and their svad report to stderr, where
  # the first report stops the process (exit code 66). A test fails when its
  # svad stops so; a report from an svad's shutdown would go unseen.
  (cd "$build" && TSAN_OPTIONS="halt_on_error=1:exitcode=66:log_path=stderr:$tsan" \
    ctest --output-on-failure --no-tests=error -j "$jobs" -L '^hotplug$' "$@") || status=1
fi
echo "sanitize: $mode tests done in $(($(date +%s) - start)) s"
if [ -n "$(ls -A "$reports")" ]; then
  for r in "$reports"/*; do
    echo "sanitize: ---- $r"
    head -n 60 "$r"
  done
  die "$mode: $(ls "$reports" | wc -l) sanitizer report(s) in $reports"
fi
[ "$status" = 0 ] || die "$mode: tests failed"
echo "sanitize: $mode: no report, every test passed"
