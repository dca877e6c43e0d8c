#!/usr/bin/env bash
# The checks of the systemd tier (tests/kernel/run-systemd.sh), run inside the
# booted Debian guest by svad-tier.service once multi-user.target is up. svad
# is the installed package: its unit, bus policy, configuration file and
# plugins, under the real systemd, dbus-daemon, udev and journald.
#
# Prints one "PASS: name", "FAIL: name: why" or "SKIP: name: why" line per
# check on the serial console, then "N passed, N failed, N skipped", then
# powers the guest off.
#
# Devices (see run-systemd.sh): 00:03.0 e1000e (bound to e1000e; auto_bind
# moves it to vfio-pci and back), 00:04.0 edu (no driver; removed and found
# again through a PCI rescan, then bound to vfio-pci for the group svad
# member's context).
#
# The needs block is the guest's, not this machine's: build-root.sh installs
# its packages in the guest's root (all but svad, which is the package under
# test, installed by run-systemd.sh).
# No -e: a check that fails says so and the next one runs; the EXIT trap
# prints the summary and powers off whatever happens.
set -uo pipefail

# needs:begin
needs+=(
  systemctl:systemd journalctl:systemd busctl:systemd
  dbus-send:dbus-bin
  ip:iproute2 vdpa:iproute2 ss:iproute2 lspci:pciutils
  setpriv:util-linux
  apt-get:apt
  svactl:svad svad:svad
  bash:bash dpkg-query:dpkg
  date:coreutils uname:coreutils head:coreutils tail:coreutils wc:coreutils id:coreutils
  cat:coreutils sleep:coreutils readlink:coreutils basename:coreutils tr:coreutils
  mkdir:coreutils rm:coreutils timeout:coreutils sync:coreutils cut:coreutils
  ls:coreutils kill:procps ps:procps
  grep:grep sed:sed awk:mawk
)
# Brought by no command of the checks: PID 1, udev, the system bus, and the
# libraries svad's package depends on (it is installed with dpkg, offline).
needs_packages+=(
  systemd-sysv udev dbus
  libsdbus-c++1 libyaml-cpp0.7 libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 libsqlite3-0
  libxml2 libacl1
)
# needs:end

export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export SYSTEMD_PAGER='' SYSTEMD_COLORS=0 DEBIAN_FRONTEND=noninteractive

NIC=0000:00:03.0
EDU=0000:00:04.0
TENANT=tenant   # a member of group svad (run-systemd.sh creates both users)
VISITOR=visitor # no member of it
DUMMY_ADDR=10.0.2.15
METRICS_PORT=9464
passed=0
failed=0
skipped=0

pass() {
  echo "PASS: $1"
  passed=$((passed + 1))
}
fail() {
  echo "FAIL: $1: $2"
  failed=$((failed + 1))
}
skip() {
  echo "SKIP: $1: $2"
  skipped=$((skipped + 1))
}
# Indented, so that no line of it looks like a result.
show() {
  sed 's/^/    /'
}
oneline() {
  tr '\n' ' ' <"$1" | sed 's/  */ /g; s/ $//'
}
finish() {
  echo "guest: done at $(cut -d' ' -f1 /proc/uptime) s of uptime"
  echo "$passed passed, $failed failed, $skipped skipped"
  sync
  systemctl --force --force poweroff
}
trap finish EXIT

# Waits up to $2 tenths of a second for the command $1 to succeed.
wait_for() {
  local i=0
  while [ "$i" -lt "$2" ]; do
    if eval "$1" >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.1
    i=$((i + 1))
  done
  return 1
}
prop() {
  systemctl show -p "$1" --value svad.service
}
# svad's journal since this script's mark, for a FAIL.
svad_journal() {
  journalctl -u svad.service --since "@$mark" --no-pager -o short-monotonic 2>&1 | tail -n "${1:-15}" | show
}
# The driver svad publishes for a PCI function ("-" for none), and the
# column of `svactl vdpa` for a vDPA device.
svad_driver() {
  svactl devices 2>/dev/null | awk -v a="$1" '$1 == a { print $4 }'
}
sysfs_driver() {
  local d=/sys/bus/pci/devices/$1/driver
  if [ -e "$d" ]; then basename "$(readlink "$d")"; else echo -; fi
}
as_user() {
  local user=$1
  shift
  setpriv --reuid="$user" --regid="$user" --init-groups -- "$@"
}
write_config() {
  # $1: the metrics address
  cat >/etc/svad/svad.yaml <<EOF
# The systemd tier's configuration (tests/kernel/guest-systemd.sh).
admin_group: svad
default_policy: deny
metrics:
  address: "$1"
rules:
  - name: tier-tenant-edu
    match: {device: "$EDU"}
    allow: {groups: [svad], uids: [0]}
  - name: tier-auto-bind-nic
    match: {device: "$NIC"}
    allow: {uids: [0]}
    limits: {auto_bind: true}
  - name: tier-vdpa
    match: {kind: vdpa}
    allow: {uids: [0]}
EOF
}

mark=$(date +%s)
echo "guest: Linux $(uname -r), systemd $(systemctl --version | awk 'NR == 1 { print $2 }'), checks at $(cut -d' ' -f1 /proc/uptime) s of uptime"
echo "guest: svad $(dpkg-query -W -f='${Version}' svad 2>/dev/null)"

# ---- the package's own start at boot ------------------------------------------------
# The package enables svad (not started on install): it came up at boot with
# the packaged /etc/svad/svad.yaml.
if [ "$(prop ActiveState)" = active ]; then
  pass "boot-start (the installed, enabled svad.service is active with the packaged configuration)"
else
  fail boot-start "svad.service is $(prop ActiveState) ($(prop Result)) after boot"
  svad_journal 30
fi
systemctl stop svad.service

# ---- 1. start through Type=notify, and reload ---------------------------------------
write_config 127.0.0.1:$METRICS_PORT
if ! svad --check-config /etc/svad/svad.yaml >/tmp/check 2>&1; then
  fail config "svad --check-config: $(oneline /tmp/check)"
fi
if timeout 120 systemctl start svad.service >/tmp/start 2>&1 &&
  [ "$(prop ActiveState)" = active ] && [ "$(prop Type)" = notify ] &&
  [ -n "$(prop StatusText)" ]; then
  pass "start-notify (active through READY=1, MainPID $(prop MainPID), status \"$(prop StatusText)\")"
else
  fail start-notify "systemctl start: $(oneline /tmp/start); ActiveState $(prop ActiveState), StatusText '$(prop StatusText)'"
  svad_journal 30
  exit 0
fi
pid=$(prop MainPID)
# One rule more, so the reload's record differs from the start's.
cat >>/etc/svad/svad.yaml <<EOF
  - name: tier-reloaded
    action: deny
    match: {device: "0000:ff:1f.7"}
EOF
if systemctl reload svad.service >/tmp/reload 2>&1 &&
  wait_for 'journalctl -t svad --since "@$mark" RULES=4 --no-pager -o cat | grep -q "configuration reloaded"' 100 &&
  [ "$(prop MainPID)" = "$pid" ] && [ "$(prop ActiveState)" = active ]; then
  pass "reload (SIGHUP through ExecReload: \"configuration reloaded\" with RULES=4, same MainPID $pid)"
else
  fail reload "systemctl reload: $(oneline /tmp/reload); MainPID $(prop MainPID) (was $pid), $(prop ActiveState)"
  svad_journal
fi

# ---- 4. udev events, each followed on the bus --------------------------------------
# vDPA devices come and go.
vdpa_ok=1
vdpa_why=
vdpa_seen=
for mgmt in vdpasim_net vdpasim_blk; do
  if ! vdpa mgmtdev show 2>/dev/null | grep -q "$mgmt"; then
    vdpa_ok=0
    vdpa_why="$vdpa_why no management device $mgmt;"
    continue
  fi
  name=tier-$mgmt
  if ! vdpa dev add mgmtdev "$mgmt" name "$name" >/tmp/vdpa 2>&1; then
    vdpa_ok=0
    vdpa_why="$vdpa_why vdpa dev add $name: $(oneline /tmp/vdpa);"
    continue
  fi
  if ! wait_for 'svactl vdpa | awk -v n="$name" "\$1 == n { f = 1 } END { exit(f ? 0 : 1) }"' 100; then
    vdpa_ok=0
    vdpa_why="$vdpa_why $name did not appear on the bus;"
  fi
  vdpa dev del "$name" >/tmp/vdpa 2>&1 || vdpa_why="$vdpa_why vdpa dev del $name: $(oneline /tmp/vdpa);"
  if ! wait_for '! svactl vdpa | awk -v n="$name" "\$1 == n { f = 1 } END { exit(f ? 0 : 1) }"' 100; then
    vdpa_ok=0
    vdpa_why="$vdpa_why $name did not leave the bus;"
  fi
  vdpa_seen="$vdpa_seen $name"
done
if [ "$vdpa_ok" = 1 ]; then
  pass "udev-vdpa (vdpa dev add/del of${vdpa_seen}: each appeared on the bus and left it)"
else
  fail udev-vdpa "$vdpa_why"
  svactl vdpa 2>&1 | show
fi

# Unbind and bind through sysfs: the Driver property follows.
nic_driver=$(sysfs_driver "$NIC")
if [ "$nic_driver" = - ]; then
  fail udev-unbind-bind "$NIC has no driver to unbind"
elif echo "$NIC" >"/sys/bus/pci/drivers/$nic_driver/unbind" &&
  wait_for '[ "$(svad_driver "$NIC")" = - ]' 100 &&
  echo "$NIC" >"/sys/bus/pci/drivers/$nic_driver/bind" &&
  wait_for '[ "$(svad_driver "$NIC")" = "$nic_driver" ]' 100; then
  pass "udev-unbind-bind ($NIC: Driver $nic_driver, then none, then $nic_driver again)"
else
  fail udev-unbind-bind "$NIC: svad shows driver '$(svad_driver "$NIC")', sysfs '$(sysfs_driver "$NIC")'"
fi

# Remove a function, then find it again with a PCI rescan.
if [ ! -e "/sys/bus/pci/devices/$EDU" ]; then
  fail udev-remove-rescan "no $EDU in sysfs"
elif echo 1 >"/sys/bus/pci/devices/$EDU/remove" &&
  wait_for '! svactl devices | grep -q "^$EDU "' 100 &&
  busctl --system tree org.svad.Svad1 >/tmp/tree 2>&1 &&
  echo 1 >/sys/bus/pci/rescan &&
  wait_for 'svactl devices | grep -q "^$EDU "' 100; then
  pass "udev-remove-rescan ($EDU left the bus on remove and came back on rescan)"
else
  fail udev-remove-rescan "$EDU: in sysfs: $([ -e /sys/bus/pci/devices/$EDU ] && echo yes || echo no); svactl devices: $(svactl devices 2>&1 | grep -c "^$EDU ") line(s)"
fi

# ---- 2. the bus policy: group svad allocates, anyone else is refused ------------------
d=/sys/bus/pci/devices/$EDU
if echo vfio-pci >"$d/driver_override" && echo "$EDU" >/sys/bus/pci/drivers_probe &&
  wait_for '[ "$(svad_driver "$EDU")" = vfio-pci ] && svactl show "$EDU" | grep -q "vfio[0-9]"' 100; then
  :
else
  fail bind-edu "$EDU did not reach vfio-pci on the bus (sysfs: $(sysfs_driver "$EDU"))"
fi
if as_user "$TENANT" svactl alloc --vm vm-tenant "$EDU" >/tmp/tenant 2>&1; then
  pass "policy-group-svad ($TENANT, in group svad, allocated a context: $(grep -m1 '^context' /tmp/tenant))"
else
  fail policy-group-svad "$TENANT ($(id -Gn "$TENANT" 2>/dev/null)): $(oneline /tmp/tenant)"
  svad_journal
fi
# svactl as an ordinary user, and the raw call: the bus daemon refuses both
# before svad sees them (the member, with the same raw call, reaches svad).
as_user "$VISITOR" svactl alloc --vm vm-visitor "$EDU" >/tmp/visitor 2>&1
as_user "$VISITOR" dbus-send --system --print-reply --dest=org.svad.Svad1 /org/svad/Svad1 \
  org.svad.Svad1.Manager.AllocateContext string:vm-visitor >/tmp/visitor.raw 2>&1
as_user "$TENANT" dbus-send --system --print-reply --dest=org.svad.Svad1 /org/svad/Svad1 \
  org.svad.Svad1.Manager.AllocateContext string:vm-tenant >/tmp/tenant.raw 2>&1
if grep -q 'org.freedesktop.DBus.Error.AccessDenied' /tmp/visitor &&
  grep -q 'org.freedesktop.DBus.Error.AccessDenied' /tmp/visitor.raw &&
  ! grep -q 'AccessDenied' /tmp/tenant.raw; then
  pass "policy-others-denied ($VISITOR: org.freedesktop.DBus.Error.AccessDenied from the bus; $TENANT's same call reaches svad: $(oneline /tmp/tenant.raw | cut -c1-80))"
else
  fail policy-others-denied "visitor svactl: $(oneline /tmp/visitor); visitor raw: $(oneline /tmp/visitor.raw); tenant raw: $(oneline /tmp/tenant.raw)"
fi
if as_user "$VISITOR" svactl devices >/tmp/visitor.read 2>&1; then
  pass "policy-anyone-reads ($VISITOR lists $(($(wc -l </tmp/visitor.read) - 1)) functions)"
else
  fail policy-anyone-reads "$(oneline /tmp/visitor.read)"
fi

# ---- 3. structured audit records through journald -----------------------------------
if wait_for 'journalctl -t svad VM=vm-tenant --since "@$mark" --no-pager -o cat | grep -q "context allocated"' 50 &&
  journalctl -t svad VM=vm-tenant --since "@$mark" --no-pager -o verbose >/tmp/journal 2>&1 &&
  grep -q '^ *CONTEXT=' /tmp/journal && grep -q "^ *DEVICE.*=.*$EDU" /tmp/journal; then
  pass "journal-fields (journalctl -t svad VM=vm-tenant: $(journalctl -t svad VM=vm-tenant --since "@$mark" --no-pager -o cat | tr '\n' ';' | sed 's/;$//'))"
else
  fail journal-fields "journalctl -t svad VM=vm-tenant found no allocation record with CONTEXT= and the device"
  journalctl -t svad --since "@$mark" --no-pager -o verbose 2>&1 | tail -n 40 | show
fi

# ---- 5. auto_bind under the unit's sandbox, undone on release -----------------------
nic_driver=$(sysfs_driver "$NIC")
if svactl exec --vm vm-auto --device "$NIC" -- sh -c \
  "basename \$(readlink /sys/bus/pci/devices/$NIC/driver)" >/tmp/auto 2>&1 &&
  [ "$(tail -n 1 /tmp/auto)" = vfio-pci ] &&
  wait_for '[ "$(sysfs_driver "$NIC")" = "$nic_driver" ] && [ "$(svad_driver "$NIC")" = "$nic_driver" ]' 150; then
  pass "auto-bind ($NIC: $nic_driver -> vfio-pci for the context, back to $nic_driver on release, under ProtectSystem=$(prop ProtectSystem))"
else
  fail auto-bind "$(oneline /tmp/auto); driver now: sysfs $(sysfs_driver "$NIC"), svad $(svad_driver "$NIC"), was $nic_driver"
  svad_journal
fi

# ---- 7. metrics on loopback only ------------------------------------------------------
ip link add tier0 type dummy && ip addr add "$DUMMY_ADDR/24" dev tier0 && ip link set tier0 up
http_get() {
  timeout 10 bash -c "exec 3<>/dev/tcp/$1/$METRICS_PORT && printf 'GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n' >&3 && cat <&3"
}
# Only connects; 0 when it did.
tcp_connect() {
  timeout "${2:-5}" bash -c "exec 3<>/dev/tcp/$1/$METRICS_PORT"
}
if http_get 127.0.0.1 >/tmp/metrics 2>&1 && grep -q '^HTTP/1.[01] 200' /tmp/metrics &&
  grep -q '^svad_' /tmp/metrics; then
  pass "metrics-loopback (127.0.0.1:$METRICS_PORT: $(grep -c '^svad_' /tmp/metrics) svad_ samples)"
else
  fail metrics-loopback "$(head -c 300 /tmp/metrics | tr '\n' ' ')"
fi
ss -ltnH >/tmp/listen 2>&1
if ! tcp_connect "$DUMMY_ADDR" 2>/dev/null && grep -q "127.0.0.1:$METRICS_PORT" /tmp/listen &&
  ! grep -q "[^0-9]0.0.0.0:$METRICS_PORT\|\*:$METRICS_PORT\|$DUMMY_ADDR:$METRICS_PORT" /tmp/listen; then
  pass "metrics-not-elsewhere ($DUMMY_ADDR:$METRICS_PORT refused; svad listens on 127.0.0.1 only)"
else
  fail metrics-not-elsewhere "listening: $(oneline /tmp/listen)"
fi
# Even bound to every address, the unit's IPAddressDeny=any lets only
# loopback addresses reach it.
write_config 0.0.0.0:$METRICS_PORT
if systemctl restart svad.service >/tmp/restart 2>&1 && [ "$(prop IPAddressDeny)" != "" ] &&
  wait_for 'tcp_connect 127.0.0.1' 50 && ! tcp_connect "$DUMMY_ADDR" 5 2>/dev/null; then
  pass "metrics-ipaddressdeny (on 0.0.0.0:$METRICS_PORT: 127.0.0.1 connects, $DUMMY_ADDR does not; IPAddressDeny=$(prop IPAddressDeny))"
else
  fail metrics-ipaddressdeny "$(oneline /tmp/restart); IPAddressDeny='$(prop IPAddressDeny)'; $DUMMY_ADDR connects: $(tcp_connect "$DUMMY_ADDR" 5 2>&1 && echo yes || echo no)"
  svad_journal
fi
write_config 127.0.0.1:$METRICS_PORT
systemctl restart svad.service

# ---- 6. the watchdog restarts a stopped svad ----------------------------------------
mkdir -p /etc/systemd/system/svad.service.d
cat >/etc/systemd/system/svad.service.d/tier-watchdog.conf <<'EOF'
[Service]
WatchdogSec=5s
TimeoutAbortSec=5s
EOF
systemctl daemon-reload
systemctl restart svad.service
pid=$(prop MainPID)
restarts=$(prop NRestarts)
if [ "$(prop ActiveState)" = active ] && [ "$pid" -gt 0 ] && kill -STOP "$pid" &&
  wait_for '[ "$(prop MainPID)" != "$pid" ] && [ "$(prop MainPID)" != 0 ] && [ "$(prop ActiveState)" = active ]' 600 &&
  [ "$(prop NRestarts)" -gt "$restarts" ]; then
  pass "watchdog (SIGSTOPped MainPID $pid was restarted as $(prop MainPID) after WatchdogSec=$(prop WatchdogUSec); NRestarts $restarts -> $(prop NRestarts))"
else
  fail watchdog "MainPID $(prop MainPID) (was $pid), NRestarts $(prop NRestarts) (was $restarts), $(prop ActiveState)/$(prop SubState)"
  svad_journal
fi
rm -f /etc/systemd/system/svad.service.d/tier-watchdog.conf
systemctl daemon-reload

# ---- 8. a held context survives restarts: systemd's fd store -----------------------
# The tenant's VMM (a sleep run by svactl exec) holds a context on the edu
# device. Its fds go to systemd's fd store; after `systemctl restart` and after
# a crash (SIGKILL, Restart=on-failure) svad takes the context back with them.
fds_held() {
  busctl --system get-property org.svad.Svad1 "$held_ctx" org.svad.Svad1.Context FdsHeld 2>&1
}
held_ctx=
held_pid=
rm -f /tmp/held-ctx
# Not through as_user: a function in the background is a subshell, and $! must
# be the VMM itself (setpriv execs svactl, which execs sh, which execs sleep).
setpriv --reuid="$TENANT" --regid="$TENANT" --init-groups -- svactl exec --vm vm-held \
  --device "$EDU" -- sh -c 'echo "$SVAD_CONTEXT" >/tmp/held-ctx; exec sleep 600' >/tmp/held 2>&1 &
held_pid=$!
if wait_for '[ -s /tmp/held-ctx ]' 100; then
  held_ctx=$(cat /tmp/held-ctx)
fi
if [ -z "$held_ctx" ]; then
  fail fdstore-restart "the tenant's context on $EDU: $(oneline /tmp/held)"
  fail fdstore-crash "no held context"
else
  pid=$(prop MainPID)
  if [ "$(fds_held)" = "b true" ] && systemctl restart svad.service &&
    wait_for '[ "$(prop ActiveState)" = active ]' 100 && [ "$(prop MainPID)" != "$pid" ] &&
    [ "$(fds_held)" = "b true" ]; then
    pass "fdstore-restart ($held_ctx came back with its fds after systemctl restart: MainPID $pid -> $(prop MainPID), $(prop NFileDescriptorStore) fds in the store)"
  else
    fail fdstore-restart "$held_ctx: FdsHeld '$(fds_held)', $(prop ActiveState), MainPID $(prop MainPID) (was $pid), store $(prop NFileDescriptorStore)"
    svad_journal
  fi
  pid=$(prop MainPID)
  restarts=$(prop NRestarts)
  kill -KILL "$pid"
  if wait_for '[ "$(prop NRestarts)" -gt "$restarts" ] && [ "$(prop ActiveState)" = active ]' 200 &&
    [ "$(fds_held)" = "b true" ]; then
    pass "fdstore-crash ($held_ctx came back with its fds after SIGKILL: MainPID $pid -> $(prop MainPID))"
  else
    fail fdstore-crash "$held_ctx: FdsHeld '$(fds_held)', $(prop ActiveState), MainPID $(prop MainPID) (was $pid), NRestarts $(prop NRestarts)"
    svad_journal
  fi
fi

# ---- 9. apt-get install --reinstall ----------------------------------------------------
pid=$(prop MainPID)
deb=$(ls /var/cache/svad-tier/svad_*.deb 2>/dev/null | head -n 1)
if [ -z "$deb" ]; then
  fail reinstall "no svad .deb in /var/cache/svad-tier"
elif apt-get install -y -q --reinstall -o Dpkg::Options::=--force-confold "$deb" >/tmp/reinstall 2>&1 &&
  wait_for '[ "$(prop ActiveState)" = active ]' 300 && [ "$(prop MainPID)" != "$pid" ]; then
  pass "reinstall (apt-get install --reinstall restarted svad: MainPID $pid -> $(prop MainPID), active)"
else
  fail reinstall "$(tr '\r' '\n' </tmp/reinstall | grep -v 'Reading database' | tail -n 5 | tr '\n' ' '); $(prop ActiveState), MainPID $(prop MainPID) (was $pid)"
  svad_journal
fi
if [ -z "$held_ctx" ]; then
  fail reinstall-keeps-context "no held context"
elif [ "$(fds_held)" = "b true" ]; then
  pass "reinstall-keeps-context ($held_ctx is back with its fds after the reinstall)"
else
  fail reinstall-keeps-context "$held_ctx: FdsHeld '$(fds_held)'"
  svad_journal
fi
# The VMM exits: its context goes, and its fds leave the store.
if [ -n "$held_pid" ]; then
  kill -KILL "$held_pid" 2>/dev/null # svactl exec'd sh, which exec'd sleep: one process
  wait "$held_pid" 2>/dev/null
fi
if [ -n "$held_ctx" ]; then
  if wait_for '! busctl --system get-property org.svad.Svad1 "$held_ctx" org.svad.Svad1.Context Vm' 100 &&
    wait_for '[ "$(prop NFileDescriptorStore)" = 0 ]' 100; then
    pass "fdstore-release ($held_ctx released when its VMM exited; the fd store is empty)"
  else
    fail fdstore-release "$held_ctx: Vm '$(busctl --system get-property org.svad.Svad1 "$held_ctx" org.svad.Svad1.Context Vm 2>&1)', $(prop NFileDescriptorStore) fds left in the store; VMM $held_pid: $(ps -o comm= -p "$held_pid" 2>&1)"
    svad_journal
  fi
fi

if [ "$(prop ActiveState)" != active ]; then
  fail svad-alive "svad.service is $(prop ActiveState) at the end"
fi
exit 0
