"""The constants of the unit format that more than the models need: the kinds, the root slice,
the defaults and floors of limits and what booting changes. Free of pydantic: the compiled
validators and the planner read them without loading the models.
"""

from __future__ import annotations

KINDS = ("sandbox", "network", "slice")
# The slice every slice path starts from; its cgroup is the instance's base (the kernel's
# driver takes slice paths below it, and never needs this name).
ROOT_SLICE = "sandman"
# What a sandbox gets when its unit says nothing (README, `NAME.sandbox.toml`).
# 4096 processes and threads: far above what a service runs, yet a fork bomb stops at an eighth
# of the kernel's default pid_max (32768), so a few runaway sandboxes cannot take the host's
# last PIDs. podman used 4096 (now 2048); nspawn's 16384 is sized for booting a whole OS.
DEFAULT_PIDS_MAX = 4096
# /dev/shm as Docker makes it: 64M, where a bare tmpfs would take half of the host's RAM.
DEFAULT_SHM_SIZE = 64 * 1024**2
# The least each limit may be, of a sandbox or a slice (checks.py refuses less, saying why).
# Memory: starting a busybox sandbox takes about 3 MiB of its cgroup (the first child, a fork of
# apply, is charged for the pages it touches; kernel memory counts too), and under that the start
# fails; a live update below what a sandbox uses is refused (EBUSY, v1) or OOM-kills it (v2).
# 6 MiB is twice that, and the floor of Docker and podman ("Minimum memory limit allowed is
# 6MB"), so a limit that works there works here. memory_high below it throttles the start.
MEMORY_MIN = 6 * 1024**2
# Tasks: sandman's first child and the init are both in the cgroup while the init is forked.
PIDS_MIN = 2
# CPU: the kernel refuses a CFS quota under 1 ms per period (kernel/cgroup_common.py's
# CPU_QUOTA_MIN_US, not imported: validate stays off the kernel side), 1% of the 100 ms period.
CPU_MAX_MIN = 1.0

# The keys whose default differs when `sandbox.boot` is true, and that default: systemd-nspawn's
# capability set and a seccomp profile systemd lives with ("os"), and systemd's halt request as
# the stop signal, which it answers by a clean shutdown.
BOOT_DEFAULTS: dict[tuple[str, str], str] = {
    ("security", "capabilities"): "os",
    ("security", "seccomp"): "os",
    ("sandbox", "stop_signal"): "SIGRTMIN+3",
}
