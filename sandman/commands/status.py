"""`sandman status [NAME]`: every sandbox, its state and its resource use (no pydantic here).

`restarts` counts the inits the daemon restarted (sandman/daemon/restarts.py); 0 without one.
`exit` is how an exited init ended, when a daemon watched it end (sandman/daemon/exits.py):
no sandman process is an init's parent, so without one it is unknown (null); for a stopped
sandbox, how its init ended as `sandman stop` learned it (apply/init_end.py)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from sandman import output
from sandman.daemon.exits import Exit, read_exits
from sandman.daemon.restarts import read_counts
from sandman.errors import UsageError
from sandman.observe.facts import ActualState, Record
from sandman.observe.gather import gather
from sandman.paths import Paths


def run(args: argparse.Namespace) -> int:
    paths = Paths.resolve(args.state_dir, args.image_dir, args.log_dir)
    actual = gather(paths.state_dir)
    restarts = read_counts(paths.state_dir)
    ends = read_exits(paths.state_dir)
    sandboxes = [
        {
            **sandbox_status(r, actual, paths.tag),
            "restarts": restarts.get(r.name, 0),
            "exit": exit_of(r, ends.get(r.name)),
        }
        for r in sorted_records(actual, "sandbox")
    ]
    if args.name:
        sandboxes = [s for s in sandboxes if s["name"] == args.name]
        if not sandboxes:
            raise UsageError(f"no sandbox {args.name!r} is applied in `{paths.state_dir}`")
    report = {
        "sandboxes": sandboxes,
        "networks": [network_status(r, actual) for r in sorted_records(actual, "network")],
        "slices": [slice_status(r, actual, paths.tag) for r in sorted_records(actual, "slice")],
    }
    if args.json:
        output.print_json(report)
    else:
        sys.stdout.write(render(report))
    return 0


def sorted_records(actual: ActualState, kind: str) -> list[Record]:
    return [actual.records[(kind, name)] for name in sorted(actual.of_kind(kind))]


def sandbox_status(record: Record, actual: ActualState, tag: str) -> dict[str, Any]:
    runtime, declared = record.runtime, record.sandbox
    drift = [str(d) for d in actual.drift.get(record.key, ())]
    running = not record.stopped and not any(d.startswith("init:") for d in drift)
    return {
        "name": record.name,
        "description": declared.description,
        "state": _state(record, running),
        "pid": runtime.pid if running else None,
        "started_at": runtime.started_at,
        "stopped_at": runtime.stopped_at,
        "slice": declared.slice,
        # The slice's real cgroup (the instance's base and the slices above the sandbox).
        "slice_cgroup": _parent(runtime.cgroup),
        "image": declared.image,
        "network": {
            "address": declared.address,
            "address6": declared.address6,
            "ports": [port._asdict() for port in declared.ports],
        },
        "namespaces": list(declared.namespaces),
        "usage": _usage(runtime.cgroup, tag) if running else {},
        "pressure": _pressure(runtime.cgroup, tag) if running else {},
        "drift": drift,
    }


def exit_of(record: Record, end: Exit | None) -> dict[str, Any] | None:
    """How the recorded init ended ({"code": N} or {"signal": NAME}, and "at"): a stopped one as
    the stop learned it, an exited one when a daemon saw it end; None otherwise, and for an end
    of an earlier init."""
    runtime = record.runtime
    if record.stopped:
        if runtime.stop_status is None:
            return None
        from sandman.kernel.pidfd_exit import describe

        return {**describe(runtime.stop_status), "at": runtime.stopped_at}
    if end is None or (end.pid, end.start_time) != (runtime.pid, runtime.start_time):
        return None
    from sandman.kernel.pidfd_exit import describe

    return {**describe(end.status), "at": end.at}


def exit_text(state: str, end: dict[str, Any] | None) -> str:
    """`exited (code 3)`, `exited (SIGKILL)`, `stopped (SIGTERM)`; the state alone when the end
    is unknown."""
    if end is None:
        return state
    how = f"code {end['code']}" if "code" in end else str(end["signal"])
    return f"{state} ({how})"


def _state(record: Record, running: bool) -> str:
    if record.stopped:
        return "stopped"
    if record.tainted:
        return "tainted"
    return "running" if running else "exited"


def _usage(cgroup: object, tag: str) -> dict[str, Any]:
    if not isinstance(cgroup, str):
        return {}
    from sandman.kernel.cgroup import driver_for
    from sandman.placement import cgroup_base

    try:
        return dict(driver_for(cgroup_base(tag)).usage(cgroup))
    except OSError:
        return {}


def _pressure(cgroup: object, tag: str) -> dict[str, Any]:
    """PRESSURE_KEYS, each null where the host keeps no pressure figures (cgroup v1 and hybrid
    hosts, psi=0); {} when the cgroup is gone, as for usage."""
    if not isinstance(cgroup, str):
        return {}
    from sandman.kernel.cgroup import driver_for
    from sandman.placement import cgroup_base

    try:
        return dict(driver_for(cgroup_base(tag)).pressure(cgroup)._asdict())
    except OSError:
        return {}


def network_status(record: Record, actual: ActualState) -> dict[str, Any]:
    network = record.network
    members = [
        r.name for r in sorted_records(actual, "sandbox") if r.sandbox.network == record.name
    ]
    return {
        "name": record.name,
        "bridge": network.bridge,
        "subnet": network.subnet,
        "subnet6": network.subnet6,
        "gateway": network.gateway,
        "nat": network.nat,
        "members": members,
        "drift": [str(d) for d in actual.drift.get(record.key, ())],
    }


def slice_status(record: Record, actual: ActualState, tag: str) -> dict[str, Any]:
    return {
        "name": record.name,
        "path": record.slice.path,
        "cgroup": record.runtime.cgroup,
        "usage": _usage(record.runtime.cgroup, tag),
        "pressure": _pressure(record.runtime.cgroup, tag),
        "drift": [str(d) for d in actual.drift.get(record.key, ())],
    }


def render(report: dict[str, Any]) -> str:
    header = ("NAME", "STATE", "PID", "UPTIME", "SLICE", "ADDRESS", "MEMORY", "IMAGE", "RESTARTS")
    rows = [(*header, "PORTS")]
    for item in report["sandboxes"]:
        rows.append(
            (
                item["name"],
                exit_text(item["state"], item.get("exit")),
                str(item["pid"] or "-"),
                _uptime(item),
                str(item.get("slice_cgroup") or item["slice"]),
                str(item["network"]["address"] or "-"),
                _bytes(item["usage"].get("memory_current")),
                str(item["image"]),
                str(item["restarts"]),
                ",".join(port_text(p) for p in item["network"]["ports"]) or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    for item in report["sandboxes"]:
        lines += [f"  {item['name']}: drift: {d}" for d in item["drift"]]
    if not report["sandboxes"]:
        lines = ["No sandboxes are applied."]
    for network in report["networks"]:
        members = ", ".join(network["members"]) or "no sandbox"
        lines.append(
            f"network {network['name']}: bridge {network['bridge']}, {network['subnet']}, {members}"
        )
    for item in report["slices"]:
        lines.append(
            f"slice {item['name']}: {item['path']}, memory "
            f"{_bytes(item['usage'].get('memory_current'))}"
        )
    return "\n".join(lines) + "\n"


def _uptime(item: dict[str, Any]) -> str:
    if item["state"] != "running" or not item["started_at"]:
        return "-"
    seconds = int(time.time() - float(item["started_at"]))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _parent(cgroup: object) -> str | None:
    return cgroup.rsplit("/", 1)[0] if isinstance(cgroup, str) and "/" in cgroup else None


def port_text(port: dict[str, Any]) -> str:
    address = port.get("host_address") or "*"
    return f"{address}:{port.get('host')}->{port.get('sandbox')}/{port.get('protocol', 'tcp')}"


def _bytes(value: object) -> str:
    return output.size(value) if isinstance(value, int) else "-"
