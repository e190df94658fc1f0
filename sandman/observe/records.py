"""Records under the state dir: one JSON file per applied object, written atomically.

The one module that writes and reads them. A record keeps the canonical unit as applied (what
its digest hashes and the planner compares key by key) and the runtime facts apply learned;
the rest of sandman reads both through the typed `Record.declared` and `Record.runtime` made
here, with the unit format's defaults applied once.

Versions: a record carries `version`. A reader upgrades every older version it knows to the
current one on read (`_UPGRADES`, one function per step), and refuses a newer one with a
message, never guesses at it. Version 2 added `stopped` (and `file`): a sandman that read a
stopped record as version 1 would take the sandbox for one whose init died, and restart it.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Mapping
from typing import Any

from sandman.atomic_json import write_atomically
from sandman.digest import digest
from sandman.errors import StateError
from sandman.kernel.cgroup_common import LIMIT_KEYS, CgroupLimits
from sandman.observe.facts import (
    Declared,
    IdRanges,
    NetworkDeclared,
    PortDeclared,
    Record,
    Runtime,
    SandboxDeclared,
    SliceDeclared,
)

RECORD_VERSION = 2


def _from_version_1(data: dict[str, Any]) -> dict[str, Any]:
    """Version 1 knew no stopped sandboxes; its records name no unit file."""
    return {**data, "stopped": False, "file": None}


# version -> the function that makes a record of that version one of the next.
_UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _from_version_1}
KIND_DIRS = {"sandbox": "sandboxes", "network": "networks", "slice": "slices"}


def record_of(
    kind: str,
    name: str,
    canonical: dict[str, Any],
    runtime: Runtime | None = None,
    file: str | None = None,
) -> Record:
    """The record of an object applied from its canonical form (from the unit file `file`,
    kept absolute: errors of a later `sandman start` name it from wherever that runs)."""
    facts, declared = runtime or Runtime(), declared_of(kind, canonical)
    path = None if file is None else os.path.abspath(file)
    return Record(kind, name, digest(canonical), canonical, False, facts, declared, file=path)


def record_path(state_dir: str, kind: str, name: str) -> str:
    return os.path.join(state_dir, KIND_DIRS[kind], f"{name}.json")


def read_records(state_dir: str) -> list[Record]:
    """Every record of the state dir; a missing state dir means nothing was applied yet."""
    records: list[Record] = []
    for kind, subdir in KIND_DIRS.items():
        directory = os.path.join(state_dir, subdir)
        try:
            entries = sorted(os.listdir(directory))
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise StateError(directory, f"cannot be listed ({exc.strerror})") from exc
        records.extend(
            _read(os.path.join(directory, e), kind) for e in entries if e.endswith(".json")
        )
    return records


def _read(path: str, kind: str) -> Record:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as exc:
        raise StateError(path, f"cannot be read ({exc}); remove it and apply again") from exc
    if not isinstance(data, dict) or not isinstance(data.get("version"), int):
        raise StateError(path, "is not a sandman record; remove it and apply again")
    if data["version"] > RECORD_VERSION:
        raise StateError(
            path,
            f"is a version {data['version']} record, newer than this sandman reads "
            f"({RECORD_VERSION}); run the sandman that wrote it",
        )
    try:
        while data["version"] < RECORD_VERSION:
            data = {**_UPGRADES[data["version"]](data), "version": data["version"] + 1}
        unit = dict(data["unit"])
        return Record(
            kind=kind,
            name=str(data["name"]),
            digest=str(data["digest"]),
            unit=unit,
            tainted=bool(data.get("tainted", False)),
            runtime=runtime_of(dict(data.get("runtime", {}))),
            declared=declared_of(kind, unit),
            stopped=bool(data.get("stopped", False)),
            file=_str(data.get("file")),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise StateError(path, f"is damaged ({exc!r}); remove it and apply again") from exc


def runtime_of(data: Mapping[str, Any]) -> Runtime:
    """The typed runtime facts of a record's JSON (absent ones keep their defaults)."""
    idmap = data.get("idmap")
    return Runtime(
        pid=int(data.get("pid") or 0),
        start_time=int(data.get("start_time") or 0),
        started_at=_float(data.get("started_at")),
        stopped_at=_float(data.get("stopped_at")),
        stop_status=None if data.get("stop_status") is None else int(data["stop_status"]),
        cgroup=_str(data.get("cgroup")),
        namespaces={str(k): int(v) for k, v in (data.get("namespaces") or {}).items()},
        runtime_dir=_str(data.get("runtime_dir")),
        rootfs=_str(data.get("rootfs")),
        upper=_str(data.get("upper")),
        log=_str(data.get("log")),
        idmap=None if not idmap else IdRanges(_ranges(idmap.get("uid")), _ranges(idmap.get("gid"))),
        auto_ids=None if data.get("auto_ids") is None else int(data["auto_ids"]),
        environment={str(k): str(v) for k, v in (data.get("environment") or {}).items()},
        user=_str(data.get("user")),
        bridge=_str(data.get("bridge")),
        keeper_pid=int(data.get("keeper_pid") or 0),
        keeper_start_time=int(data.get("keeper_start_time") or 0),
    )


def _runtime_json(runtime: Runtime) -> dict[str, Any]:
    """The JSON of runtime facts: only those that are set."""
    data = {k: v for k, v in runtime._asdict().items() if v not in (None, 0, {}, ())}
    if runtime.stop_status is not None:  # 0 is an exit with code 0, not nothing
        data["stop_status"] = runtime.stop_status
    if runtime.idmap is not None:
        data["idmap"] = {"uid": runtime.idmap.uid, "gid": runtime.idmap.gid}
    for key in ("namespaces", "environment"):
        if key in data:
            data[key] = dict(data[key])
    return data


def declared_of(kind: str, unit: Mapping[str, Any]) -> Declared:
    """The typed view of a canonical unit of `kind` (see units/desired.py for its shape)."""
    resolved = unit.get("resolved") or {}
    if kind == "network":
        network = unit.get("network") or {}
        return NetworkDeclared(
            subnet=str(network.get("subnet") or "0.0.0.0/32"),
            subnet6=_str(network.get("subnet6")),
            nat=bool(network.get("nat")),
            bridge=_str(resolved.get("bridge")),
            gateway=_str(resolved.get("gateway")),
            gateway6=_str(resolved.get("gateway6")),
        )
    if kind == "slice":
        return SliceDeclared(
            limits=dict(unit.get("slice") or {}), path=str(resolved.get("path", ""))
        )
    return sandbox_declared(unit)


def sandbox_declared(unit: Mapping[str, Any]) -> SandboxDeclared:
    """The typed view of a canonical sandbox unit: a record's, or one apply is about to run."""
    resolved = unit.get("resolved") or {}
    sandbox = unit.get("sandbox") or {}
    rootfs = unit.get("rootfs") or {}
    security = unit.get("security") or {}
    network = unit.get("network") or {}
    capabilities = security.get("capabilities", "default")
    return SandboxDeclared(
        description=_str(sandbox.get("description")),
        command=tuple(str(word) for word in sandbox.get("command") or ()),
        boot=bool(sandbox.get("boot")),
        machine_id=_str(resolved.get("machine_id")),
        user=str(sandbox.get("user") or "0:0"),
        working_directory=str(sandbox.get("working_directory") or "/"),
        environment={str(k): str(v) for k, v in (sandbox.get("environment") or {}).items()},
        restart=str(sandbox.get("restart") or "no"),
        stop_timeout=str(sandbox.get("stop_timeout") or "5s"),
        stop_signal=_str(sandbox.get("stop_signal")),
        slice=_str(sandbox.get("slice")),
        image=_str(rootfs.get("image") or rootfs.get("path")),
        rootfs_mode=str(rootfs.get("mode") or "overlay"),
        namespaces=tuple(sorted(k for k, v in (unit.get("namespaces") or {}).items() if v)),
        mount_targets=tuple(
            str(m["target"])
            for m in unit.get("mount") or ()
            if isinstance(m, dict) and m.get("target")
        ),
        resources=dict(unit.get("resources") or {}),
        capabilities=capabilities if isinstance(capabilities, str) else tuple(capabilities),
        seccomp=str(security.get("seccomp") or "default"),
        syscalls_allow=tuple(str(name) for name in security.get("syscalls_allow") or ()),
        syscalls_deny=tuple(str(name) for name in security.get("syscalls_deny") or ()),
        no_new_privileges=bool(security.get("no_new_privileges", True)),
        network=_str(network.get("attach")),
        ports=tuple(_port(port) for port in network.get("ports") or ()),
        address=_str(resolved.get("address")),
        address6=_str(resolved.get("address6")),
        veth=_str(resolved.get("veth")),
        slice_path=str(resolved.get("slice_path") or resolved.get("path") or ""),
    )


def cgroup_limits_of(table: Mapping[str, Any]) -> CgroupLimits:
    """Recorded limits (a sandbox's resources, a slice's: JSON, cpu_max may be "50%") as the
    cgroup drivers take them."""
    values = {key: table.get(key) for key in LIMIT_KEYS}
    cpu = values["cpu_max"]
    values["cpu_max"] = float(str(cpu).rstrip("%")) if cpu is not None else None
    return CgroupLimits(**values)


def _port(port: Mapping[str, Any]) -> PortDeclared:
    return PortDeclared(
        host=int(port["host"]),
        sandbox=int(port["sandbox"]),
        protocol=str(port.get("protocol") or "tcp"),
        host_address=_str(port.get("host_address")),
    )


def _str(value: object) -> str | None:
    return None if value is None else str(value)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _ranges(lines: Any) -> tuple[tuple[int, int, int], ...]:
    return tuple((int(a), int(b), int(c)) for a, b, c in lines or ())


def write_record(state_dir: str, record: Record) -> None:
    """Write to a temporary file, fsync, rename: a reader sees the old record or the new one."""
    path = record_path(state_dir, record.kind, record.name)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    data: dict[str, Any] = {
        "version": RECORD_VERSION,
        "kind": record.kind,
        "name": record.name,
        "digest": record.digest,
        "tainted": record.tainted,
        "stopped": record.stopped,
        "file": record.file,
        "unit": record.unit,
        "runtime": _runtime_json(record.runtime),
    }
    write_atomically(path, data, indent=1)


def remove_record(state_dir: str, kind: str, name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(record_path(state_dir, kind, name))
