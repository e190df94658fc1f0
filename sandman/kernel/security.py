"""Privileges the init keeps: capability sets, no_new_privs. Run in the init-to-be before exec."""

# No `from __future__ import annotations`: typing compiles each string annotation of a
# NamedTuple when the class is made (about 0.1 ms a field, at every start).
import os
from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple

from sandman.capabilities import CAPABILITIES
from sandman.kernel import seccomp as seccomp_filter
from sandman.kernel import syscalls as sc

LAST_CAP = max(CAPABILITIES.values())


def drop_bounding(capabilities: Iterable[str]) -> None:
    """Drop every capability not kept from the bounding set and clear the ambient set: nothing
    dropped can come back, not even through a setuid or file-capability binary. Done while still
    root of the namespace (it needs CAP_SETPCAP), before the switch to the unit's user."""
    keep = sc.cap_mask(capabilities)
    for number in range(LAST_CAP + 1):
        if not keep >> number & 1 and sc.prctl(sc.PR_CAPBSET_READ, number) == 1:
            sc.prctl(sc.PR_CAPBSET_DROP, number)
    sc.prctl(sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_CLEAR_ALL)


def limit_sets(capabilities: Iterable[str], no_new_privileges: bool) -> None:
    """Effective, permitted and inheritable reduced to the kept ones (a user other than root has
    none left after its switch), then no_new_privs."""
    keep = sc.cap_mask(capabilities)
    current = sc.capget()
    sc.capset(current.effective & keep, current.permitted & keep, current.inheritable & keep)
    if no_new_privileges:
        sc.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)


class CapabilitySets(NamedTuple):
    """The five sets of an OCI process, by name; `bounding` is dropped to before the user."""

    bounding: tuple[str, ...] = ()
    effective: tuple[str, ...] = ()
    permitted: tuple[str, ...] = ()
    inheritable: tuple[str, ...] = ()
    ambient: tuple[str, ...] = ()


def keep_capabilities() -> None:
    """Keep the permitted set across the switch to a user other than root (PR_SET_KEEPCAPS), so
    that set_exact can give that user the sets it is meant to hold."""
    sc.prctl(sc.PR_SET_KEEPCAPS, 1)


def set_exact(sets: CapabilitySets, no_new_privileges: bool) -> None:
    """Effective, permitted and inheritable exactly as given (within what the process still
    holds), then the ambient ones raised (each must be permitted and inheritable), then
    no_new_privs. After the switch to the process's user."""
    sc.capset(
        sc.cap_mask(sets.effective), sc.cap_mask(sets.permitted), sc.cap_mask(sets.inheritable)
    )
    sc.prctl(sc.PR_SET_KEEPCAPS, 0)
    for name in sets.ambient:
        sc.prctl(sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_RAISE, CAPABILITIES[name])
    if no_new_privileges:
        sc.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)


Steps = tuple[Callable[[], None], ...]

# What every process of a sandbox finds in its environment unless its unit says otherwise.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Confinement(NamedTuple):
    """Who a process of a sandbox is and what holds it. The init and every command `exec` runs
    take the same one: apply/confinement.py makes both from the same recorded unit."""

    uid: int = 0
    gid: int = 0
    working_directory: str = "/"
    # The defaults (PATH, HOME, container) under the unit's; the init adds HOSTNAME and exec
    # TERM below these, so that a unit may set either.
    environment: Mapping[str, str] = {}
    setup_inside: Steps = ()  # before the switch to the user: seccomp, bounding set
    finish_inside: Steps = ()  # after it: capability sets, no_new_privs
    groups: tuple[int, ...] = ()  # supplementary groups (an OCI process's additionalGids)

    def take(self) -> None:
        """In the process to confine, root of the sandbox's namespaces still: the working
        directory, the steps before the user, the user, the steps after."""
        for setup in self.setup_inside:
            setup()
        os.setgroups(list(self.groups))
        os.setresgid(self.gid, self.gid, self.gid)
        os.setresuid(self.uid, self.uid, self.uid)
        for finish in self.finish_inside:
            finish()


def steps(
    seccomp: seccomp_filter.Seccomp, capabilities: Iterable[str], no_new_privileges: bool
) -> tuple[Steps, Steps]:
    """What the init (or an exec'd command) does before and after it takes the unit's user: the
    seccomp filter while it still may load one and the bounding set before; the capability sets
    and no_new_privs after. The filter is built here, before the fork, for the kept set."""
    kept = tuple(capabilities)
    before: list[Callable[[], None]] = []
    load = seccomp_filter.loader(seccomp, kept)
    if load is not None:
        before.append(load)
    before.append(lambda: drop_bounding(kept))
    return tuple(before), (lambda: limit_sets(kept, no_new_privileges),)
