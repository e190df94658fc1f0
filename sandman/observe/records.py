"""Records under the state dir: one JSON file per applied object, written atomically."""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

from sandman.digest import digest
from sandman.errors import StateError
from sandman.observe.facts import Record

RECORD_VERSION = 1
KIND_DIRS = {"sandbox": "sandboxes", "network": "networks", "slice": "slices"}


def record_of(
    kind: str, name: str, canonical: dict[str, Any], runtime: dict[str, Any] | None = None
) -> Record:
    """The record of an object applied from its canonical form."""
    return Record(kind, name, digest(canonical), canonical, False, runtime or {})


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
    if not isinstance(data, dict) or data.get("version") != RECORD_VERSION:
        raise StateError(
            path, f"is not a version {RECORD_VERSION} record; remove it and apply again"
        )
    try:
        return Record(
            kind=kind,
            name=str(data["name"]),
            digest=str(data["digest"]),
            unit=dict(data["unit"]),
            tainted=bool(data.get("tainted", False)),
            runtime=dict(data.get("runtime", {})),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise StateError(path, f"lacks {exc}; remove it and apply again") from exc


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
        "unit": record.unit,
        "runtime": record.runtime,
    }
    temporary = f"{path}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(json.dumps(data, indent=1, sort_keys=True).encode())
        handle.flush()
        os.fsync(handle.fileno())
    os.rename(temporary, path)


def remove_record(state_dir: str, kind: str, name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(record_path(state_dir, kind, name))
