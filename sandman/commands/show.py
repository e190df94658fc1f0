"""`sandman show NAME`: one sandbox in full, as `machinectl status` shows a machine: what its unit
says, its state, its use, its processes and the last lines of its log (no pydantic here)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from sandman import output
from sandman.commands.status import exit_of, exit_text, port_text, sandbox_status
from sandman.daemon.exits import read_exits
from sandman.daemon.restarts import read_counts
from sandman.errors import UsageError
from sandman.kernel.cgroup_common import BYTE_LIMITS, LIMIT_KEYS
from sandman.observe.gather import gather
from sandman.paths import Paths


def run(args: argparse.Namespace) -> int:
    paths = Paths.resolve(args.state_dir, args.image_dir, args.log_dir)
    actual = gather(paths.state_dir)
    record = actual.records.get(("sandbox", args.name))
    if record is None:
        raise UsageError(f"no sandbox {args.name!r} is applied in `{paths.state_dir}`")
    report = sandbox_status(record, actual, paths.tag)
    declared, runtime = record.sandbox, record.runtime
    report |= {
        "description": declared.description,
        "command": list(declared.command),
        "boot": declared.boot,
        "user": declared.user,
        "rootfs_mode": declared.rootfs_mode,
        "cgroup": runtime.cgroup,
        "limits": {k: v for k, v in declared.resources.items() if k in LIMIT_KEYS},
        "restarts": read_counts(paths.state_dir).get(record.name, 0),
        "exit": exit_of(record, read_exits(paths.state_dir).get(record.name)),
        "processes": _processes(report["pid"]) if report["pid"] else [],
        "log": runtime.log or os.path.join(paths.log_dir, f"{args.name}.log"),
    }
    report["log_tail"] = _tail(report["log"], args.lines)
    if args.json:
        output.print_json(report)
    else:
        sys.stdout.write(render(report))
    return 0


def _processes(init: int) -> list[dict[str, Any]]:
    """The init and its descendants: pid, parent and command line, read from /proc."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            parent = _parent_of(int(entry))
            if parent is not None:
                parents[int(entry)] = parent
    tree = [init]
    for pid in tree:  # grows while it is walked: breadth first
        tree += sorted(child for child, parent in parents.items() if parent == pid)
    return [{"pid": pid, "ppid": parents.get(pid), "command": _command(pid)} for pid in tree]


def _parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()
    return int(fields[1]) if len(fields) > 1 else None


def _command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "?"


def _tail(path: str, lines: int) -> list[str]:
    """The last lines the running (or last) init wrote, after its start's header; read with
    logfile's refusals, so a link planted at the path shows nothing."""
    from sandman.observe import logread

    try:
        opened = logread.open_instance(path, current=True)
    except OSError:  # logfile.LogFileError among them
        return []
    if opened is None:
        return []
    try:
        found, _ = logread.last_lines(opened, lines)
    finally:
        os.close(opened.fd)
    return [line.decode(errors="replace").rstrip("\n") for line in found]


def render(report: dict[str, Any]) -> str:
    title = report["name"] + (f" - {report['description']}" if report["description"] else "")
    rows = [
        ("State", _state(report)),
        (
            "Command",
            " ".join(report["command"]) if not report["boot"] else "the image's init (boot)",
        ),
        ("User", report["user"]),
        ("Image", f"{report['image']} ({report['rootfs_mode']})"),
        ("Slice", f"{report['slice']} (cgroup {report['cgroup'] or 'none: nothing runs'})"),
        ("Address", _addresses(report["network"])),
        ("Ports", ", ".join(port_text(p) for p in report["network"]["ports"]) or "none"),
        ("Limits", _limits(report["limits"])),
        ("Usage", _usage(report["usage"])),
        ("Pressure", pressure_text(report["pressure"])),
        ("Restarts", str(report["restarts"])),
        ("Drift", "; ".join(report["drift"]) or "none"),
    ]
    width = max(len(label) for label, _ in rows)
    lines = [title, *(f"  {label.rjust(width)}: {value}" for label, value in rows)]
    if report["processes"]:
        lines.append("  Processes:")
        lines += [f"    {p['pid']:>7} {p['command']}" for p in report["processes"]]
    lines.append(f"  Log ({report['log']}, last {len(report['log_tail'])} lines):")
    lines += [f"    {line}" for line in report["log_tail"]]
    return "\n".join(lines) + "\n"


def _ended_how(end: dict[str, Any]) -> str:
    return f"exited with code {end['code']}" if "code" in end else f"ended by {end['signal']}"


def _state(report: dict[str, Any]) -> str:
    end: dict[str, Any] | None = report.get("exit")
    if report["state"] == "stopped":
        since = report.get("stopped_at")
        when = _when(since) if since else "?"
        how = "" if end is None else f", its init {_ended_how(end)}"
        return f"stopped since {when}{how}; `sandman start {report['name']}` runs it"
    if report["state"] == "exited":
        if end is None:
            return "exited; how it ended is unknown (only a running `sandman daemon` sees it)"
        return f"{exit_text('exited', end)} at {_when(end['at'])}"
    if report["state"] != "running":
        return str(report["state"])
    since = report.get("started_at")
    return f"running since {_when(since) if since else '?'}, pid {report['pid']}"


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def _addresses(network: dict[str, Any]) -> str:
    found = [a for a in (network.get("address"), network.get("address6")) if a]
    return ", ".join(found) or "none (no network)"


def _limits(limits: dict[str, Any]) -> str:
    shown = [f"{k} {output.size(v) if k in BYTE_LIMITS else v}" for k, v in limits.items() if v]
    return ", ".join(shown) or "none"


def _usage(usage: dict[str, Any]) -> str:
    if not usage:
        return "-"
    memory = usage.get("memory_current")
    cpu = usage.get("cpu_usec")
    parts = [
        f"memory {output.size(memory) if isinstance(memory, int) else '-'}",
        f"cpu {cpu / 1e6:.2f} s" if isinstance(cpu, int) else "cpu -",
        f"pids {usage.get('pids_current', '-')}",
        f"oom kills {usage.get('oom_kills', '-')}",
    ]
    return ", ".join(parts)


def pressure_text(pressure: dict[str, Any]) -> str:
    """`cpu 12.50%, memory 0.00% (full 0.00%), io 1.20% (full 0.80%)`: each resource's
    `some avg10`, with `full` beside it, the share of the last 10 s its tasks stalled waiting."""
    if not pressure:
        return "-"
    if all(value is None for value in pressure.values()):
        return "not kept by this host (cgroup v1, or a kernel with PSI off)"
    parts = []
    for resource in ("cpu", "memory", "io"):
        some = pressure.get(f"{resource}_some_avg10")
        full = pressure.get(f"{resource}_full_avg10")
        text = f"{resource} {_percent(some)}"
        if full is not None:
            text += f" (full {_percent(full)})"
        parts.append(text)
    return ", ".join(parts) + " over 10 s"


def _percent(value: object) -> str:
    return f"{value:.2f}%" if isinstance(value, int | float) else "-"
