"""Privileges the init keeps: capability sets, no_new_privs. Run in the init-to-be before exec."""

from __future__ import annotations

from collections.abc import Callable, Iterable

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


Steps = tuple[Callable[[], None], ...]


def steps(
    seccomp: str, capabilities: Iterable[str], no_new_privileges: bool
) -> tuple[Steps, Steps]:
    """What the init (or an exec'd command) does before and after it takes the unit's user: the
    seccomp filter while it still may load one and the bounding set before; the capability sets
    and no_new_privs after."""
    kept = tuple(capabilities)
    before: list[Callable[[], None]] = []
    if seccomp == "default":
        before.append(seccomp_filter.default_filter())
    before.append(lambda: drop_bounding(kept))
    return tuple(before), (lambda: limit_sets(kept, no_new_privileges),)
