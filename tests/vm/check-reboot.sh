#!/bin/sh
# The VM runner's own check of --systemd boots and of a reboot between two boots of one run:
#   sudo .venv/bin/python tests/vm/run.py --systemd -- sh tests/vm/check-reboot.sh
# Boot 1 enables a oneshot unit that records the boot it ran in, then asks for a reboot; boot 2
# finds that the unit ran at this boot's startup, with systemd as PID 1 on pure cgroup v2.
set -eu
unit=/etc/systemd/system/vm-check-reboot.service
record=/var/lib/vm-check-reboot
case "$VM_BOOT" in
1)
    cat >"$unit" <<'UNIT'
[Unit]
Description=VM runner check: a unit enabled in boot 1 runs at startup of boot 2
[Service]
Type=oneshot
ExecStart=/bin/sh -c 'cat /proc/sys/kernel/random/boot_id >/var/lib/vm-check-reboot'
[Install]
WantedBy=multi-user.target
UNIT
    systemctl enable vm-check-reboot.service
    cat /proc/sys/kernel/random/boot_id >"$VM_RESULTS/boot-1-id"
    touch "$VM_REBOOT"
    echo "boot 1: vm-check-reboot.service enabled, reboot asked for"
    ;;
2)
    fail() { echo "boot 2: FAILED: $*"; exit 1; }
    [ "$(cat /proc/1/comm)" = systemd ] || fail "PID 1 is $(cat /proc/1/comm)"
    [ -f /sys/fs/cgroup/cgroup.controllers ] || fail "no cgroup2 at /sys/fs/cgroup"
    v1=$(awk '$3 == "cgroup"' /proc/self/mounts)
    [ -z "$v1" ] || fail "v1 hierarchies mounted: $v1"
    [ "$(awk 'NR > 1 && $2 != 0' /proc/cgroups | wc -l)" = 0 ] || fail "v1 hierarchies exist"
    [ -f "$record" ] || fail "vm-check-reboot.service did not run"
    [ "$(cat "$record")" = "$(cat /proc/sys/kernel/random/boot_id)" ] ||
        fail "vm-check-reboot.service ran in another boot"
    [ "$(systemctl show -P Result vm-check-reboot.service)" = success ] || fail "the unit failed"
    systemctl is-system-running || true  # running, or degraded: which units failed is below
    systemctl --failed --no-legend
    echo "boot 2: systemd is PID 1, cgroup2 only, the unit enabled in boot 1 ran at startup"
    ;;
*)
    echo "boot $VM_BOOT: not asked for"
    exit 1
    ;;
esac
