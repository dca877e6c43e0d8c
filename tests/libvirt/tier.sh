#!/usr/bin/env bash
# The libvirt tier: a real libvirtd (Debian's, with QEMU under TCG: no KVM
# needed) starts and stops domains whose qemu.d hook is svad's
# (packaging/libvirt/svad-hook), against the real svad with the sim backend
# on a generated host (tests/libvirt/host.yaml), on a private bus at the
# system bus's path. Everything runs in a private mount and PID namespace:
# /run (so /run/libvirt and /run/dbus), /etc/libvirt, /var/lib/libvirt,
# /var/log/libvirt and /var/cache/libvirt are the tier's own, so no libvirtd
# or bus of the machine is seen or disturbed, and whatever the tier started
# (QEMU included) dies with the namespace, even when the tier is killed.
#
#   tests/libvirt/tier.sh [--build DIR] [--results FILE]
#
# As root, with the packages of the needs block installed (run.sh beside
# this installs them, then runs the tier through ctest -L libvirt). Prints one
# "PASS: name (what)" or "FAIL: name: why" line per check, "TIME: ..." lines
# with what it measured, and "libvirt-tier: N passed, N failed". With
# --results it writes those lines to FILE as well (ctest's libvirt.* tests
# read it) and exits 0 once the checks ran, whatever they found; without, it
# exits 1 when a check failed. It exits 1 when the tier could not run.
#
# BUILD_DIR (default build/) is svad's build, LIBVIRT_TIER_TIMEOUT (default
# 300) the seconds the whole tier may take, LIBVIRT_TIER_HOOK (default
# packaging/libvirt/svad-hook) the hook under test.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/../.." && pwd)
build=${BUILD_DIR:-$top/build}
results=
timeout_s=${LIBVIRT_TIER_TIMEOUT:-300}
hook=${LIBVIRT_TIER_HOOK:-$top/packaging/libvirt/svad-hook}

die() {
  echo "libvirt-tier: $*" >&2
  exit 1
}

# shellcheck source=../../packaging/lib/needs.sh
source "$top/packaging/lib/needs.sh"
NEEDS_PREFIX=libvirt-tier
# needs:begin
needs+=(
  mktemp:coreutils date:coreutils cp:coreutils ln:coreutils mkdir:coreutils
  chmod:coreutils rm:coreutils cat:coreutils tail:coreutils head:coreutils
  sleep:coreutils seq:coreutils timeout:coreutils tee:coreutils tr:coreutils id:coreutils
  grep:grep sed:sed getent:libc-bin unshare:util-linux mount:mount
  dbus-daemon:dbus-daemon busctl:systemd
  libvirtd:libvirt-daemon virsh:libvirt-clients qemu-system-x86_64:qemu-system-x86
  # the timing wrapper around the hook, and the hook itself
  sh:dash
)
# libvirtd's QEMU driver is a module of its own package.
needs_packages+=(libvirt-daemon-driver-qemu)
# needs:end

# What libvirtd's defaults point at, made the tier's own inside the namespace.
private_dirs=(/etc/libvirt /var/lib/libvirt /var/log/libvirt /var/cache/libvirt)
bus_socket=/run/dbus/system_bus_socket
bus=unix:path=$bus_socket
uri=qemu:///system

# ============================================================================
# Inside the namespace (PID 1 of its own PID namespace): the checks.
# ============================================================================

passed=0
failed=0
pass() {
  echo "PASS: $1"
  passed=$((passed + 1))
}
fail() {
  echo "FAIL: $1: $2"
  failed=$((failed + 1))
}
timing() {
  echo "TIME: $*"
}
oneline() {
  tr '\n' ' ' | sed 's/  */ /g; s/ $//'
}
now_us() {
  local t
  t=$(date +%s%N)
  echo $((t / 1000))
}
ms_since() {
  local us=$(($(now_us) - $1))
  printf '%d.%03d' $((us / 1000)) $((us % 1000))
}

# A libvirtd or virsh call that hangs fails instead of holding up CI.
vsh() {
  timeout -k 5 60 virsh -q -c "$uri" "$@"
}
svactl() {
  timeout -k 5 30 "$build/svactl" --bus "$bus" "$@"
}
manager_prop() {
  timeout -k 5 30 busctl --address="$bus" get-property org.svad.Svad1 /org/svad/Svad1 \
    org.svad.Svad1.Manager "$1" | sed 's/^[a-z]* //'
}

# One line per context of svad whose Vm is $1: "MODE OWNERPID DEVICE...".
vm_contexts() {
  local path props vm mode owner devices
  for path in $(timeout -k 5 30 busctl --address="$bus" tree --list org.svad.Svad1 |
    grep '^/org/svad/Svad1/context/'); do
    props=$(timeout -k 5 30 busctl --address="$bus" get-property org.svad.Svad1 "$path" \
      org.svad.Svad1.Context Vm Mode OwnerPid Devices) || continue
    {
      read -r _ vm
      read -r _ mode
      read -r _ owner
      read -r _ _ devices
    } <<<"$props"
    [ "${vm//\"/}" = "$1" ] || continue
    echo "$mode $owner ${devices//\"/}"
  done
}

# Polls a command until it succeeds, for up to wait_s seconds (default 10;
# given before the call, as in "wait_s=60 wait_for CMD", so that CMD comes
# first: the needs check reads it as the command).
wait_for() {
  local limit=${wait_s:-10} start
  start=$(date +%s)
  until "$@" >/dev/null 2>&1; do
    [ $(($(date +%s) - start)) -lt "$limit" ] || return 1
    sleep 0.1
  done
}
context_count_is() {
  [ "$(manager_prop ContextCount)" = "$1" ]
}
domain_state_is() {
  [ "$(vsh domstate "$1" 2>/dev/null | head -n 1)" = "$2" ]
}
# What the hook said on stderr when libvirtd's start failed on it: libvirtd
# quotes the hook's command line, then "unexpected exit status N: " and that.
hook_error() {
  sed -n 's/.*unexpected exit status [0-9]*: //p' "$work/start-$1.err" | oneline
}
qemu_pid() {
  cat "/run/libvirt/qemu/$1.pid" 2>/dev/null || true
}

# A small TCG domain: no disk, no network; $2... are svad devices for its
# metadata (none: a domain svad has nothing to do with).
domain_xml() {
  local name=$1 dev
  shift
  echo "<domain type='qemu'>"
  echo "  <name>$name</name>"
  echo "  <memory unit='MiB'>64</memory>"
  echo "  <vcpu>1</vcpu>"
  echo "  <os><type arch='x86_64' machine='pc'>hvm</type></os>"
  if [ $# -gt 0 ]; then
    echo "  <metadata>"
    echo "    <svad:vm xmlns:svad=\"urn:svad:libvirt:1\">"
    for dev in "$@"; do
      echo "      <svad:device name=\"$dev\"/>"
    done
    echo "    </svad:vm>"
    echo "  </metadata>"
  fi
  echo "  <devices>"
  echo "    <emulator>/usr/bin/qemu-system-x86_64</emulator>"
  echo "    <controller type='usb' model='none'/>"
  echo "    <memballoon model='none'/>"
  echo "  </devices>"
  echo "</domain>"
}

# virsh start NAME, timed; its error output in $work/start-NAME.err.
start_domain() {
  local t0 rc=0
  t0=$(now_us)
  vsh start "$1" >"$work/start-$1.out" 2>"$work/start-$1.err" || rc=$?
  timing "virsh start $1: $(ms_since "$t0") ms (exit $rc)"
  return "$rc"
}

# The hook calls libvirtd made (or the tier made directly) for domain $1 since
# line $2 of the log: "OPERATION SUB-OPERATION rc=N us=N" each.
hook_calls() {
  tail -n +"$(($2 + 1))" "$work/hook-calls" | { grep "^$1 " || true; } | sed "s/^$1 //"
}
# How many hook calls the log holds (a mark for hook_calls).
hook_mark() {
  grep -c '' "$work/hook-calls" || true
}
reconnected() {
  [[ "$(hook_calls vm-svad "$mark")" == *"reconnect "* ]]
}
# Whether every hook call for domain $1 since mark $2 exited 0.
hooks_all_ok() {
  local calls
  calls=$(hook_calls "$1" "$2")
  [ -n "$calls" ] && ! grep -qv ' rc=0 ' <<<"$calls"
}

start_libvirtd() {
  local t0
  t0=$(now_us)
  libvirtd >>"$work/libvirtd.log" 2>&1 &
  libvirtd_pid=$!
  if ! wait_s=60 wait_for vsh version; then
    return 1
  fi
  timing "libvirtd start (to virsh version answering): $(ms_since "$t0") ms"
}
# SIGTERM (and SIGCONT, should it be stopped), 10 s to go, then SIGKILL.
stop_pid() {
  local i
  kill -TERM "$1" 2>/dev/null || true
  kill -CONT "$1" 2>/dev/null || true
  for i in $(seq 100); do
    kill -0 "$1" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
stop_libvirtd() {
  [ -z "$libvirtd_pid" ] || stop_pid "$libvirtd_pid"
  libvirtd_pid=
}

start_svad() {
  local t0
  t0=$(now_us)
  "$build/svad" --bus "$bus" --backend sim --sysfs-root "$work/host/sys" \
    --dev-root "$work/host/dev" --config "$work/svad.yaml" --metrics-address off \
    --log-target stderr >>"$work/svad.log" 2>&1 &
  svad_pid=$!
  wait_s=20 wait_for svactl status || return 1
  timing "svad start (to its name on the bus): $(ms_since "$t0") ms"
}
stop_svad() {
  [ -z "$svad_pid" ] || stop_pid "$svad_pid"
  svad_pid=
}

inside_cleanup() {
  local pid
  # QEMU first (a domain libvirtd still runs), then the daemons. The kernel
  # would end them all with this PID namespace anyway; this is the orderly way.
  for pid in /run/libvirt/qemu/*.pid; do
    # driver.pid is libvirtd's own.
    if [ -f "$pid" ] && [ "${pid##*/}" != driver.pid ]; then
      kill -KILL "$(cat "$pid")" 2>/dev/null || true
    fi
  done
  stop_libvirtd
  stop_svad
  [ -z "$dbus_pid" ] || stop_pid "$dbus_pid"
}

inside() {
  work=$1
  libvirtd_pid=
  svad_pid=
  dbus_pid=
  trap inside_cleanup EXIT
  trap 'exit 143' TERM INT

  # ---- the namespace's own directories --------------------------------------
  # A fresh /run: /run/libvirt (and /var/run/libvirt through its link) and
  # /run/dbus are the tier's. /etc/libvirt gets a tmpfs; the other three do
  # not exist without libvirt-daemon-system, so their parents get an overlay
  # whose upper layer is in the work folder.
  mount -t tmpfs -o mode=0755 libvirt-tier-run /run
  if [ ! -L /var/run ]; then
    mount -t tmpfs -o mode=0755 libvirt-tier-var-run /var/run
  fi
  local dir parent key
  for dir in "${private_dirs[@]}"; do
    if [ -d "$dir" ]; then
      mount -t tmpfs -o mode=0755 libvirt-tier "$dir"
    else
      parent=${dir%/*}
      key=${parent//\//-}
      mkdir -p "$work/overlay/$key/upper" "$work/overlay/$key/work"
      mount -t overlay libvirt-tier \
        -o "lowerdir=$parent,upperdir=$work/overlay/$key/upper,workdir=$work/overlay/$key/work" \
        "$parent"
      mkdir -p "$dir"
    fi
  done
  mkdir -p /run/libvirt /run/dbus /etc/libvirt/hooks/qemu.d
  # svactl where the shipped hook calls it (/usr/bin/svactl): an overlay on
  # /usr/bin that adds the build's svactl and changes nothing else.
  mkdir -p "$work/overlay/usr-bin/upper" "$work/overlay/usr-bin/work"
  ln -s "$build/svactl" "$work/overlay/usr-bin/upper/svactl"
  mount -t overlay libvirt-tier \
    -o "lowerdir=/usr/bin,upperdir=$work/overlay/usr-bin/upper,workdir=$work/overlay/usr-bin/work" \
    /usr/bin
  # libvirtd's QEMU driver looks up its compiled-in user at start, which only
  # libvirt-daemon-system creates: the namespace sees passwd and group with it.
  if ! getent passwd libvirt-qemu >/dev/null; then
    cp /etc/passwd "$work/passwd"
    cp /etc/group "$work/group"
    echo 'libvirt-qemu:x:64055:64055:Libvirt Qemu:/var/lib/libvirt:/usr/sbin/nologin' >>"$work/passwd"
    getent group libvirt-qemu >/dev/null || echo 'libvirt-qemu:x:64055:' >>"$work/group"
    mount --bind "$work/passwd" /etc/passwd
    mount --bind "$work/group" /etc/group
  fi

  # ---- libvirt's configuration ------------------------------------------------
  cat >/etc/libvirt/libvirtd.conf <<'EOT'
# The tier's libvirtd: root only, on its own socket in the namespace's /run.
unix_sock_group = "root"
unix_sock_rw_perms = "0700"
auth_unix_ro = "none"
auth_unix_rw = "none"
EOT
  # QEMU as root, without the sandboxing this machine cannot give (no
  # cgroups delegated, no systemd, no security driver), its output to files.
  cat >/etc/libvirt/qemu.conf <<'EOT'
user = "+0"
group = "+0"
security_driver = "none"
namespaces = []
cgroup_controllers = []
stdio_handler = "file"
EOT
  # The hook, wrapped to time each call as libvirtd makes it: one line per call
  # in hook-calls (NAME OPERATION SUB-OPERATION rc=N us=N). The XML on stdin and
  # the hook's stdout and stderr pass through.
  : >"$work/hook-calls"
  cat >/etc/libvirt/hooks/qemu.d/50-svad <<EOT
#!/bin/sh
start=\$(date +%s%N)
"$hook" "\$@"
rc=\$?
end=\$(date +%s%N)
echo "\$1 \$2 \$3 rc=\$rc us=\$(((end - start) / 1000))" >>"$work/hook-calls"
exit \$rc
EOT
  chmod 755 /etc/libvirt/hooks/qemu.d/50-svad

  # ---- the bus and svad ----------------------------------------------------------
  "$build/svad-hostgen" --host "$here/host.yaml" --out "$work/host" >/dev/null
  cat >"$work/svad.yaml" <<EOT
plugin_dir: $build/plugins
default_policy: allow
rules:
  # A VM the administrator refuses everything.
  - name: refuse-vm-refused
    action: deny
    match: {device: "*"}
    allow: {vms: [vm-refused]}
EOT
  dbus-daemon --session --address="$bus" --nofork --nopidfile --nosyslog >"$work/dbus.log" 2>&1 &
  dbus_pid=$!
  wait_for busctl --address="$bus" status || {
    fail setup "dbus-daemon did not start: $(oneline <"$work/dbus.log")"
    return
  }
  start_svad || {
    fail setup "svad did not start: $(tail -n 5 "$work/svad.log" | oneline)"
    return
  }

  local t0 mark calls ctx pid rc msg
  # ---- the hostdev path, without libvirtd: the XML fed to the hook -------------------
  cat >"$work/hostdev.xml" <<'EOT'
<domain type='qemu'>
  <name>vm-hostdev</name>
  <devices>
    <hostdev mode='subsystem' type='pci' managed='yes'>
      <source><address domain='0x0000' bus='0x3b' slot='0x10' function='0x0'/></source>
    </hostdev>
  </devices>
</domain>
EOT
  local direct=/etc/libvirt/hooks/qemu.d/50-svad
  # For comparison with the hook's calls: what starting svactl alone costs.
  t0=$(now_us)
  /usr/bin/svactl --version >/dev/null || true
  timing "svactl --version (a bare start of svactl, for comparison): $(ms_since "$t0") ms"
  rc=0
  "$direct" vm-hostdev prepare begin - <"$work/hostdev.xml" >"$work/hostdev-prepare.out" 2>&1 || rc=$?
  ctx=$(vm_contexts vm-hostdev)
  if [ "$rc" = 0 ] && [ "${ctx%% *}" = 3 ] && [ "${ctx#* * }" = 0000:3b:10.0 ]; then
    pass "hostdev-prepare (the hook at prepare begin reserved 0000:3b:10.0 for vm-hostdev in Mode 3)"
  else
    fail hostdev-prepare "hook exit $rc ($(oneline <"$work/hostdev-prepare.out")); svad holds for vm-hostdev: '${ctx:-nothing}' (mode, owner, devices), want mode 3 and 0000:3b:10.0"
  fi
  rc=0
  "$direct" vm-hostdev release end - <"$work/hostdev.xml" >"$work/hostdev-release.out" 2>&1 || rc=$?
  if [ -z "$ctx" ]; then
    fail hostdev-release "nothing was reserved to release"
  elif [ "$rc" = 0 ] && context_count_is 0; then
    pass "hostdev-release (the hook at release end released it: ContextCount 0)"
  else
    fail hostdev-release "hook exit $rc ($(oneline <"$work/hostdev-release.out")); ContextCount $(manager_prop ContextCount)"
  fi

  # ---- libvirtd -----------------------------------------------------------------
  start_libvirtd || {
    fail setup "libvirtd did not answer within 60 s: $(tail -n 5 "$work/libvirtd.log" | oneline)"
    return
  }
  local name
  domain_xml vm-plain >"$work/vm-plain.xml"
  domain_xml vm-svad vdpa0 wq0.0 >"$work/vm-svad.xml"
  domain_xml vm-refused vdpa0 >"$work/vm-refused.xml"
  for name in vm-plain vm-svad vm-refused; do
    vsh define "$work/$name.xml" >/dev/null || {
      fail setup "virsh define $name failed"
      return
    }
  done

  # ---- a domain that names nothing of svad's --------------------------------------------
  mark=$(hook_mark)
  if start_domain vm-plain; then
    calls=$(hook_calls vm-plain "$mark" | oneline)
    if hooks_all_ok vm-plain "$mark" && context_count_is 0; then
      pass "plain-domain (vm-plain started; each hook call exited 0 and svad holds nothing: $calls)"
    else
      fail plain-domain "hook calls: '${calls:-none}'; ContextCount $(manager_prop ContextCount)"
    fi
    vsh destroy vm-plain >/dev/null || true
  else
    fail plain-domain "virsh start vm-plain: $(oneline <"$work/start-vm-plain.err")"
  fi

  # ---- a domain with svad's devices: reserved at prepare, QEMU's at started --------------
  if start_domain vm-svad; then
    ctx=$(vm_contexts vm-svad)
    pid=$(qemu_pid vm-svad)
    if [ "$ctx" = "3 $pid vdpa0 wq0.0" ] && [ -n "$pid" ]; then
      pass "svad-domain (vm-svad started; svad holds vdpa0 and wq0.0 for it in Mode 3 with QEMU's pid $pid as owner)"
    else
      fail svad-domain "svad holds for vm-svad: '${ctx:-nothing}', want '3 $pid vdpa0 wq0.0' (pid from /run/libvirt/qemu/vm-svad.pid)"
    fi
    timing "hook calls of that start: $(hook_calls vm-svad 0 | oneline)"

    # ---- libvirtd restarts, QEMU runs on: reconnect keeps the reservation --------------
    mark=$(hook_mark)
    stop_libvirtd
    if kill -0 "$pid" 2>/dev/null && start_libvirtd; then
      wait_s=20 wait_for reconnected || true
      calls=$(hook_calls vm-svad "$mark" | oneline)
      ctx=$(vm_contexts vm-svad)
      if domain_state_is vm-svad running && [ "$ctx" = "3 $pid vdpa0 wq0.0" ] &&
        echo "$calls" | grep -q 'reconnect begin rc=0 '; then
        pass "libvirtd-restart (after a restart of libvirtd, reconnect ($calls) kept vm-svad's reservation with owner $pid)"
      else
        fail libvirtd-restart "domain $(vsh domstate vm-svad 2>&1 | head -n 1); hook calls '${calls:-none}'; svad holds '${ctx:-nothing}'"
      fi
    else
      fail libvirtd-restart "QEMU $pid gone with libvirtd, or libvirtd did not start again: $(tail -n 5 "$work/libvirtd.log" | oneline)"
    fi

    # ---- virsh destroy releases ---------------------------------------------------
    mark=$(hook_mark)
    ctx=$(vm_contexts vm-svad)
    rc=0
    vsh destroy vm-svad >"$work/destroy.out" 2>&1 || rc=$?
    if [ -z "$ctx" ]; then
      fail destroy-releases "svad held nothing for vm-svad before virsh destroy"
    elif [ "$rc" = 0 ] && wait_for context_count_is 0; then
      pass "destroy-releases (virsh destroy: $(hook_calls vm-svad "$mark" | oneline); ContextCount 0)"
    else
      fail destroy-releases "virsh destroy exit $rc ($(oneline <"$work/destroy.out")); ContextCount $(manager_prop ContextCount); svad holds '$(vm_contexts vm-svad)'"
    fi
  else
    fail svad-domain "virsh start vm-svad: $(oneline <"$work/start-vm-svad.err")"
  fi

  # ---- QEMU killed: svad follows its pidfd -------------------------------------------
  # libvirtd is stopped (SIGSTOP) meanwhile, so that its release hook cannot be
  # what releases the devices.
  if start_domain vm-svad; then
    pid=$(qemu_pid vm-svad)
    ctx=$(vm_contexts vm-svad)
    kill -STOP "$libvirtd_pid" 2>/dev/null || true
    [ -z "$pid" ] || kill -KILL "$pid" 2>/dev/null || true
    t0=$(now_us)
    if [ -z "$pid" ] || [ "$ctx" != "3 $pid vdpa0 wq0.0" ]; then
      fail qemu-killed "before the kill, svad held '${ctx:-nothing}' for vm-svad, not its devices with QEMU's pid '$pid' as owner"
    elif wait_for context_count_is 0; then
      pass "qemu-killed (kill -9 of QEMU $pid, libvirtd stopped: svad released vm-svad's devices after $(ms_since "$t0") ms)"
    else
      fail qemu-killed "svad still holds '$(vm_contexts vm-svad)' 10 s after QEMU $pid was killed"
    fi
    kill -CONT "$libvirtd_pid" 2>/dev/null || true
    wait_s=20 wait_for domain_state_is vm-svad "shut off" || vsh destroy vm-svad >/dev/null 2>&1 || true
  else
    fail qemu-killed "virsh start vm-svad: $(oneline <"$work/start-vm-svad.err")"
  fi

  # ---- the policy refuses: the start fails with svad's reason -----------------------------
  if start_domain vm-refused; then
    fail policy-refusal "vm-refused started; svad holds '$(vm_contexts vm-refused)'"
    vsh destroy vm-refused >/dev/null 2>&1 || true
  else
    msg=$(hook_error vm-refused)
    if [[ "$msg" == *refuse-vm-refused* ]] && context_count_is 0 &&
      ! domain_state_is vm-refused running; then
      pass "policy-refusal (virsh start vm-refused failed with svad's reason from the hook: $msg)"
    else
      fail policy-refusal "the hook's error in virsh's does not name rule refuse-vm-refused, or something is held: $(oneline <"$work/start-vm-refused.err"); ContextCount $(manager_prop ContextCount)"
    fi
  fi

  # ---- svad stopped --------------------------------------------------------------
  stop_svad
  mark=$(hook_mark)
  if start_domain vm-plain; then
    calls=$(hook_calls vm-plain "$mark" | oneline)
    if hooks_all_ok vm-plain "$mark"; then
      pass "plain-without-svad (with svad stopped, vm-plain started: $calls)"
    else
      fail plain-without-svad "hook calls: '${calls:-none}'"
    fi
    vsh destroy vm-plain >/dev/null || true
  else
    fail plain-without-svad "virsh start vm-plain: $(oneline <"$work/start-vm-plain.err")"
  fi
  if start_domain vm-svad; then
    fail svad-stopped "vm-svad started while svad was stopped"
    vsh destroy vm-svad >/dev/null 2>&1 || true
  else
    msg=$(hook_error vm-svad)
    if [[ "$msg" == *"svad is not running"* ]] && ! domain_state_is vm-svad running; then
      pass "svad-stopped (with svad stopped, vm-svad did not start; the hook said: $msg)"
    else
      fail svad-stopped "the hook's error in virsh's does not say that svad is not running: $(oneline <"$work/start-vm-svad.err")"
    fi
  fi

  # ---- what each hook call took --------------------------------------------------------
  while read -r name op sub rc us; do
    timing "hook $name $op $sub: $((${us#us=} / 1000)).$(printf '%03d' $((${us#us=} % 1000))) ms ($rc)"
  done <"$work/hook-calls"
}

finish_inside() {
  if [ "$failed" -gt 0 ]; then
    echo "libvirt-tier: the last lines of each log:"
    local log
    for log in svad.log libvirtd.log dbus.log hook-calls; do
      [ -s "$work/$log" ] || continue
      echo "  == $log"
      tail -n 15 "$work/$log" | sed 's/^/    /'
    done
    for log in /var/log/libvirt/qemu/*.log; do
      [ -f "$log" ] || continue
      echo "  == $log"
      tail -n 5 "$log" | sed 's/^/    /'
    done
  fi
  echo "libvirt-tier: $passed passed, $failed failed"
}

if [ "${1-}" = --inside ]; then
  inside "$2"
  finish_inside
  exit 0
fi
# Only if bash abandoned the block above (an expansion error does that).
[ "${1-}" != --inside ] || exit 1

# ============================================================================
# Outside: the namespace, the time limit, the results.
# ============================================================================

while [ $# -gt 0 ]; do
  case "$1" in
    --build)
      build=$2
      shift 2
      ;;
    --results)
      results=$2
      shift 2
      ;;
    -h | --help)
      sed -n '2,24s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
      exit 0
      ;;
    *) die "unknown argument '$1' (try --help)" ;;
  esac
done
build=$(cd "$build" && pwd) || die "no build folder $build"
[ -z "$results" ] || rm -f "$results"

needs_check
[ "$(id -u)" = 0 ] || die "runs as root (a mount and PID namespace, libvirtd as root)"
for tool in svad svactl svad-hostgen; do
  [ -x "$build/$tool" ] || die "$build/$tool is missing: build first"
done
[ -d "$build/plugins" ] || die "$build/plugins is missing: build first"
[ -x "$hook" ] || die "$hook, the hook under test, is missing or not executable"
# unshare makes the namespace's mounts private from / down, which must be a
# mount point: in a chroot, bind the root onto itself first.
grep -qE '^[^ ]+ [^ ]+ [^ ]+ [^ ]+ / ' /proc/self/mountinfo ||
  die "/ is not a mount point (a chroot?), so the namespace's mounts cannot be made private"

work=$(mktemp -d "${TMPDIR:-/tmp}/svad-libvirt-tier.XXXXXX")
for dir in /run /var/run "${private_dirs[@]}" /usr/bin; do
  case "$work/" in
    "$dir"/*) die "the work folder $work is under $dir, which the namespace replaces: set TMPDIR" ;;
  esac
done
trap 'rm -rf "$work"' EXIT

tier_start=$(date +%s)
# --kill-child: if unshare is stopped (the time limit), its child, PID 1 of
# the namespace, is killed, and with it every process in the namespace.
set +e
BUILD_DIR=$build LIBVIRT_TIER_HOOK=$hook \
  timeout -k 10 "$timeout_s" unshare --mount --propagation private --pid --fork --mount-proc \
  --kill-child "$here/tier.sh" --inside "$work" 2>&1 | tee "$work/out"
status=${PIPESTATUS[0]}
set -e
echo "libvirt-tier: the tier took $(($(date +%s) - tier_start)) s"
summary=$(grep -E '^libvirt-tier: [0-9]+ passed, [0-9]+ failed$' "$work/out" | tail -n 1 || true)
if [ -z "$summary" ]; then
  [ "$status" = 124 ] && die "the tier did not finish within $timeout_s s"
  die "the tier stopped before its summary (exit $status)"
fi
if [ -n "$results" ]; then
  grep -E '^(PASS|FAIL|TIME): ' "$work/out" >"$results" || true
  echo "$summary" >>"$results"
  exit 0
fi
echo "$summary" | grep -q ' 0 failed$'
