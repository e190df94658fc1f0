"""Where an instance's cgroups live: its own tree, or a scope systemd delegated to it.

Without systemd (this project's test machines, CI, containers) sandman keeps its own tree right
under the cgroup root, `sandman` (`sandman-TAG` for another instance). On a host run by systemd
the tree is systemd's, and only what it delegates belongs to others: there the instance's
cgroups live in a transient scope, `machine.slice/sandman.scope` (`sandman-TAG.scope`), beside
nspawn's and podman's machines, shown by `systemd-cgls` and `systemctl status sandman.scope`.

A scope rather than the service's own delegated cgroup: systemd (before 254's DelegateSubgroup=)
starts a service's main process at the top of its cgroup, which v2 refuses (EBUSY) once that
cgroup enables controllers for the sandboxes below it, so `systemctl restart sandman` would fail
with the sandboxes running; and a scope serves the command line as well as the daemon.
"""

from __future__ import annotations

import os

from sandman.units.names import DEFAULT_TAG, cgroup_root

SYSTEMD_SLICE = "machine.slice"
_SYSTEMD_BOOTED = "/run/systemd/system"
_PURE_V2 = "/sys/fs/cgroup/cgroup.controllers"


def systemd_booted() -> bool:
    """Whether systemd is PID 1 (sd_booted's test), so that the cgroup tree is its."""
    return os.path.isdir(_SYSTEMD_BOOTED)


def systemd_scoped() -> bool:
    """Whether the instances live in systemd scopes: systemd runs the host on pure cgroup v2.
    On a v1 or hybrid host systemd runs, sandman keeps its own trees, as before: the v1 driver
    would find the scope in each hierarchy, but its holder would stand in one."""
    return systemd_booted() and os.path.isfile(_PURE_V2)


def scope_unit(tag: str) -> str:
    return "sandman.scope" if tag == DEFAULT_TAG else f"sandman-{tag}.scope"


def cgroup_base(tag: str) -> str:
    """The instance's top cgroup, relative to the cgroup root."""
    if systemd_scoped():
        return f"{SYSTEMD_SLICE}/{scope_unit(tag)}"
    return cgroup_root(tag)


def in_scope(base: str) -> bool:
    """Whether `base` is a systemd scope (made with a holder) rather than sandman's own tree."""
    return base.endswith(".scope")
