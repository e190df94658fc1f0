"""gather(): the only entry point of observe; reads the host once per run."""

from __future__ import annotations

from sandman.observe.facts import ActualState
from sandman.observe.records import read_records


def gather(state_dir: str) -> ActualState:
    records = {record.key: record for record in read_records(state_dir)}
    return ActualState(records=records)
