"""Privileges the init keeps: capability sets, no_new_privs. Run in the init-to-be before exec."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from sandman.capabilities import CAPABILITIES
from sandman.kernel import seccomp as seccomp_filter
from sandman.kernel import syscalls as sc

LAST_CAP = max(CAPABILITIES.values())


def restrict(capabilities: Iterable[str], no_new_privileges: bool) -> None:
    """Drop every capability not kept from the bounding set, then set effective, permitted and
    inheritable to the kept ones and clear the ambient set: nothing dropped can come back, not
    even through a setuid or file-capability binary."""
    keep = sc.cap_mask(capabilities)
    for number in range(LAST_CAP + 1):
        if not keep >> number & 1 and sc.prctl(sc.PR_CAPBSET_READ, number) == 1:
            sc.prctl(sc.PR_CAPBSET_DROP, number)
    sc.prctl(sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_CLEAR_ALL)
    current = sc.capget()
    sc.capset(current.effective & keep, current.permitted & keep, current.inheritable & keep)
    if no_new_privileges:
        sc.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)


def steps(
    seccomp: str, capabilities: Iterable[str], no_new_privileges: bool
) -> tuple[Callable[[], None], ...]:
    """What the init (or an exec'd command) does last before exec: the seccomp filter while it
    still may load one, then the capabilities it keeps."""
    kept = tuple(capabilities)
    loaders: list[Callable[[], None]] = []
    if seccomp == "default":
        loaders.append(seccomp_filter.default_filter())
    loaders.append(lambda: restrict(kept, no_new_privileges))
    return tuple(loaders)
