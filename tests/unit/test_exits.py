"""How inits ended, as the daemon keeps it and `status` shows it."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from sandman.commands.status import exit_of, exit_text
from sandman.daemon.exits import Exit, read_exits, write_exits
from sandman.kernel.pidfd_exit import describe
from sandman.observe.facts import Runtime
from sandman.observe.records import record_of


def test_exits_are_kept_and_a_damaged_file_reads_as_none(tmp_path: Path) -> None:
    kept = {"web": Exit(pid=10, start_time=20, status=3 << 8, at=1.5)}
    write_exits(str(tmp_path), kept)
    assert read_exits(str(tmp_path)) == kept
    (tmp_path / "daemon" / "exits.json").write_text("{")
    assert read_exits(str(tmp_path)) == {}


def test_wait_statuses_read_as_a_code_or_a_signal() -> None:
    assert describe(3 << 8) == {"code": 3}
    assert describe(signal.SIGKILL) == {"signal": "SIGKILL"}
    assert os.WIFSIGNALED(signal.SIGKILL)


def test_status_shows_an_end_only_for_the_init_it_records() -> None:
    runtime = Runtime(pid=10, start_time=20)
    record = record_of("sandbox", "web", {"sandbox": {"command": ["x"]}}, runtime)
    end = exit_of(record, Exit(10, 20, 3 << 8, 1.5))
    assert end == {"code": 3, "at": 1.5}
    assert exit_of(record, Exit(10, 19, 3 << 8, 1.5)) is None  # an earlier init of that PID
    assert exit_of(record, None) is None
    assert exit_text("exited", end) == "exited (code 3)"
    assert exit_text("exited", {"signal": "SIGTERM"}) == "exited (SIGTERM)"
    assert exit_text("exited", None) == "exited"
