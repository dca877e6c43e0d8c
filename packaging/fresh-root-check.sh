#!/usr/bin/env bash
# Proves that a clean clone needs nothing installed by hand: builds a minimal
# Debian bookworm root with mmdebstrap (minbase plus what the README assumes
# a user has: bash, ca-certificates, sudo, git), clones the committed HEAD of
# this repository into it, and runs there, as root in a chroot with /proc,
# /sys and /dev bound in and every cache empty:
#   ./packaging/quickstart.sh demo
#   ./packaging/quickstart.sh test
#   bash .ci/run          (with CI=true: the tests again, the libvirt tier,
#                          fuzzing, the kernel tier, the package, the systemd tier)
# printing the time each took. It takes long (a cold build and a kernel
# build): it is not part of CI. Needs root.
#
#   packaging/fresh-root-check.sh [--keep] [--dir DIR] [--skip-ci]
#
# --dir DIR   where the root and the logs go (default: a new folder in TMPDIR
#             or /var/tmp); --keep leaves the root there afterwards;
# --skip-ci   runs the two README commands only.
# The root's apt sources are this machine's (/etc/apt/sources.list.d/debian.sources,
# else /etc/apt/sources.list), so it reaches the same archive.
set -euo pipefail

top=$(cd "${BASH_SOURCE[0]%/*}/.." && pwd)

die() {
  echo "fresh-root: $*" >&2
  exit 1
}

# shellcheck source=lib/needs.sh
source "$top/packaging/lib/needs.sh"
NEEDS_PREFIX=fresh-root
# needs:begin
needs+=(
  mmdebstrap:mmdebstrap git:git mount:mount umount:mount mountpoint:util-linux
  chroot:coreutils mkdir:coreutils mktemp:coreutils cp:coreutils rm:coreutils
  date:coreutils tee:coreutils tail:coreutils du:coreutils cut:coreutils
)
# needs:end

keep=0
dir=
run_ci=1
while [ $# -gt 0 ]; do
  case "$1" in
    --keep) keep=1; shift ;;
    --dir) dir=$2; shift 2 ;;
    --skip-ci) run_ci=0; shift ;;
    -h | --help) sed -n '2,20s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) die "unknown argument '$1' (try --help)" ;;
  esac
done
[ "$(id -u)" -eq 0 ] || die "run this as root (mmdebstrap, chroot and mounts need it)"

needs_install
needs_check

if [ -z "$dir" ]; then
  dir=$(mktemp -d "${TMPDIR:-/var/tmp}/svad-fresh-root.XXXXXX")
fi
mkdir -p "$dir"
root=$dir/root
logs=$dir/logs
mkdir -p "$logs"

sources=/etc/apt/sources.list.d/debian.sources
[ -f "$sources" ] || sources=/etc/apt/sources.list
[ -f "$sources" ] || die "no apt sources found on this machine"

mounted=()
cleanup() {
  local m i
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
    m=${mounted[i]}
    umount -R "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
  if [ "$keep" -eq 0 ]; then
    rm -rf "$root"
  else
    echo "fresh-root: the root stays in $root"
  fi
}
trap cleanup EXIT

total_start=$(date +%s)
echo "fresh-root: building a minbase bookworm root in $root"
start=$(date +%s)
mmdebstrap --quiet --variant=minbase --include=bash,ca-certificates,sudo,git \
  bookworm "$root" "$sources" >"$logs/mmdebstrap.log" 2>&1 || {
  tail -n 30 "$logs/mmdebstrap.log" >&2
  die "mmdebstrap failed (log: $logs/mmdebstrap.log)"
}
mmdebstrap_s=$(($(date +%s) - start))
echo "fresh-root: root built in $mmdebstrap_s s ($(du -sm "$root" | cut -f1) MiB)"

cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
# The root bound onto itself, private: the libvirt tier's namespace needs / to
# be a mount point whose propagation it can change.
mount --bind "$root" "$root"
mount --make-private "$root"
mounted+=("$root")
for m in proc sys dev; do
  mkdir -p "$root/$m"
  mount --rbind "/$m" "$root/$m"
  mount --make-rslave "$root/$m"
  mounted+=("$root/$m")
done
mountpoint -q "$root/dev" || die "binding /dev into the root failed"

git clone --quiet --no-local "$top" "$root/root/svad"
echo "fresh-root: cloned $(git -C "$top" rev-parse --short HEAD) into /root/svad"

# A step in the root, with a clean environment; its output goes to a log and
# its time to the summary.
results=()
in_root() {
  local name=$1
  shift
  local log=$logs/$name.log s status
  echo "fresh-root: $name ..."
  s=$(date +%s)
  set +e
  chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb CI=true \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    bash -c "cd /root/svad && $*" </dev/null >"$log" 2>&1
  status=$?
  set -e
  s=$(($(date +%s) - s))
  results+=("$name: $s s, exit $status")
  echo "fresh-root: $name: $s s, exit $status (log: $log)"
  if [ "$status" -ne 0 ]; then
    tail -n 40 "$log" >&2
    return 1
  fi
  tail -n 3 "$log"
}

ok=1
in_root quickstart-demo ./packaging/quickstart.sh demo || ok=0
[ "$ok" = 1 ] && { in_root quickstart-test ./packaging/quickstart.sh test || ok=0; }
[ "$ok" = 1 ] && [ "$run_ci" = 1 ] && { in_root ci-run bash .ci/run || ok=0; }

echo
echo "fresh-root: summary (logs in $logs)"
echo "  mmdebstrap: $mmdebstrap_s s"
for r in "${results[@]}"; do
  echo "  $r"
done
echo "  total: $(($(date +%s) - total_start)) s"
[ "$ok" = 1 ] || die "a step failed"
echo "fresh-root: every step passed"
