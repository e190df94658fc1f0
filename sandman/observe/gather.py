"""gather(): the only entry point of observe; reads the host once per run."""

from __future__ import annotations

from sandman.observe import procs
from sandman.observe.facts import ActualState, Drift, ObjectKey, Record
from sandman.observe.records import read_records


def gather(state_dir: str) -> ActualState:
    records = {record.key: record for record in read_records(state_dir)}
    drift: dict[ObjectKey, tuple[Drift, ...]] = {}
    for key, record in records.items():
        if record.kind == "sandbox":
            found = tuple(_sandbox_drift(record))
            if found:
                drift[key] = found
    return ActualState(records=records, drift=drift)


def _sandbox_drift(record: Record) -> list[Drift]:
    pid = int(record.runtime.get("pid", 0))
    if not procs.is_running(pid, int(record.runtime.get("start_time", 0))):
        return [Drift("init", f"running as pid {pid}", "exited")]
    return []
