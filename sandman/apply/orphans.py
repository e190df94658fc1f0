"""Removing orphans: what a killed apply left with this instance's naming and no record.

Each removal is idempotent: an orphan already gone (a veth that went with its netns when the
cgroup's processes were killed) is success.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable

from sandman.apply import faults
from sandman.apply.context import ApplyContext
from sandman.kernel import scope
from sandman.observe import orphans
from sandman.placement import in_scope
from sandman.plan.actions import Action


def remove(ctx: ApplyContext, action: Action) -> None:
    _REMOVERS[action.object_kind](ctx, action.name)
    faults.step(f"orphan {action.object}: removed")


def _cgroup(ctx: ApplyContext, rel: str) -> None:
    if rel == ctx.cgroups.base and in_scope(rel):
        _release_scope(ctx)
        return
    if ctx.cgroups.exists(rel) or ctx.cgroups.pids(rel):
        ctx.cgroups.kill(rel)
    ctx.cgroups.remove(rel)


def _mount(ctx: ApplyContext, name: str) -> None:
    from sandman.kernel import syscalls as sc

    try:
        sc.umount2(_in_state_dir(ctx, name), sc.MNT_DETACH)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOENT):  # not a mount (any more)
            raise


def _rule(ctx: ApplyContext, name: str) -> None:
    from sandman.kernel import nat, source_filter
    from sandman.kernel.net_facts import ANTISPOOF

    kind, _, owner = name.partition(" ")
    if kind == ANTISPOOF:  # the bridge table's
        source_filter.remove(ctx.paths.tag, owner)
    else:
        nat.remove_rules(ctx.paths.tag, kind, owner)


def _table(ctx: ApplyContext, name: str) -> None:
    from sandman.kernel import nat

    nat.remove_table(ctx.paths.tag)


def _link(ctx: ApplyContext, name: str) -> None:
    from sandman.kernel import links

    links.delete_link(name)


def _in_state_dir(ctx: ApplyContext, name: str) -> str:
    # Never anything outside the state dir, whatever a plan says.
    path = os.path.normpath(os.path.join(ctx.paths.state_dir, name))
    if not path.startswith(ctx.paths.state_dir.rstrip("/") + "/"):
        raise ValueError(f"`{path}` is outside the state dir `{ctx.paths.state_dir}`")
    return path


def _path(ctx: ApplyContext, name: str) -> None:
    path = _in_state_dir(ctx, name)
    if os.path.isdir(path) and not os.path.islink(path):
        import shutil  # with bz2 and lzma, 2.4 ms: only when there is a tree to remove

        shutil.rmtree(path)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


_REMOVERS: dict[str, Callable[[ApplyContext, str], None]] = {
    "cgroup": _cgroup,
    "mount": _mount,
    "rule": _rule,
    "table": _table,
    "link": _link,
    "path": _path,
}


def sweep_cgroups(ctx: ApplyContext) -> None:
    """At the end of an apply: cgroups no record owns any more and that are empty go (a slice's
    old place once its sandboxes moved out; with nothing applied, the instance's own cgroup, so
    that no trace is left). Busy ones stay for the next plan to show as orphans."""
    owned = orphans.owned_cgroups(ctx.records.values())
    children = orphans.children_of(ctx.cgroups)
    base = ctx.cgroups.path()
    for orphan in orphans.cgroup_orphans(base, owned, children):
        if orphan.name == base and in_scope(base):
            if set(ctx.cgroups.pids(base)) <= set(ctx.cgroups.pids(f"{base}/{scope.HOLDER}")):
                _release_scope(ctx)
        elif not ctx.cgroups.pids(orphan.name):
            ctx.cgroups.remove(orphan.name)


def _release_scope(ctx: ApplyContext) -> None:
    """The instance has nothing left in its systemd scope: its holder goes, and systemd removes
    the scope (its cgroup is systemd's to remove). Whatever else still runs there goes first."""
    base = ctx.cgroups.base
    holder = f"{base}/{scope.HOLDER}"
    for child in orphans.children_of(ctx.cgroups)(base) or ():
        if f"{base}/{child}" != holder:
            _cgroup(ctx, f"{base}/{child}")
    scope.release(ctx.cgroups.root, base)
