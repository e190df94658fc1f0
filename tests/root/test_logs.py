"""`sandman logs` over a sandbox's starts (issue #17): each start a file of its own beginning with
its start time, earlier ones rotated and bounded, --tail, --since, --timestamps, --json and a
follow that goes on into the next start. Checked from outside: the log dir's files and what the
verb prints, run as a user runs it."""

from __future__ import annotations

import calendar
import json
import os
import re
import signal
import subprocess
import time

import pytest
import test_sandboxes as base
from test_sandboxes import Sandman, sm, unit, wait_for

pytestmark = pytest.mark.root

busybox_image = base.busybox_image
__all__ = ["busybox_image", "sm"]  # fixtures, used by name

HEADER = re.compile(r"-- sandman: talker started (\d{4}-\d\d-\d\dT[\d:.]+Z) --\n")
STAMPED = re.compile(r"^talker\.log\.\d{8}T\d{6}\.\d{6}Z$")


def talker(run: int) -> str:
    """A sandbox that says which run it is, twice, then waits; a new `run` recreates it."""
    script = "echo run-$RUN line-1; echo run-$RUN line-2 >&2; exec sleep 1000"
    return unit(command=("sh", "-c", script), sandbox=f'environment = {{ RUN = "{run}" }}')


def start_run(sm: Sandman, run: int) -> None:
    sm.write("talker", talker(run))
    sm.apply()
    current = sm.log_dir / "talker.log"
    wait_for(lambda: f"run-{run} line-2" in current.read_text(), f"run {run}'s output")


def rotated(sm: Sandman) -> list[str]:
    return sorted(p.name for p in sm.log_dir.iterdir() if p.name != "talker.log")


def test_each_start_gets_a_file_of_its_own_and_logs_reads_them_in_order(sm: Sandman) -> None:
    before = time.time()
    start_run(sm, 1)
    start_run(sm, 2)
    current = (sm.log_dir / "talker.log").read_text()
    header = HEADER.match(current)
    assert header, current
    # The header is apply's, written before the init ran: its time is the start's.
    started = calendar.timegm(time.strptime(header[1][:19], "%Y-%m-%dT%H:%M:%S"))
    assert before - 1 <= started <= time.time()
    assert "run-1" not in current
    (old,) = rotated(sm)
    assert STAMPED.match(old) and "run-1 line-1" in (sm.log_dir / old).read_text()

    lines = sm.run("logs", "talker").out.splitlines()
    assert sorted(lines[:2]) == ["run-1 line-1", "run-1 line-2"], lines
    assert sorted(lines[2:]) == ["run-2 line-1", "run-2 line-2"], lines
    assert len(sm.run("logs", "talker", "-n", "3").out.splitlines()) == 3
    assert sm.run("logs", "talker", "--tail", "0").out == ""

    stamped = sm.run("logs", "talker", "--timestamps").out.splitlines()
    markers = [line for line in stamped if line.startswith("-- talker started ")]
    assert len(markers) == 2 and markers[1].endswith("(current) --"), stamped
    assert f"({old})" in markers[0]

    objects = [json.loads(line) for line in sm.run("logs", "talker", "--json").out.splitlines()]
    assert {o["line"] for o in objects} >= {"run-1 line-1", "run-2 line-2"}
    assert {o["file"] for o in objects} == {str(sm.log_dir / old), str(sm.log_dir / "talker.log")}


def test_since_leaves_out_the_starts_that_wrote_before_it(sm: Sandman) -> None:
    start_run(sm, 1)
    os.utime(sm.log_dir / "talker.log", (time.time() - 3600, time.time() - 3600))
    start_run(sm, 2)
    recent = sm.run("logs", "talker", "--since", "10min").out
    assert "run-2 line-1" in recent and "run-1" not in recent, recent
    assert "run-1 line-1" in sm.run("logs", "talker", "--since", "2h").out
    bad = sm.run("logs", "talker", "--since", "yesterday", expect=2)
    assert bad.err.startswith("usage: sandman logs") and "--since" in bad.err, bad


def test_a_restarted_init_starts_a_new_file_and_old_ones_are_bounded(sm: Sandman) -> None:
    script = "echo pid-$$-of-this-start; exec sleep 1000"
    sm.write("talker", unit(command=("sh", "-c", script), sandbox='restart = "always"'))
    sm.apply()
    for _ in range(7):
        wait_for(lambda: "of-this-start" in (sm.log_dir / "talker.log").read_text(), "output")
        os.kill(sm.running_init("talker"), signal.SIGKILL)
        wait_for(lambda: not base.alive(*sm.init("talker")) or None, "the init's end")
        sm.apply()
    assert len(rotated(sm)) == 5, rotated(sm)  # the last five earlier starts
    wait_for(lambda: "of-this-start" in (sm.log_dir / "talker.log").read_text(), "output")
    stamped = sm.run("logs", "talker", "-t").out
    assert stamped.count("-- talker started ") == 6, stamped


def test_follow_goes_on_into_the_next_start(sm: Sandman) -> None:
    start_run(sm, 1)
    argv = sm.argv("logs", "talker", "--follow", "--timestamps", "--tail", "1")
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as follower:
        try:
            assert follower.stdout is not None
            seen = [follower.stdout.readline(), follower.stdout.readline()]
            assert seen[0].startswith("-- talker started ") and "run-1" in seen[1], seen
            start_run(sm, 2)
            seen = [follower.stdout.readline() for _ in range(3)]
        finally:
            follower.terminate()
    assert seen[0].startswith("-- talker started ") and seen[0].endswith("(current) --\n"), seen
    # Lines read while following carry the time the file was written.
    assert all(re.match(r"\d{4}-\d\d-\d\dT[\d:.]+Z run-2 line-\d\n", s) for s in seen[1:]), seen


def test_a_log_dir_without_the_sandbox_says_so(sm: Sandman) -> None:
    missing = sm.run("logs", "nobody", expect=2)
    assert "no log for 'nobody'" in missing.err and "Traceback" not in missing.err, missing
