#!/usr/bin/env bash
# The fuzz targets: builds them with clang (libFuzzer, ASan, UBSan) in their
# own build folder, writes the seed corpora, replays every corpus, then fuzzes.
#
#   tests/fuzz/run.sh TARGET|all SECONDS [--no-install]
#
# TARGET: pci_config, vtd, sysfs, sysfs_attrs, config, hostgen_yaml, dbus_args (all: each
# in turn, SECONDS each). The committed corpus tests/fuzz/corpus/TARGET (inputs
# that once crashed a target, kept so that they never do again) and the seeds
# are replayed first; new inputs the fuzzer finds go to FUZZ_BUILD_DIR/corpus/TARGET.
# A crash leaves its input in FUZZ_BUILD_DIR/crashes/TARGET and exits 1.
# FUZZ_BUILD_DIR (default build-fuzz/) is the build folder, JOBS (default 2)
# the build jobs, FUZZ_ARGS more libFuzzer options (e.g. -max_len=2048).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/../.." && pwd)
build=${FUZZ_BUILD_DIR:-$top/build-fuzz}
jobs=${JOBS:-2}
targets_all=(pci_config vtd sysfs sysfs_attrs config hostgen_yaml dbus_args)

die() {
  echo "fuzz: $*" >&2
  exit 1
}

# shellcheck source=../../packaging/lib/needs.sh
source "$top/packaging/lib/needs.sh"
NEEDS_PREFIX=fuzz
# needs:begin
needs+=(
  clang:clang clang++:clang cmake:cmake ninja:ninja-build mkdir:coreutils
  rm:coreutils tail:coreutils grep:grep sed:sed date:coreutils
)
# libFuzzer's runtime comes with clang's own runtime libraries
needs_packages+=(libclang-rt-14-dev)
needs_load packaging/quickstart.sh
# needs:end

[ $# -ge 2 ] || die "usage: tests/fuzz/run.sh TARGET|all SECONDS [--no-install]"
target=$1
seconds=$2
install=1
[ "${3-}" = --no-install ] && install=0
[[ $seconds =~ ^[0-9]+$ ]] || die "SECONDS must be a number, not '$seconds'"
if [ "$target" = all ]; then
  targets=("${targets_all[@]}")
else
  printf '%s\n' "${targets_all[@]}" | grep -qx -- "$target" ||
    die "unknown target '$target' (known: ${targets_all[*]} all)"
  targets=("$target")
fi

if [ "$install" = 1 ]; then
  needs_install
fi
needs_check

start=$(date +%s)
if [ ! -f "$build/build.ninja" ]; then
  CC=clang CXX=clang++ cmake -S "$top" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DSVAD_FUZZ=ON -DSVAD_BUILD_TESTS=OFF -DSVAD_BUILD_BENCH=OFF >/dev/null ||
    die "configuring $build with clang failed"
fi
cmake --build "$build" -j "$jobs" --target fuzz_all >/dev/null || die "building the fuzz targets failed"
echo "fuzz: targets built in $(($(date +%s) - start)) s"

seeds=$build/seeds
rm -rf "$seeds"
"$build/tests/fuzz/svad-fuzz-seeds" "$seeds" "$top/tests/conformance/pci-dumps" "$top/config" ||
  die "writing the seeds failed"

status=0
for t in "${targets[@]}"; do
  bin=$build/tests/fuzz/fuzz_$t
  kept=$top/tests/fuzz/corpus/$t
  work=$build/corpus/$t
  crashes=$build/crashes/$t
  mkdir -p "$work" "$crashes" "$seeds/$t"
  corpora=("$work" "$seeds/$t")
  [ -d "$kept" ] && corpora+=("$kept")
  log=$build/fuzz-$t.log
  # A timeout of 10 s per input, 2 GiB at most: a hang or a blow-up is a finding too.
  began=$(date +%s)
  rc=0
  # shellcheck disable=SC2086 # FUZZ_ARGS is a list of options
  "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$crashes/" ${FUZZ_ARGS-} "${corpora[@]}" >"$log" 2>&1 || rc=$?
  if [ "$rc" -eq 72 ] && grep -q 'libFuzzer: run interrupted' "$log"; then
    # Stopped by SIGINT or SIGTERM (libFuzzer exits 72): no finding, but no pass
    # either, and the targets after it are not run.
    echo "STOPPED fuzz_$t: interrupted after $(($(date +%s) - began)) s, no finding (log: $log)"
    status=1
    break
  fi
  if [ "$rc" -ne 0 ]; then
    echo "FAIL fuzz_$t: a finding, its input in $crashes (last lines of $log):"
    tail -n 30 "$log"
    status=1
    continue
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1)
  echo "PASS fuzz_$t: ${runs:-0} runs in $(($(date +%s) - began)) s, ${cov:-cov: ?} edges"
done
exit "$status"
