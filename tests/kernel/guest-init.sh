#!/bin/sh
# /init of the real-kernel tier's guest (busybox sh). It starts a D-Bus daemon
# and svad's linux backend on the guest's real /sys and /dev, runs the checks,
# prints one "PASS name" or "FAIL name: why" line per check and a closing
# "N passed, N failed" line on the serial console, then powers off.
#
# Devices (see run.sh): 00:03.0 e1000e (bound to e1000e), 00:04.0 edu (no
# driver; bound to vfio-pci before svad starts), and q35's own. 00:03.0 goes
# to vfio-pci later, while svad runs, to check a rescan; 00:1f.2 and 00:1f.3
# (one IOMMU group, no driver in this kernel) for the group check.
export PATH=/usr/local/bin:/usr/bin:/usr/sbin:/bin:/sbin
export LD_LIBRARY_PATH=/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /run /tmp
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
echo 1 >/proc/sys/kernel/printk

BUS=unix:path=/run/svad-bus
EDU=0000:00:04.0
NIC=0000:00:03.0
passed=0
failed=0

pass() {
    echo "PASS $1"
    passed=$((passed + 1))
}
fail() {
    echo "FAIL $1: $2"
    failed=$((failed + 1))
}
# Shows a file's lines indented, so that none looks like a result line.
show() {
    sed 's/^/    /' "$1"
}
finish() {
    [ -n "${svad_pid:-}" ] && kill "$svad_pid" 2>/dev/null
    echo "guest: done at $(cut -d' ' -f1 /proc/uptime) s of uptime"
    echo "$passed passed, $failed failed"
    sync
    poweroff -f
    sleep 5
    reboot -f
}
sc() {
    svactl --bus "$BUS" "$@"
}
# The one-line text of a file (for a FAIL reason).
oneline() {
    tr '\n' ' ' <"$1" | sed 's/  */ /g; s/ $//'
}
# Waits up to $2 tenths of a second for the command $1 to succeed.
wait_for() {
    i=0
    while [ "$i" -lt "$2" ]; do
        if eval "$1" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
        i=$((i + 1))
    done
    return 1
}
fd_count() {
    ls "/proc/$svad_pid/fd" | wc -l
}
# What svad's fds are, for a FAIL: one "fd -> target" line each.
fd_list() {
    for f in /proc/"$svad_pid"/fd/*; do
        echo "    $(basename "$f") -> $(readlink "$f")"
    done
}
# Lower-case hex without 0x and leading zeros.
hexnorm() {
    echo "$1" | sed 's/^0x//; s/^0*//' | tr 'A-F' 'a-f'
}
bind_vfio() {
    d=/sys/bus/pci/devices/$1
    echo vfio-pci >"$d/driver_override" || return 1
    if [ -e "$d/driver" ]; then
        echo "$1" >"$d/driver/unbind" || return 1
    fi
    echo "$1" >/sys/bus/pci/drivers_probe || return 1
    [ "$(basename "$(readlink "$d/driver")")" = vfio-pci ]
}

echo "guest: Linux $(uname -r), $(grep -c ^processor /proc/cpuinfo) cpu, /init at $(cut -d' ' -f1 /proc/uptime) s of uptime"

# ---- the kernel we booted ----------------------------------------------------
if [ -c /dev/iommu ] && [ -d /sys/class/iommu/dmar0/intel-iommu ]; then
    pass kernel-iommu
else
    fail kernel-iommu "no /dev/iommu or no VT-d unit dmar0 in /sys/class/iommu"
    finish
fi

if bind_vfio "$EDU" && wait_for '[ -c /dev/vfio/devices/vfio0 ]' 50; then
    pass bind-vfio-pci
else
    fail bind-vfio-pci "$EDU did not bind to vfio-pci through driver_override"
fi

# ---- the bus and svad ------------------------------------------------------------
cat >/etc/svad-bus.conf <<'EOF'
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=/run/svad-bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
EOF
dbus-daemon --config-file=/etc/svad-bus.conf --nofork --nopidfile >/tmp/dbus.log 2>&1 &
if ! wait_for '[ -S /run/svad-bus ]' 100; then
    fail bus "dbus-daemon did not start: $(oneline /tmp/dbus.log)"
    finish
fi
# With policy plugins in the image, their configuration (run.sh adds both).
set --
[ -f /etc/svad/svad.yaml ] && set -- --config /etc/svad/svad.yaml
svad --backend linux --bus "$BUS" --state-dir /tmp/svad-state "$@" >/tmp/svad.log 2>&1 &
svad_pid=$!
if wait_for 'sc status' 300; then
    pass svad-start
else
    fail svad-start "svad did not answer on the bus: $(oneline /tmp/svad.log)"
    finish
fi

# With policy plugins (run.sh puts them in the image with a configuration),
# every fd below passes through them: they must all have loaded.
if [ -f /etc/svad/svad.yaml ]; then
    sc plugins >/tmp/plugins 2>&1
    if grep -q '^vfio ' /tmp/plugins && grep -q '^vdpa ' /tmp/plugins &&
        ! grep -q '^refused' /tmp/plugins; then
        pass "policy-plugins ($(awk 'NR > 1 { print $1 }' /tmp/plugins | tr '\n' ' ' | sed 's/ $//'))"
    else
        fail policy-plugins "svactl plugins: $(oneline /tmp/plugins)"
    fi
fi

# ---- discovery agrees with sysfs -------------------------------------------------
# Each PCI function as sysfs says it: ADDRESS VENDOR:DEVICE CLASS DRIVER GROUP UNIT.
sysfs_devices() {
    for d in /sys/bus/pci/devices/*; do
        a=$(basename "$d")
        v=$(sed 's/^0x//' "$d/vendor")
        p=$(sed 's/^0x//' "$d/device")
        c=$(sed 's/^0x//' "$d/class")
        drv=-
        [ -e "$d/driver" ] && drv=$(basename "$(readlink "$d/driver")")
        g=-
        [ -e "$d/iommu_group" ] && g=$(basename "$(readlink "$d/iommu_group")")
        u=-
        [ -e "$d/iommu" ] && u=$(basename "$(readlink "$d/iommu")")
        echo "$a $v:$p $c $drv $g $u"
    done | sort
}
check_devices() {
    sysfs_devices >/tmp/devices.sysfs
    sc devices >/tmp/devices.svactl 2>&1 || return 1
    awk 'NR > 1 { print $1, $2, $3, $4, $5, $6 }' /tmp/devices.svactl | sort >/tmp/devices.svad
    cmp -s /tmp/devices.sysfs /tmp/devices.svad
}
if check_devices; then
    pass "discovery-devices ($(wc -l </tmp/devices.sysfs) functions)"
else
    fail discovery-devices "svactl devices differs from sysfs"
    echo "  sysfs:"
    show /tmp/devices.sysfs
    echo "  svactl devices:"
    show /tmp/devices.svactl
fi

# Each group: NUMBER TYPE MEMBERS...
sysfs_groups() {
    for g in /sys/kernel/iommu_groups/*; do
        echo "$(basename "$g") $(cat "$g/type") $(ls "$g/devices" | sort | tr '\n' ' ')"
    done | sed 's/ *$//' | sort
}
sc groups >/tmp/groups.svactl 2>&1
sysfs_groups >/tmp/groups.sysfs
# The DEVICES column (one or more addresses) as the header places it; VIABLE
# and BLOCKERS are svad's own verdict.
awk 'NR == 1 { d = index($0, "DEVICES"); b = index($0, "BLOCKERS") }
     NR > 1 { m = substr($0, d, b - d); gsub(/ +/, " ", m); sub(/ $/, "", m); print $1 " " $2 " " m }' \
    /tmp/groups.svactl | sort >/tmp/groups.svad
if cmp -s /tmp/groups.sysfs /tmp/groups.svad; then
    pass "discovery-groups ($(wc -l </tmp/groups.sysfs) groups)"
else
    fail discovery-groups "svactl groups differs from /sys/kernel/iommu_groups"
    diff /tmp/groups.sysfs /tmp/groups.svad | sed 's/^/    /'
    show /tmp/groups.svactl
fi
# A group that holds only vfio-pci functions (or none with a driver) is viable.
edu_group=$(basename "$(readlink /sys/bus/pci/devices/$EDU/iommu_group)")
if awk -v g="$edu_group" 'NR > 1 && $1 == g { exit($3 == "yes" ? 0 : 1) }' /tmp/groups.svactl; then
    pass "discovery-viable (group $edu_group of $EDU)"
else
    fail discovery-viable "group $edu_group of $EDU (vfio-pci) is not viable for svad"
    show /tmp/groups.svactl
fi

# The VT-d unit: every unit of /sys/class/iommu, with cap and ecap.
unit_ok=1
units_sysfs=$(ls /sys/class/iommu | sort | tr '\n' ' ')
units_svad=$(sc units | awk 'NR > 1 { print $1 }' | sort | tr '\n' ' ')
[ "$units_sysfs" = "$units_svad" ] || unit_ok=0
sc units >/tmp/units.svactl 2>&1
show /tmp/units.svactl
for u in /sys/class/iommu/*; do
    n=$(basename "$u")
    sc show "$n" >"/tmp/unit.$n" 2>&1 || unit_ok=0
    # cap and ecap are VT-d's (IOMMUFD_TEST adds a mock IOMMU without them).
    [ -d "$u/intel-iommu" ] || continue
    for reg in cap ecap; do
        want=$(hexnorm "$(cat "$u/intel-iommu/$reg")")
        key=Cap
        [ "$reg" = ecap ] && key=Ecap
        got=$(hexnorm "$(awk -v k="$key:" '$1 == k { print $2 }' "/tmp/unit.$n")")
        if [ "$want" != "$got" ]; then
            unit_ok=0
            echo "  $n $reg: sysfs $want, svad $got"
        fi
    done
    n_devices=$(ls "$u/devices" | wc -l)
    got=$(awk -v u="$n" '$1 == u { print $NF }' /tmp/units.svactl)
    if [ "$n_devices" != "$got" ]; then
        unit_ok=0
        echo "  $n devices: sysfs $n_devices, svad $got"
    fi
done
if [ "$unit_ok" = 1 ]; then
    pass "discovery-units (${units_sysfs% })"
else
    fail discovery-units "svactl units/show differs from /sys/class/iommu (sysfs: $units_sysfs; svad: $units_svad)"
fi

# lspci -vvv, where the image has it: PASID, ATS and PRI as svad says them.
if command -v lspci >/dev/null 2>&1; then
    caps_ok=1
    while read -r a rest; do
        lspci -vvv -s "$a" >/tmp/lspci 2>&1 || caps_ok=0
        set -- $rest
        # rest: ID CLASS DRIVER GROUP UNIT PASID ATS PRI ...
        pasid=$6
        ats=$7
        pri=$8
        l_pasid=-
        grep -q 'Process Address Space ID' /tmp/lspci && l_pasid=yes
        l_ats=-
        grep -q 'Address Translation Service' /tmp/lspci && l_ats=yes
        l_pri=-
        grep -q 'Page Request Interface' /tmp/lspci && l_pri=yes
        s_pasid=-
        [ "$pasid" != - ] && s_pasid=yes
        if [ "$s_pasid $ats $pri" != "$l_pasid $l_ats $l_pri" ]; then
            caps_ok=0
            echo "  $a PASID/ATS/PRI: lspci $l_pasid $l_ats $l_pri, svad $pasid $ats $pri"
        fi
    done <<EOF2
$(awk 'NR > 1' /tmp/devices.svactl)
EOF2
    if [ "$caps_ok" = 1 ]; then
        pass discovery-lspci-caps
    else
        fail discovery-lspci-caps "PASID/ATS/PRI differ from lspci -vvv"
    fi
fi

# ---- KernelFeatures --------------------------------------------------------------
sc status >/tmp/status 2>&1
feature() {
    awk '$1 == "KernelFeatures:" { for (i = 2; i <= NF; i++) print $i }' /tmp/status |
        awk -F= -v f="$1" '$1 == f { print $2 }'
}
# The note of an absent feature, under its KernelFeatures name.
note() {
    sc --json status | grep -oE "\"$1\":\"[^\"]*\"" | head -n 1
}
kf_ok=1
kf_why=
expect_feature() {
    got=$(feature "$1")
    if [ "$got" != "$2" ]; then
        kf_ok=0
        kf_why="$kf_why $1=$got (expected $2: $3);"
    fi
    if [ "$2" = no ] && [ -z "$(note "$1")" ]; then
        kf_ok=0
        kf_why="$kf_why $1 is absent without a note in KernelFeatureNotes;"
    fi
}
expect_feature iommufd yes "/dev/iommu exists" iommufd
expect_feature vfio_cdev yes "/dev/vfio/devices exists" vfioCdev
expect_feature hw_info yes "IOMMU_GET_HW_INFO is in 6.12" hwInfo
expect_feature fault_queue yes "IOMMU_FAULT_QUEUE_ALLOC is in 6.12" faultQueue
expect_feature rlimit_mode yes "svad runs as root" rlimitMode
expect_feature vhost_vdpa no "no vDPA device exists yet" vhostVdpa
expect_feature idxd no "the guest has no DSA" idxd
if [ "$kf_ok" = 1 ]; then
    pass kernel-features
    grep '^KernelFeature' /tmp/status | sed 's/^/    /'
else
    fail kernel-features "$kf_why"
    show /tmp/status
fi

# ---- handoff: the client binds, allocates an IOAS, attaches and maps -------------------------
# svad's fd count grows by two eventfds at its first context and stays there
# (measured: the same count after every later context), so the baseline is
# taken after one context has come and gone; a leak shows on every later one.
sc exec --vm vm-warmup --device "$EDU" -- true >/tmp/warmup 2>&1 ||
    fail warmup "$(oneline /tmp/warmup)"
wait_for 'sc contexts | grep -q "no contexts"' 50
svad_fds=$(fd_count)
fd_list >/tmp/fds.before
if sc exec --vm vm-handoff --device "$EDU" -- \
    kt-client handoff '{iommufd}' "{fd:$EDU}" >/tmp/handoff 2>&1; then
    pass "vfio-handoff ($EDU: bind, IOAS_ALLOC, ATTACH_IOMMUFD_PT, IOAS_MAP)"
    show /tmp/handoff
else
    fail vfio-handoff "$(oneline /tmp/handoff)"
fi

# PASID: what GET_HW_INFO said (out_max_pasid_log2, and the VT-d ecap) against svad.
hw_ecap=$(hexnorm "$(awk '$2 == "IOMMU_GET_HW_INFO:" { print $8 }' /tmp/handoff)")
edu_unit=$(basename "$(readlink /sys/bus/pci/devices/$EDU/iommu)")
svad_ecap=$(hexnorm "$(awk '$1 == "Ecap:" { print $2 }' "/tmp/unit.$edu_unit")")
if [ -n "$hw_ecap" ] && [ "$hw_ecap" = "$svad_ecap" ]; then
    pass "hw-info-ecap ($edu_unit ecap $svad_ecap)"
else
    fail hw-info-ecap "IOMMU_GET_HW_INFO ecap '$hw_ecap', svad's $edu_unit Ecap '$svad_ecap'"
fi
max_pasid=$(awk '$2 == "max_pasid_log2:" { print $3 }' /tmp/handoff)
edu_pasid=$(awk -v a="$EDU" '$1 == a { print $7 }' /tmp/devices.svactl)
case "$max_pasid:$edu_pasid" in
none:*) pass "pasid-hw-info (this kernel's GET_HW_INFO has no out_max_pasid_log2; svad: PASID $edu_pasid)" ;;
0:-) pass "pasid-hw-info (out_max_pasid_log2 0 for $EDU; svad: no PASID)" ;;
0:* | *:-) fail pasid-hw-info "GET_HW_INFO out_max_pasid_log2 '$max_pasid' for $EDU, svad's PASID column '$edu_pasid'" ;;
*) pass "pasid-hw-info (out_max_pasid_log2 $max_pasid for $EDU; svad: PASID $edu_pasid)" ;;
esac
vfio_pasid=$(awk '$2 == "vfio_attach_pasid:" { print $3 }' /tmp/handoff)
pasid_attach=$(feature pasid_attach)
if [ -n "$vfio_pasid" ] && [ "$vfio_pasid" = "$pasid_attach" ]; then
    pass "pasid-attach-feature (pasid_attach=$pasid_attach, as this kernel's VFIO uAPI says)"
else
    fail pasid-attach-feature "svad says pasid_attach=$pasid_attach, this kernel's VFIO uAPI says '$vfio_pasid': $(note pasid_attach pasidAttach)"
fi

# ---- attached: svad binds and attaches; the client maps -------------------------------------
if sc exec --vm vm-attached --mode attached --device "$EDU" -- sh -c \
    "ioas=\$(svactl --bus $BUS show \"\$SVAD_CONTEXT\" | awk '\$1 == \"IoasId:\" { print \$2 }') &&
     echo \"context \$SVAD_CONTEXT ioas \$ioas\" &&
     exec kt-client attached {iommufd} {fd:$EDU} \"\$ioas\"" >/tmp/attached 2>&1; then
    pass "vfio-attached ($EDU: IOAS_MAP into svad's IOAS)"
    show /tmp/attached
else
    fail vfio-attached "$(oneline /tmp/attached)"
fi

# ---- a PASID for a device without PASID ------------------------------------------------------
if sc exec --vm vm-pasid --device "$EDU" -- sh -c \
    "svactl --bus $BUS pasid alloc \"\$SVAD_CONTEXT\" $EDU" >/tmp/pasid 2>&1; then
    fail pasid-not-supported "a PASID was allocated for $EDU, which has no PASID capability"
elif grep -q '(NotSupported)' /tmp/pasid && grep -q 'PASID' /tmp/pasid; then
    pass "pasid-not-supported ($(oneline /tmp/pasid | sed 's/^svactl: //'))"
else
    fail pasid-not-supported "expected org.svad.Svad1.Error.NotSupported: $(oneline /tmp/pasid)"
fi

# ---- no fd left behind by the contexts above (each ended with its owner) ---------------------------
if wait_for '[ "$(fd_count)" = "$svad_fds" ] && sc contexts | grep -q "no contexts"' 50; then
    pass "owner-exit-no-fd ($svad_fds fds in svad)"
else
    fail owner-exit-no-fd "svad holds $(fd_count) fds, $svad_fds before; $(sc contexts | tr '\n' ' ')"
    echo "  before:"
    cat /tmp/fds.before
    echo "  now:"
    fd_list
fi

# ---- allocate+release on the linux backend, against Peer.Ping -------------------------------------
# bench/alloc_roundtrip against this svad (real iommufd and VFIO cdev, the
# state store on /tmp), where the image has it. Its figures are the guest's
# (TCG, no KVM): the ratios to Ping in the same run are what compare.
if [ -x /usr/local/bin/svad-bench-alloc ]; then
    if svad-bench-alloc --bus "$BUS" --device "$EDU" --n 200 --warmup 20 >/tmp/bench 2>&1; then
        ratio=$(awk '/the same, against two Pings/ { print $(NF-1) }' /tmp/bench)
        pass "alloc-roundtrip (linux backend, $EDU: allocate+release ${ratio:-?} two Pings at p50; no context left)"
        show /tmp/bench
    else
        fail alloc-roundtrip "$(tail -n 3 /tmp/bench | tr '\n' ' ')"
    fi
fi

# ---- busy: a second context for a device held by a client ------------------------------------------
# svactl itself in the background (not the sc function, which would be a
# subshell): exec keeps its pid, so $! is the client's pid.
svactl --bus "$BUS" exec --vm vm-holder --device "$EDU" -- \
    kt-client handoff '{iommufd}' "{fd:$EDU}" --hold >/tmp/hold 2>&1 &
holder=$!
if wait_for 'grep -q "^step hold" /tmp/hold' 300 &&
    [ "$(awk '$2 == "hold:" { print $4 }' /tmp/hold)" = "$holder" ]; then
    pass "holder (pid $holder holds $EDU bound, attached and mapped)"
else
    fail holder "$(oneline /tmp/hold)"
fi
if sc alloc --vm vm-second "$EDU" >/tmp/busy 2>&1; then
    fail busy-device "a second context got $EDU"
elif grep -q '(Busy)' /tmp/busy; then
    pass "busy-device ($(oneline /tmp/busy | sed 's/^svactl: //'))"
else
    fail busy-device "expected org.svad.Svad1.Error.Busy: $(oneline /tmp/busy)"
fi

# The same for a group: ICH9's 00:1f.x functions share one, and none of them
# has a driver in this kernel. Two of them go to vfio-pci; one is held.
SATA=0000:00:1f.2
SMBUS=0000:00:1f.3
sata_group=$(basename "$(readlink /sys/bus/pci/devices/$SATA/iommu_group)")
smbus_group=$(basename "$(readlink /sys/bus/pci/devices/$SMBUS/iommu_group)")
if [ "$sata_group" != "$smbus_group" ]; then
    fail busy-group "$SATA (group $sata_group) and $SMBUS (group $smbus_group) share no group"
elif ! bind_vfio "$SATA" || ! bind_vfio "$SMBUS" || ! sc rescan >/tmp/busy 2>&1; then
    fail busy-group "binding $SATA and $SMBUS to vfio-pci failed: $(oneline /tmp/busy)"
else
    svactl --bus "$BUS" exec --vm vm-group --device "$SATA" -- sleep 600 >/tmp/group 2>&1 &
    group_holder=$!
    wait_for 'sc contexts | grep -q vm-group' 100
    if sc alloc --vm vm-second "$SMBUS" >/tmp/busy 2>&1; then
        fail busy-group "a second context got $SMBUS while $SATA of group $sata_group is held"
    elif grep -q '(Busy)' /tmp/busy; then
        pass "busy-group ($(oneline /tmp/busy | sed 's/^svactl: //'))"
    else
        fail busy-group "expected org.svad.Svad1.Error.Busy: $(oneline /tmp/busy) $(oneline /tmp/group)"
    fi
    kill -9 "$group_holder"
    wait "$group_holder" 2>/dev/null
fi

# ---- kill -9 of the client: the lease ends, no fd stays, the device works again -------------------------
kill -9 "$holder"
wait "$holder" 2>/dev/null
if wait_for '[ "$(fd_count)" = "$svad_fds" ] && sc contexts | grep -q "no contexts"' 100; then
    pass "kill-no-fd ($svad_fds fds in svad)"
else
    fail kill-no-fd "svad holds $(fd_count) fds, $svad_fds before; $(sc contexts | tr '\n' ' ')"
fi
if sc exec --vm vm-again --device "$EDU" -- \
    kt-client handoff '{iommufd}' "{fd:$EDU}" >/tmp/again 2>&1; then
    pass "kill-no-kernel-object ($EDU bound, attached and mapped again)"
else
    fail kill-no-kernel-object "$(oneline /tmp/again)"
fi

# ---- release in attached mode: svad's bind and IOAS go, the device can be attached again -------------
sleep 1000 &
owner=$!
release_ok=1
release_why=
for round in 1 2; do
    if ! sc alloc --vm "vm-release-$round" --mode attached --owner-pid "$owner" "$EDU" >/tmp/rel 2>&1; then
        release_ok=0
        release_why="$release_why round $round: $(oneline /tmp/rel);"
        break
    fi
    ctx=$(awk '$1 == "context" { print $2 }' /tmp/rel)
    if [ "$(fd_count)" -le "$svad_fds" ]; then
        release_ok=0
        release_why="$release_why round $round: svad keeps no fd for an attached context;"
    fi
    if ! sc release "$ctx" >/tmp/rel 2>&1; then
        release_ok=0
        release_why="$release_why round $round: $(oneline /tmp/rel);"
        break
    fi
    if [ "$(fd_count)" != "$svad_fds" ]; then
        release_ok=0
        release_why="$release_why round $round: svad holds $(fd_count) fds after release, $svad_fds before;"
    fi
done
if [ "$release_ok" = 1 ]; then
    pass "release-attached (twice: no fd and no kernel object left)"
else
    fail release-attached "$release_why"
fi
# The owner of an attached context is killed: svad unbinds.
if sc alloc --vm vm-owner --mode attached --owner-pid "$owner" "$EDU" >/tmp/rel 2>&1; then
    kill -9 "$owner"
    wait "$owner" 2>/dev/null
    if wait_for '[ "$(fd_count)" = "$svad_fds" ] && sc contexts | grep -q "no contexts"' 100 &&
        sc exec --vm vm-after --mode attached --device "$EDU" -- true >/tmp/rel 2>&1; then
        pass "kill-attached-owner (context released, device attachable again)"
    else
        fail kill-attached-owner "svad holds $(fd_count) fds, $svad_fds before; $(oneline /tmp/rel)"
    fi
else
    kill -9 "$owner"
    fail kill-attached-owner "$(oneline /tmp/rel)"
fi

# ---- kernel fault injection: each kernel allocation of an attached allocation fails in turn ----------------
# fail-nth (FAILSLAB, FAIL_PAGE_ALLOC): for n = 1, 2, ... the n-th slab or page
# allocation made by svad's workers (the svad-work threads, which make its kernel
# calls) fails, during an attached-mode allocation with a fault queue. Each try
# must give a context or one of svad's named errors, and svad's fds must come
# back to where they were; the first n at which nothing was failed must give a
# context. ACPICA's allocations are never failed (the stack filter's reject
# range): this kernel's ACPICA oopses on one (README, "Kernel fault injection").
fi_dir=/sys/kernel/debug
# The longest run of acpi* symbols in the kernel's text, by address: ACPICA and
# the ACPI glue around it. Sets fi_start and fi_end (the first address past it).
acpica_text() {
    awk '$2 ~ /^[tT]$/ { print $1, $3 }' /proc/kallsyms | sort >/tmp/ksyms
    set -- $(awk '{ n = $2; sub(/^__pfx_/, "", n) }
        n ~ /^acpi/ { if (start == 0 || NR - last > 4) { start = NR; count = 0 }
                      last = NR; count++
                      if (count > best) { best = count; from = start; to = NR } }
        END { print from, to, best }' /tmp/ksyms)
    [ "$#" = 3 ] || return 1
    fi_start=0x$(sed -n "$1p" /tmp/ksyms | cut -d' ' -f1)
    fi_end=0x$(sed -n "$(($2 + 1))p" /tmp/ksyms | cut -d' ' -f1)
    fi_syms=$3
    [ "$fi_start" != 0x0000000000000000 ] && [ "$fi_end" != 0x ] &&
        sed -n "$1,$2p" /tmp/ksyms | grep -q ' acpi_ut_update_object_reference$' &&
        sed -n "$1,$2p" /tmp/ksyms | grep -q ' acpi_ns_evaluate$'
}
fi_setup() {
    mount -t debugfs debugfs "$fi_dir" 2>/dev/null
    for a in failslab fail_page_alloc; do
        [ -d "$fi_dir/$a" ] || return 1
        # GFP_KERNEL allocations too (the default leaves out all that may sleep).
        echo N >"$fi_dir/$a/ignore-gfp-wait" || return 1
        echo 0 >"$fi_dir/$a/verbose" || return 1
        echo "$fi_start" >"$fi_dir/$a/reject-start" || return 1
        echo "$fi_end" >"$fi_dir/$a/reject-end" || return 1
    done
    # Single pages too; highmem stays left out (a failed page fault is retried, not svad's).
    echo 0 >"$fi_dir/fail_page_alloc/min-order"
}
# The kernel's oopses and BUGs so far (a failed allocation's own warning is no bug).
fi_oopses() {
    dmesg | grep -c -e 'Oops' -e 'general protection fault' -e 'BUG:'
}
# What svad logs for a task that threw what no kernel call should: a bug in svad,
# however its refusal is named.
fi_svad_bugs() {
    grep -c "a worker's task failed" /tmp/svad.log
}
fi_threads=
for t in /proc/"$svad_pid"/task/*; do
    [ "$(cat "$t/comm" 2>/dev/null)" = svad-work ] && fi_threads="$fi_threads $t"
done
if ! acpica_text; then
    fail fail-nth "ACPICA's text not found in /proc/kallsyms (no addresses, or no acpi_ut_update_object_reference)"
elif ! fi_setup; then
    fail fail-nth "the fault-injection knobs under $fi_dir are missing or refused"
elif [ -z "$fi_threads" ]; then
    fail fail-nth "svad has no svad-work thread: $(cat /proc/"$svad_pid"/task/*/comm | tr '\n' ' ')"
else
    sleep 1000 &
    fi_owner=$!
    fi_why=
    fi_errors=
    fi_contexts=0
    fi_oops0=$(fi_oopses)
    fi_bugs0=$(fi_svad_bugs)
    n=1
    while :; do
        if [ "$n" -gt 400 ]; then
            fi_why="still injecting at n = $n"
            break
        fi
        for t in $fi_threads; do echo "$n" >"$t/fail-nth"; done
        timeout 60 svactl --bus "$BUS" alloc --vm "vm-fail-$n" --mode attached --fault-queue \
            --owner-pid "$fi_owner" "$EDU" >/tmp/fi 2>&1
        rc=$?
        injected=0
        for t in $fi_threads; do
            [ "$(cat "$t/fail-nth")" = 0 ] && injected=1
            echo 0 >"$t/fail-nth"
        done
        if [ "$(fi_oopses)" != "$fi_oops0" ]; then
            fi_why="the kernel oopsed at n = $n:"
            dmesg | grep -A 30 -e 'Oops' -e 'general protection fault' -e 'BUG:' | head -n 40 >/tmp/fi.oops
            break
        fi
        if [ "$(fi_svad_bugs)" != "$fi_bugs0" ]; then
            fi_why="n = $n: $(grep "a worker's task failed" /tmp/svad.log | tail -n 1)"
            break
        fi
        if ! kill -0 "$svad_pid" 2>/dev/null; then
            fi_why="svad exited at n = $n: $(tail -n 5 /tmp/svad.log | tr '\n' ' ')"
            break
        fi
        if [ "$rc" = 0 ]; then
            ctx=$(awk '$1 == "context" { print $2 }' /tmp/fi)
            if [ -z "$ctx" ] || ! sc release "$ctx" >/tmp/fi.rel 2>&1; then
                fi_why="n = $n: a context that could not be released: $(oneline /tmp/fi) $(oneline /tmp/fi.rel)"
                break
            fi
            fi_contexts=$((fi_contexts + 1))
        else
            name=$(sed -n 's/.*(\([A-Z][A-Za-z]*\))$/\1/p' /tmp/fi | tail -n 1)
            if [ -z "$name" ] || [ "$injected" = 0 ]; then
                fi_why="n = $n (a fault injected: $injected): not one of svad's named errors: $(oneline /tmp/fi)"
                break
            fi
            fi_errors="$fi_errors $name"
            # A refusal other than the kernel's own errno is shown whole.
            [ "$name" = KernelError ] || echo "n = $n: $(oneline /tmp/fi)" >>/tmp/fi.other
        fi
        if ! wait_for '[ "$(fd_count)" = "$svad_fds" ]' 50; then
            fi_why="n = $n: svad holds $(fd_count) fds, $svad_fds before"
            fd_list >/tmp/fi.oops
            break
        fi
        if [ "$injected" = 0 ]; then
            # Nothing left to fail: that one gave a context. At n = 1 nothing was ever
            # failed, and the check would have tested nothing.
            [ "$n" = 1 ] && fi_why="no allocation of svad's workers was failed at n = 1"
            break
        fi
        n=$((n + 1))
    done
    kill -9 "$fi_owner"
    wait "$fi_owner" 2>/dev/null
    for a in failslab fail_page_alloc; do echo Y >"$fi_dir/$a/ignore-gfp-wait"; done
    tally=$(echo "$fi_errors" | tr ' ' '\n' | grep . | sort | uniq -c | awk '{ printf "%s%s x%s", (NR > 1 ? ", " : ""), $2, $1 }')
    if [ -z "$fi_why" ] &&
        sc exec --vm vm-fail-after --mode attached --device "$EDU" -- true >/tmp/fi 2>&1; then
        pass "fail-nth ($((n - 1)) injection points covered, then a context; errors: ${tally:-none}; $fi_contexts contexts; ACPICA's $fi_syms symbols at $fi_start-$fi_end left alone)"
        [ -f /tmp/fi.other ] && show /tmp/fi.other
    else
        fail fail-nth "${fi_why:-the device could not be attached again: $(oneline /tmp/fi)} (errors so far: ${tally:-none})"
        [ -f /tmp/fi.oops ] && show /tmp/fi.oops
    fi
fi

# ---- a device bound to vfio-pci while svad runs, then a rescan --------------------------------------------
if bind_vfio "$NIC" && sc rescan >/tmp/rescan 2>&1 &&
    sc devices | awk -v a="$NIC" '$1 == a && $4 == "vfio-pci" && $11 ~ /^vfio[0-9]+$/ { f = 1 } END { exit(f ? 0 : 1) }'; then
    if sc exec --vm vm-nic --mode attached --device "$NIC" -- true >/tmp/nic 2>&1; then
        pass "rescan-vfio ($NIC rebound from e1000e to vfio-pci, found by rescan, attached)"
    else
        fail rescan-vfio "$(oneline /tmp/nic)"
    fi
else
    fail rescan-vfio "$NIC on vfio-pci is not in svactl devices after a rescan: $(oneline /tmp/rescan)"
    sc devices | sed 's/^/    /'
fi

# ---- QEMU 10.0 with svad's fds: vfio-pci on iommufd -----------------------------------------------------
# QEMU binds the device and allocates its own IOAS, so it takes handoff fds.
# -S: the guest never runs; QMP on a pipe (kt-client qmp) says what QEMU
# realized and when: the milliseconds from the start of the command to QMP's
# greeting and to query-pci's answer (QEMU realizes its devices between the
# two). Realizing vfio-pci maps and pins all guest RAM: -m stays small.
QEMU_ARGS="-machine q35 -accel tcg -nodefaults -display none -m 64 -S -qmp stdio"
# The milliseconds of kt-client's step $2 in the file $1.
qmp_ms() {
    awk -v s="$2:" '$1 == "step" && $2 == s { print $3 }' "$1"
}
# QEMU alone first, for the start-up time without svad and devices.
if kt-client qmp 300 -- qemu-system-x86_64 $QEMU_ARGS >/tmp/qemu.bare 2>&1; then
    echo "qemu-start: $(qmp_ms /tmp/qemu.bare qmp-greeting) ms to the QMP greeting, $(qmp_ms /tmp/qemu.bare query-pci) ms to query-pci (no device, no svactl)"
else
    echo "qemu-start: QEMU without devices did not start:"
    show /tmp/qemu.bare
fi
nic_ids=$(sed 's/^0x//' /sys/bus/pci/devices/$NIC/vendor):$(sed 's/^0x//' /sys/bus/pci/devices/$NIC/device)
qemu_why=
if ! kt-client qmp 300 -- svactl --bus "$BUS" exec --vm vm-qemu-vfio --device "$NIC" -- \
    qemu-system-x86_64 $QEMU_ARGS -object 'iommufd,id=i0,fd={iommufd}' \
    -device "vfio-pci,iommufd=i0,fd={fd:$NIC}" >/tmp/qemu.vfio 2>&1; then
    qemu_why="$(oneline /tmp/qemu.vfio)"
elif ! grep -q "^pci $nic_ids\$" /tmp/qemu.vfio; then
    qemu_why="QEMU's query-pci has no $nic_ids: $(grep '^pci ' /tmp/qemu.vfio | cut -d' ' -f2 | tr '\n' ' ' | sed 's/ $//')"
elif ! wait_for 'sc contexts | grep -q "no contexts"' 100; then
    qemu_why="the context outlived QEMU: $(sc contexts | tr '\n' ' ')"
elif ! grep 'context released: owner process exited' /tmp/svad.log | grep -q 'VM=vm-qemu-vfio'; then
    qemu_why="svad released the context, not for its owner's exit: $(grep 'VM=vm-qemu-vfio' /tmp/svad.log | tail -n 1)"
elif ! sc exec --vm vm-after-qemu --device "$NIC" -- true >/tmp/qemu.again 2>&1; then
    qemu_why="$NIC cannot be allocated after QEMU quit: $(oneline /tmp/qemu.again)"
fi
if [ -z "$qemu_why" ]; then
    pass "qemu-vfio-handoff ($NIC $nic_ids in QEMU's query-pci; released at QEMU's exit; allocatable again)"
    echo "qemu-start: $(qmp_ms /tmp/qemu.vfio qmp-greeting) ms to the QMP greeting, $(qmp_ms /tmp/qemu.vfio query-pci) ms to query-pci (svactl exec, vfio-pci $NIC)"
    show /tmp/qemu.vfio
else
    fail qemu-vfio-handoff "$qemu_why"
fi

# ---- vDPA: vdpa_sim's net device through vhost-vdpa ---------------------------------------------------
if vdpa dev add mgmtdev vdpasim_net name vdpa0 >/tmp/vdpa 2>&1 &&
    wait_for '[ -c /dev/vhost-vdpa-0 ]' 50 && sc rescan >>/tmp/vdpa 2>&1 &&
    sc vdpa >/tmp/vdpa.svactl 2>&1 &&
    awk '$1 == "vdpa0" && ($2 == "vdpasim_net" || $2 == "-") && $3 == "vhost_vdpa" && $5 == "/dev/vhost-vdpa-0" { f = 1 } END { exit(f ? 0 : 1) }' /tmp/vdpa.svactl; then
    # sysfs names no management device for vdpa_sim's devices (no parent device).
    pass "vdpa-discovery (vdpa0 on vhost_vdpa, /dev/vhost-vdpa-0; sysfs: $(readlink /sys/bus/vdpa/devices/vdpa0))"
else
    fail vdpa-discovery "$(oneline /tmp/vdpa) $(oneline /tmp/vdpa.svactl 2>/dev/null); sysfs: $(readlink /sys/bus/vdpa/devices/vdpa0)"
fi
# KernelFeatures follows the host: vhost_vdpa was absent at start, the rescan saw vdpa0.
sc status >/tmp/status 2>&1
if [ "$(feature vhost_vdpa)" = yes ]; then
    pass "kernel-features-follow (vhost_vdpa=yes after the rescan)"
else
    fail kernel-features-follow "vhost_vdpa=$(feature vhost_vdpa) after vdpa0 appeared and a rescan"
fi
if sc exec --vm vm-vdpa --device vdpa0 -- kt-client vdpa '{fd:vdpa0}' >/tmp/vdpa.client 2>&1; then
    pass "vdpa-handoff ($(grep '^step VHOST' /tmp/vdpa.client | sed 's/^step VHOST_VDPA_//' | tr '\n' ' ' | sed 's/ $//'))"
else
    fail vdpa-handoff "$(oneline /tmp/vdpa.client)"
fi
# QEMU 10.0 on the same device: -netdev vhost-vdpa with svad's fd.
if ! kt-client qmp 300 -- svactl --bus "$BUS" exec --vm vm-qemu-vdpa --device vdpa0 -- \
    qemu-system-x86_64 $QEMU_ARGS -netdev 'vhost-vdpa,id=n0,vhostfd={fd:vdpa0}' \
    -device virtio-net-pci,netdev=n0 >/tmp/qemu.vdpa 2>&1; then
    fail qemu-vhost-vdpa "$(oneline /tmp/qemu.vdpa)"
elif grep -qE '^pci 1af4:(1000|1041)$' /tmp/qemu.vdpa; then
    pass "qemu-vhost-vdpa (virtio-net-pci $(grep -E '^pci 1af4:(1000|1041)$' /tmp/qemu.vdpa | cut -d' ' -f2) on vdpa0 in QEMU's query-pci)"
    echo "qemu-start: $(qmp_ms /tmp/qemu.vdpa qmp-greeting) ms to the QMP greeting, $(qmp_ms /tmp/qemu.vdpa query-pci) ms to query-pci (svactl exec, vhost-vdpa vdpa0)"
    show /tmp/qemu.vdpa
else
    fail qemu-vhost-vdpa "QEMU's query-pci has no virtio-net (1af4:1000 or 1af4:1041): $(grep '^pci ' /tmp/qemu.vdpa | cut -d' ' -f2 | tr '\n' ' ' | sed 's/ $//')"
fi
if wait_for '[ "$(fd_count)" = "$svad_fds" ] && sc contexts | grep -q "no contexts"' 50; then
    pass "final-no-fd ($svad_fds fds in svad)"
else
    fail final-no-fd "svad holds $(fd_count) fds, $svad_fds before; $(sc contexts | tr '\n' ' ')"
fi

if ! kill -0 "$svad_pid" 2>/dev/null; then
    fail svad-alive "svad exited: $(oneline /tmp/svad.log)"
fi
finish
