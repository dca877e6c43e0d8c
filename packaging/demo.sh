#!/usr/bin/env bash
# The svad demo: a private dbus-daemon, svad on the bundled sample host with
# the sim backend, and a walk through what it sees with svactl and busctl.
#
#   packaging/demo.sh [--build DIR] [--host FILE.yaml] [--keep]
#
# --keep leaves everything running for exploration and prints how to connect.
set -euo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=$top/build
host_yaml=$top/config/hosts/sample-spr.yaml
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --host) host_yaml=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,7s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "demo: unknown argument '$1'" >&2; exit 2 ;;
  esac
done

# shellcheck source=lib/needs.sh
source "$top/packaging/lib/needs.sh"
NEEDS_PREFIX=demo
# needs:begin
needs+=(
  mktemp:coreutils seq:coreutils sleep:coreutils cat:coreutils rm:coreutils
  readlink:coreutils sed:sed awk:mawk grep:grep sh:dash
  dbus-daemon:dbus-daemon busctl:systemd
)
# needs:end
needs_check

for tool in svad svactl svad-hostgen; do
  [ -x "$build/$tool" ] || { echo "demo: $build/$tool is missing: build first" >&2; exit 1; }
done

work=$(mktemp -d -t svad-demo.XXXXXX)
bus="unix:path=$work/bus"
dbus_pid=
svad_pid=

cleanup() {
  trap - EXIT INT TERM
  if [ -n "$svad_pid" ] && kill -0 "$svad_pid" 2>/dev/null; then
    kill -TERM "$svad_pid" 2>/dev/null || true
    wait "$svad_pid" 2>/dev/null || true
  fi
  if [ -n "$dbus_pid" ] && kill -0 "$dbus_pid" 2>/dev/null; then
    kill -TERM "$dbus_pid" 2>/dev/null || true
    wait "$dbus_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

echo "== generating the sample host (${host_yaml#"$top"/}) into $work/host"
"$build/svad-hostgen" --host "$host_yaml" --out "$work/host"

echo "== starting a private dbus-daemon on $bus"
dbus-daemon --session --address="$bus" --nofork --nopidfile --nosyslog 2>/dev/null &
dbus_pid=$!
for _ in $(seq 50); do [ -S "$work/bus" ] && break; sleep 0.1; done

echo "== the administrator's configuration: demo-vm may have PCI functions and work queues"
cat >"$work/svad.yaml" <<EOT
plugin_dir: $build/plugins
metrics: {address: "127.0.0.1:0"}   # any free port: the demo stays out of a real svad's way
default_policy: deny
rules:
  - name: demo-vm-functions
    match: {kind: pci}
    allow: {vms: [demo-vm]}
  - name: demo-vm-queues
    match: {kind: queue}
    allow: {vms: [demo-vm]}
    limits: {pasid_quota: 16}
EOT
sed 's/^/    /' "$work/svad.yaml"
"$build/svad" --check-config "$work/svad.yaml"

echo "== starting svad (sim backend)"
"$build/svad" --bus "$bus" --backend sim --sysfs-root "$work/host/sys" \
  --dev-root "$work/host/dev" --config "$work/svad.yaml" 2>"$work/svad.log" &
svad_pid=$!
for _ in $(seq 100); do
  "$build/svactl" --bus "$bus" status >/dev/null 2>&1 && break
  kill -0 "$svad_pid" 2>/dev/null || { cat "$work/svad.log" >&2; exit 1; }
  sleep 0.1
done

svactl() { "$build/svactl" --bus "$bus" "$@"; }
step svactl status
step svactl units
step svactl groups
step svactl devices
step svactl devices --pasid
step svactl queues
step svactl vdpa
# The first accelerator with Scalable IOV: the heart of an SVA host.
dsa=$(svactl devices --pasid | awk 'NR > 1 && $10 == "yes" { print $1; exit }')
step svactl show "$dsa"
echo
echo "== the API is plain D-Bus:"
step busctl --address="$bus" get-property org.svad.Svad1 /org/svad/Svad1 \
  org.svad.Svad1.Manager PasidDeviceCount
step svactl rescan
step svactl plugins

# A VM's share of the host, the way a VMM gets it: svactl exec allocates a
# context, then becomes the VMM (here a small sh script standing in for QEMU)
# with the fds inherited and {iommufd}, {fd:DEVICE} and {context} replaced.
vf=
while read -r addr group; do
  if svactl groups | awk -v g="$group" '$1 == g && $3 == "yes" { ok = 1 } END { exit !ok }'; then
    vf=$addr
    break
  fi
done < <(svactl devices | awk 'NR > 1 && $4 == "vfio-pci" && $11 != "-" { print $1, $5 }')
wq=$(svactl queues | awk 'NR > 1 && $5 == "user" && $6 == "enabled" { print $1; exit }')
if [ -n "$vf" ] && [ -n "$wq" ]; then
  echo
  echo "== a VM's allocation: svactl exec hands the fds to the VMM it becomes"
  export PATH="$build:$PATH" DEMO_BUS="$bus"
  vmm='echo "[vmm, pid $$] fds from svad:"
for fd in {iommufd} {fd:DEVICE}; do echo "  $fd -> $(readlink /proc/self/fd/$fd)"; done
echo "  QUEUE: its node {path:QUEUE}, which the VMM opens itself (its uid has an ACL entry)"
echo "[vmm] svactl contexts"
svactl --bus "$DEMO_BUS" contexts
echo "[vmm] svactl pasid alloc {context} QUEUE"
svactl --bus "$DEMO_BUS" pasid alloc {context} QUEUE
svactl --bus "$DEMO_BUS" contexts'
  vmm=${vmm//DEVICE/$vf}
  vmm=${vmm//QUEUE/$wq}
  printf '\n\033[1m$ svactl exec --vm demo-vm --device %s --device %s -- sh -c '"'"'...'"'"'\033[0m\n' \
    "$vf" "$wq"
  printf '%s\n' "$vmm" | sed 's/^/    /'
  svactl exec --vm demo-vm --device "$vf" --device "$wq" -- sh -c "$vmm"
  echo
  echo "== the VMM exited: svad released its context (the lease follows the process)"
  for _ in $(seq 50); do [ "$(svactl --json contexts)" = "[]" ] && break; sleep 0.1; done
  step svactl contexts
  echo "svad's log:"
  grep -F 'VM=demo-vm' "$work/svad.log" | sed 's/^/  /'
  echo
  echo "== a VM no rule names is refused, and the refusal is an audit record"
  printf '\n\033[1m$ svactl alloc --vm other-vm %s\033[0m\n' "$wq"
  svactl alloc --vm other-vm "$wq" || true
  grep -F 'VM=other-vm' "$work/svad.log" | sed 's/^/  /'
fi

if [ "$keep" -eq 1 ]; then
  cat <<EOT

svad is running on a private bus. In another terminal:
  $build/svactl --bus $bus devices
  busctl --address=$bus tree org.svad.Svad1
  busctl --address=$bus introspect org.svad.Svad1 /org/svad/Svad1
The sample host's sysfs is $work/host/sys: change it, then 'svactl rescan'
or 'kill -HUP $svad_pid'. Press Ctrl-C to stop.
EOT
  wait "$svad_pid" || true
fi
echo
echo "== stopping svad (SIGTERM) and the bus"
