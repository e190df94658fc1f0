"""bench/summary.py's table file: the host's part and the pure v2 guest's part of RESULTS.md are
written apart, each keeping the other; a run of some modules lists only their rows. No timing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
if str(BENCH) not in sys.path:
    sys.path.append(str(BENCH))  # appended: bench's module names shadow nothing installed

import summary  # noqa: E402

HOST = summary.markdown(["Measured on the host."], [["host row"]], ["[1] a host note"], guest=False)
GUEST = summary.markdown(["Measured in the guest."], [["guest row"]], [], guest=True)


def test_writing_one_part_keeps_the_other(tmp_path: Path) -> None:
    out = tmp_path / "RESULTS.md"
    summary.write_part(str(out), HOST, guest=False)
    assert out.read_text() == HOST
    summary.write_part(str(out), GUEST, guest=True)
    assert summary.split_parts(out.read_text()) == (HOST + "\n", GUEST)
    newer = HOST.replace("host row", "newer host row")
    summary.write_part(str(out), newer, guest=False)
    assert summary.split_parts(out.read_text()) == (newer + "\n", GUEST)
    newer_guest = GUEST.replace("guest row", "newer guest row")
    summary.write_part(str(out), newer_guest, guest=True)
    assert summary.split_parts(out.read_text()) == (newer + "\n", newer_guest)


def test_a_guest_part_alone_is_a_file_of_its_own(tmp_path: Path) -> None:
    out = tmp_path / "RESULTS.md"
    summary.write_part(str(out), GUEST, guest=True)
    assert out.read_text() == GUEST
    assert summary.split_parts(GUEST) == ("", GUEST)
    assert summary.GUEST_HEADING in GUEST and "# Benchmark results" not in GUEST


def test_a_run_of_some_modules_lists_their_rows_only(tmp_path: Path) -> None:
    results = tmp_path / "results.jsonl"
    cells = ["`apply` of 50", "1 s", "50 x crun 2 s", "0.50x 50 x crun", "<= 1x", "met"]
    results.write_text(json.dumps({"key": "apply_50", "cells": cells, "note": ""}) + "\n")
    body, _, missed = summary.rows(str(results), ["spawn"])
    spawn_rows = [key for key, module in summary.EXPECTED if module == "spawn"]
    assert len(body) == len(spawn_rows) and cells in body and not missed
    everything, _, _ = summary.rows(str(results))
    assert len(everything) == len(summary.EXPECTED)
