"""What each seccomp profile refuses, by system call name: Docker's default profile (moby's
profiles/seccomp/default.json) written as the calls it refuses, and "os", systemd-nspawn's stance
for a booted system. kernel/seccomp.py compiles the verdicts into a filter.

Docker's profile is an allowlist of some 370 calls; this is the complement, the calls that list
leaves out (75 on x86_64): each one is named here with the reason it is refused, which is what a
reader of a security policy wants to see, and the filter sends every call newer than sandman's
table to ENOSYS, which keeps what an allowlist does for calls the kernel adds later. A test
(DOCKER_REFUSES in tests/unit/test_seccomp_filter.py) holds these refusals to the calls Docker's
profile leaves out. The verdicts that depend on the capabilities the unit keeps follow Docker's:
a call refused without CAP_SYS_ADMIN is one the kernel would refuse without it anyway, so a
sandbox that holds the capability loses nothing, and one without it never reaches its code.
"""

# No `from __future__ import annotations`: typing compiles each string annotation of a
# NamedTuple when the class is made (about 0.1 ms a field, at every start).
import errno
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from sandman.kernel import syscalls as sc

PROFILES = ("default", "os")  # "unconfined" is no filter at all


class Check(NamedTuple):
    """A condition on the low 32 bits of one argument. Every argument tested here is an int or
    flags the kernel reads from the low word (clone's flags: lower_32_bits()), so the high word
    cannot make a call pass that the kernel would take as another."""

    arg: int  # which argument, from 0
    value: int
    any_bit: bool = False  # True: any bit of `value` set; False: equal to `value`


class Case(NamedTuple):
    when: tuple[Check, ...]  # all of them
    errno: int | None  # None: allowed


class Verdict(NamedTuple):
    """What one call gets: the first case whose checks all hold, else `otherwise`."""

    cases: tuple[Case, ...] = ()
    otherwise: int | None = None  # an errno, or None: allowed


DENY = Verdict(otherwise=errno.EPERM)

# Refused whatever the unit grants.
ALWAYS = (
    # The kernel keyring is not namespaced: a sandbox would read and fill the host's.
    *("add_key", "keyctl", "request_key"),
    *("kexec_load", "kexec_file_load"),  # a new kernel
    # A record of container escapes (Google turned it off on its servers, ChromeOS, Android);
    # EPERM is also what a host with kernel.io_uring_disabled = 2 answers, so programs fall back.
    *("io_uring_setup", "io_uring_enter", "io_uring_register"),
    # Stalls the kernel at a page fault the caller picks: the tool that wins use-after-free races.
    "userfaultfd",
    *("migrate_pages", "move_pages"),  # moves other processes' pages between NUMA nodes
    *("swapon", "swapoff"),
    # Obsolete, or gone from the kernel: nothing needs them, and old code is where bugs stay.
    *("_sysctl", "afs_syscall", "create_module", "get_kernel_syms", "getpmsg", "putpmsg"),
    *("query_module", "security", "tuxcall", "vserver", "nfsservctl", "uselib", "ustat", "sysfs"),
)

# Refused unless the unit keeps one of the capabilities (each is what the kernel checks).
_ADMIN = "CAP_SYS_ADMIN"
GATED: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(
        (
            # The mount family: the kernel asks CAP_SYS_ADMIN of each. pivot_root too, which
            # Docker refuses even with it (its runtime pivots before the filter); sandman lets a
            # sandbox that may mount pivot, as nested sandboxes and systemd's RootDirectory= do.
            *("mount", "umount2", "pivot_root", "mount_setattr", "move_mount", "open_tree"),
            *("open_tree_attr", "fsopen", "fsconfig", "fsmount", "fspick"),
            *("setns", "sethostname", "setdomainname", "quotactl", "quotactl_fd"),
            *("fanotify_init", "lookup_dcookie"),
            *("lsm_get_self_attr", "lsm_set_self_attr", "lsm_list_modules"),
        ),
        (_ADMIN,),
    ),
    "bpf": (_ADMIN, "CAP_BPF"),
    "perf_event_open": (_ADMIN, "CAP_PERFMON"),
    "syslog": (_ADMIN, "CAP_SYSLOG"),
    "reboot": ("CAP_SYS_BOOT",),  # in a pid namespace: ends its init, as `poweroff` does
    "chroot": ("CAP_SYS_CHROOT",),
    **dict.fromkeys(("init_module", "finit_module", "delete_module"), ("CAP_SYS_MODULE",)),
    "acct": ("CAP_SYS_PACCT",),
    **dict.fromkeys(("kcmp", "pidfd_getfd", "process_madvise"), ("CAP_SYS_PTRACE",)),
    **dict.fromkeys(("iopl", "ioperm"), ("CAP_SYS_RAWIO",)),
    **dict.fromkeys(("settimeofday", "clock_settime"), ("CAP_SYS_TIME",)),
    "vhangup": ("CAP_SYS_TTY_CONFIG",),
    **dict.fromkeys(
        ("get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"), ("CAP_SYS_NICE",)
    ),
    "open_by_handle_at": ("CAP_DAC_READ_SEARCH",),  # the "shocker" escape walks the host's disk
}

# New namespaces, the user namespace above all: in one of its own a process holds every
# capability, mounts file systems and reaches kernel code no unprivileged user does. Without
# CAP_SYS_ADMIN a sandbox may neither make one nor enter one.
_NEW_NAMESPACES = (
    sc.CLONE_NEWNS
    | sc.CLONE_NEWCGROUP
    | sc.CLONE_NEWUTS
    | sc.CLONE_NEWIPC
    | sc.CLONE_NEWUSER
    | sc.CLONE_NEWPID
    | sc.CLONE_NEWNET
)
NAMESPACES: dict[str, Verdict] = {
    # clone's low byte is the exit signal, so CLONE_NEWTIME (0x80) is unshare's alone.
    "clone": Verdict((Case((Check(0, _NEW_NAMESPACES, any_bit=True),), errno.EPERM),)),
    "unshare": Verdict(
        (Case((Check(0, _NEW_NAMESPACES | sc.CLONE_NEWTIME, any_bit=True),), errno.EPERM),)
    ),
    # clone3's flags are in a struct the filter cannot read: ENOSYS makes glibc fall back to
    # clone, whose flags it can.
    "clone3": Verdict(otherwise=errno.ENOSYS),
}

# personality(2): Linux, 32-bit Linux, the 2.6 uname, both, and the query. The other flags turn
# off ASLR or make data executable, old exploit aids.
_PERSONAS = (0, 0x0008, 0x20000, 0x20008, 0xFFFFFFFF)
PERSONALITY = Verdict(tuple(Case((Check(0, p),), None) for p in _PERSONAS), errno.EPERM)

# Socket families: AF_ALG (the kernel's crypto API) and AF_VSOCK (a VM's channel to its host).
# EAFNOSUPPORT is what a kernel without the family answers, so programs fall back.
AF_NETLINK, NETLINK_AUDIT, AF_ALG, AF_VSOCK = 16, 9, 38, 40
_FAMILIES = tuple(Case((Check(0, f),), errno.EAFNOSUPPORT) for f in (AF_ALG, AF_VSOCK))
SOCKET = Verdict(_FAMILIES)

# "os", as systemd-nspawn boots one: the kernel-wide facilities nspawn keeps from a booted system
# whatever capabilities it holds (bpffs and the perf, fanotify and quota subsystems are not
# namespaced), syslog(2) only with CAP_SYSLOG, and an audit socket answered EAFNOSUPPORT: audit
# does not work in a container, and that answer is how systemd and journald learn to do without.
OS_ALWAYS = (
    *("bpf", "perf_event_open", "fanotify_init", "lookup_dcookie"),
    *("quotactl", "quotactl_fd", "open_by_handle_at"),
)
OS_GATED = {"syslog": ("CAP_SYSLOG",)}
_AUDIT = Case((Check(0, AF_NETLINK), Check(2, NETLINK_AUDIT)), errno.EAFNOSUPPORT)
OS_SOCKET = Verdict((*_FAMILIES, _AUDIT))


def verdicts(
    profile: str,
    capabilities: Iterable[str],
    allow: Iterable[str] = (),
    deny: Iterable[str] = (),
) -> dict[str, Verdict]:
    """Every call the profile does not simply allow, for a sandbox that keeps `capabilities`,
    after the unit's own `allow` (its rules removed) and `deny` (EPERM)."""
    if profile not in PROFILES:
        raise ValueError(f"{profile!r} is not a seccomp profile; the profiles are {PROFILES}")
    kept = frozenset(capabilities)
    rules = dict.fromkeys(ALWAYS, DENY)
    rules.update(_gated(GATED, kept))
    if _ADMIN not in kept:
        rules.update(NAMESPACES)
    rules["personality"] = PERSONALITY
    rules["socket"] = SOCKET
    if profile == "os":
        rules.update(_gated(OS_GATED, kept))
        rules.update(dict.fromkeys(OS_ALWAYS, DENY))
        rules["socket"] = OS_SOCKET
    for name in allow:
        rules.pop(name, None)
    rules.update(dict.fromkeys(deny, DENY))
    return rules


def _gated(gates: Mapping[str, tuple[str, ...]], kept: frozenset[str]) -> dict[str, Verdict]:
    return {name: DENY for name, needs in gates.items() if kept.isdisjoint(needs)}
