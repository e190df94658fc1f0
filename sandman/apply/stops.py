"""Stopping a sandbox and starting it again from its record (`sandman stop`, `start`, `restart`).

Stopped is a state of the record, not a process: nothing of the sandbox runs, and the record
(its unit, address, id range) stays, marked so that neither apply nor the daemon starts it. As
`podman stop` releases a container's network namespace and keeps its configuration, a stop takes
everything of the running instance down as a destroy does, the network included: the init (its
stop signal, `stop_timeout`, then every process of its cgroup), the cgroup, the port forwards
(a forward to an address nobody holds would swallow connections), the veth, and the runtime dir
with a non-persistent overlay's files (as a restart by the restart policy does: only
`rootfs.persistent` keeps files). The address stays reserved in the record.
"""

from __future__ import annotations

import os
import time

from sandman.apply import faults, sandboxes
from sandman.apply.context import ApplyContext
from sandman.errors import ApplyError
from sandman.observe.facts import Record, Runtime
from sandman.observe.records import write_record


def stop(ctx: ApplyContext, record: Record) -> Record:
    """Stop the sandbox and keep it recorded, stopped. Marked first: neither the daemon nor an
    apply may start it again while its init goes, and a stop cut short is finished by the next
    one (or apply), since the record then still names what ran (observe's stop drift)."""
    marked = _write(ctx, record._replace(stopped=True, tainted=False))
    faults.step(f"sandbox/{record.name}: record marked stopped")
    status = sandboxes.destroy(ctx, marked, keep_record=True, learn_end=True)
    ended = _ended(marked.runtime, stopped=True)._replace(stop_status=status)
    stopped = _write(ctx, marked._replace(runtime=ended))
    faults.step(f"sandbox/{record.name}: stopped")
    return stopped


def start(ctx: ApplyContext, record: Record) -> Record:
    """Run the recorded unit again through apply's own create (ctx.desired holds it): the same
    network and address, limits, mounts and id range; the record gets the new init.

    Marked running and tainted first: a start cut short is finished by the next apply or daemon
    pass, as a recreate is. What an exited init left (its cgroup, runtime dir) goes before. A
    start that fails leaves the sandbox as it was, stopped or exited, with nothing running."""
    old = sandboxes.taint(ctx, record._replace(stopped=False))
    sandboxes.destroy(ctx, old, keep_record=True)
    try:
        return sandboxes.create(ctx, ctx.desired.sandboxes[record.name])
    except (ApplyError, OSError):
        back = old._replace(tainted=False, stopped=record.stopped)
        _write(ctx, back._replace(runtime=_ended(old.runtime, stopped=record.stopped)))
        raise


def _ended(runtime: Runtime, stopped: bool) -> Runtime:
    """What a record keeps of an instance that is gone: its id range (a persistent sandbox's
    files belong to it, and a start takes it back), root, log and identity, and when it
    started; not its init, namespaces, cgroup nor runtime dir."""
    upper = runtime.upper
    if upper and runtime.runtime_dir and upper.startswith(runtime.runtime_dir + os.sep):
        upper = None
    return runtime._replace(
        pid=0,
        start_time=0,
        keeper_pid=0,
        keeper_start_time=0,
        namespaces={},
        cgroup=None,
        runtime_dir=None,
        upper=upper,
        stopped_at=round(time.time(), 3) if stopped else None,
        stop_status=None,
    )


def _write(ctx: ApplyContext, record: Record) -> Record:
    write_record(ctx.paths.state_dir, record)
    ctx.records[record.key] = record
    ctx.stop_candidates.add(record.name)
    return record
