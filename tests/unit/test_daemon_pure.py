"""The daemon's parts that need no root: sd_notify messages, journal lines, backoff and restart
counts, the schedule of passes, inotify parsing, the watcher on real fds (inotify on a temporary
directory, a pidfd on a child of the test, a signal to the test itself), the last good copy of
the unit files, the command line, and the systemd files under contrib/systemd.

No assertion is about time: the schedule is fed explicit times, and the waits on real fds are
guards against hanging.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandman.cli import build_parser
from sandman.daemon import lastgood, notify, restarts
from sandman.daemon.journal import Journal, JournalProgress, lines
from sandman.daemon.schedule import MAX_DEFER, Pass, Schedule
from sandman.daemon.watch import Event, Init, Watcher, parse_inotify, unit_event
from sandman.kernel import syscalls as sc

REPO = Path(__file__).resolve().parents[2]
SERVICE = REPO / "contrib" / "systemd" / "sandman.service"
TMPFILES = REPO / "contrib" / "systemd" / "sandman.conf"
IN_CI = bool(os.environ.get("SANDMAN_CI") or os.environ.get("CI"))
GUARD = 10.0  # seconds: a guard against hanging


# ---------------------------------------------------------------------------------------------
# sd_notify


def test_notify_socket_address_path_and_abstract() -> None:
    assert notify.socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert notify.socket_address("@sandman/test") == b"\0sandman/test"


def test_notify_message_is_one_line_per_field() -> None:
    assert notify.message(READY=1, STATUS="2 running") == b"READY=1\nSTATUS=2 running"
    # A value may not start a line of its own: that would be a field of its own.
    assert notify.message(STATUS="a\nREADY=1") == b"STATUS=a READY=1"


def _bound(address: str | bytes) -> socket.socket:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(address)
    server.settimeout(GUARD)
    return server


def test_notifier_sends_datagrams_to_a_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "notify")
    with _bound(path) as server:
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        notifier = notify.Notifier.from_environment()
        notifier.send(READY=1, STATUS="ok")
        notifier.send(STOPPING=1)
        notifier.close()
        assert server.recv(4096) == b"READY=1\nSTATUS=ok"
        assert server.recv(4096) == b"STOPPING=1"


def test_notifier_reaches_an_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"sandman-test-{os.getpid()}"
    with _bound(b"\0" + name.encode()) as server:
        monkeypatch.setenv("NOTIFY_SOCKET", f"@{name}")
        notifier = notify.Notifier.from_environment()
        notifier.send(READY=1)
        notifier.close()
        assert server.recv(4096) == b"READY=1"


def test_notifier_without_systemd_or_with_systemd_gone_is_quiet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notify.Notifier.from_environment().send(READY=1)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    gone = notify.Notifier.from_environment()
    gone.send(READY=1)  # no exception: the daemon must not die with systemd's socket
    gone.close()


# ---------------------------------------------------------------------------------------------
# Journal lines


def test_journal_lines_carry_a_priority_each() -> None:
    assert lines(3, "a.sandbox.toml:2: x: bad\nb.sandbox.toml:1: y: bad\n") == (
        "<3>a.sandbox.toml:2: x: bad\n<3>b.sandbox.toml:1: y: bad\n"
    )
    assert lines(6, "\n  \n") == ""


def test_journal_progress_maps_events_to_priorities(tmp_path: Path) -> None:
    with open(tmp_path / "log", "w+") as stream:
        progress = JournalProgress(Journal(stream))
        progress.begin(1)
        progress.start("+ sandbox/web: create")
        progress.done("+ sandbox/web: create", 0.012)
        progress.failed("+ sandbox/db: create", OSError(2, "No such file"))
        progress.note("a warning")
        stream.seek(0)
        written = stream.read().splitlines()
    assert written == [
        "<7>1 actions to run",
        "<7>+ sandbox/web: create ...",
        "<6>+ sandbox/web: create: done in 12 ms",
        "<3>+ sandbox/db: create: FAILED: [Errno 2] No such file",
        "<5>a warning",
    ]


# ---------------------------------------------------------------------------------------------
# Backoff and restart counts


def test_delay_doubles_from_a_tenth_of_a_second_up_to_thirty() -> None:
    assert [restarts.delay(n) for n in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2]
    assert restarts.delay(9) == restarts.MAX_DELAY == 30.0
    assert restarts.delay(10_000) == 30.0


def test_backoff_grows_while_inits_keep_dying_and_resets_once_one_stays_up() -> None:
    backoff = restarts.Backoff()
    now = 1000.0
    waits = []
    for _ in range(4):  # each init dies right after it came up
        wait = backoff.next_delay("web", now)
        waits.append(wait)
        now += wait
        backoff.up("web", now)
        now += 0.5
    assert waits == [0.1, 0.2, 0.4, 0.8]
    now += restarts.STABLE_AFTER  # this one stayed up
    assert backoff.next_delay("web", now) == 0.1
    assert backoff.next_delay("db", now) == 0.1  # streaks are per sandbox


def test_backoff_keeps_growing_while_restarts_fail() -> None:
    """No init comes up: the next attempts wait longer, however much time passes between."""
    backoff = restarts.Backoff()
    waits = [backoff.next_delay("web", 100.0 * attempt) for attempt in range(3)]
    assert waits == [0.1, 0.2, 0.4]
    backoff.forget("web")
    assert backoff.next_delay("web", 1000.0) == 0.1


def test_restart_counts_round_trip_and_tolerate_damage(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    assert restarts.read_counts(state) == {}
    restarts.write_counts(state, {"web": 2, "db": 1})
    assert restarts.read_counts(state) == {"web": 2, "db": 1}
    assert not os.path.exists(restarts.counts_path(state) + ".tmp")
    Path(restarts.counts_path(state)).write_text("{not json")
    assert restarts.read_counts(state) == {}
    restarts.write_counts(state, {})
    assert not os.path.exists(restarts.counts_path(state))


# ---------------------------------------------------------------------------------------------
# The schedule


def test_unit_changes_are_debounced_into_one_full_pass() -> None:
    schedule = Schedule(drift_interval=0, debounce=0.2, now=0.0)
    assert schedule.timeout(0.0) is None
    schedule.units_changed(1.0, "web.sandbox.toml")
    schedule.units_changed(1.1, "web.sandbox.toml")
    assert schedule.due(1.25) == []  # 1.1 + 0.2 is not reached yet
    assert schedule.timeout(1.25) == pytest.approx(0.05)
    assert schedule.due(1.3) == [Pass("unit files changed (web.sandbox.toml)")]
    assert schedule.due(10.0) == []


def test_a_stream_of_changes_still_gets_its_pass() -> None:
    schedule = Schedule(drift_interval=0, debounce=0.2, now=0.0)
    latest = MAX_DEFER * 0.2
    time = 0.0
    while time < latest + 1:
        schedule.units_changed(time, "x.sandbox.toml")
        if schedule.due(time):
            break
        time += 0.1
    assert latest <= time < latest + 0.2


def test_restarts_wait_for_their_backoff_and_a_full_pass_takes_their_place() -> None:
    schedule = Schedule(drift_interval=30, debounce=0.2, now=0.0)
    schedule.restart("web", 0.4)
    schedule.restart("db", 0.1)
    assert schedule.has("web") and schedule.timeout(0.0) == pytest.approx(0.1)
    assert schedule.due(0.2) == [Pass("init exited", "db")]
    assert not schedule.has("db") and schedule.has("web")
    schedule.full_now(0.3, "reload (SIGHUP)")
    assert schedule.due(0.5) == [Pass("reload (SIGHUP)")]
    assert not schedule.has("web")


def test_a_dead_init_is_restarted_as_its_policy_says_but_not_a_stopped_or_tainted_one(
    tmp_path: Path,
) -> None:
    """`sandman stop` marks the record before it signals the init: when the daemon sees the
    init exit, the record already says stopped, and nothing is scheduled."""
    from sandman.daemon.loop import Daemon, Options
    from sandman.observe.facts import Runtime
    from sandman.observe.records import record_of, write_record
    from sandman.paths import Paths

    state = tmp_path / "state"
    unit = {"sandbox": {"command": ["/bin/sleep", "1"], "restart": "always"}}
    gone = Runtime(pid=2**22 + 1, start_time=1)  # above any pid_max: never a live process
    write_record(str(state), record_of("sandbox", "dead", unit, gone))
    write_record(str(state), record_of("sandbox", "held", unit)._replace(stopped=True))
    # Tainted: another sandman is making its new init (`sandman start`, an apply's recreate).
    write_record(str(state), record_of("sandbox", "busy", unit, gone)._replace(tainted=True))
    paths = Paths(str(state), str(tmp_path / "images"), str(tmp_path / "logs"))
    with open(tmp_path / "journal", "w+") as stream:
        daemon = Daemon(Options(str(tmp_path / "units"), paths), journal=Journal(stream))
        schedule = Schedule(drift_interval=30, debounce=0.2, now=0.0)
        daemon._schedule_restarts(schedule, 0.0)
        daemon._exited("held")
        assert daemon._status() == "0 sandboxes running, 2 not running, 1 stopped"
        stream.seek(0)
        written = stream.read()
    assert schedule.has("dead") and not schedule.has("held") and not schedule.has("busy")
    assert "sandbox/held: stopped (sandman stop); not restarted" in written
    assert "sandbox/held: restarting" not in written


def test_the_drift_check_comes_on_its_period() -> None:
    schedule = Schedule(drift_interval=30, debounce=0.2, now=100.0)
    assert schedule.timeout(100.0) == pytest.approx(30)
    assert schedule.due(129.0) == []
    assert schedule.due(130.0) == [Pass("drift check")]
    assert schedule.timeout(130.0) == pytest.approx(30)


# ---------------------------------------------------------------------------------------------
# inotify


def _event(wd: int, mask: int, name: bytes = b"", length: int = 0) -> bytes:
    padded = name.ljust(length, b"\0") if length else name
    return struct.pack("iIII", wd, mask, 0, len(padded)) + padded


def test_parse_inotify_reads_every_event_of_a_read() -> None:
    buffer = _event(1, sc.IN_CLOSE_WRITE, b"web.sandbox.toml", 32) + _event(1, sc.IN_IGNORED)
    assert parse_inotify(buffer) == [
        (1, sc.IN_CLOSE_WRITE, "web.sandbox.toml"),
        (1, sc.IN_IGNORED, ""),
    ]


def test_only_unit_files_and_the_directory_itself_matter() -> None:
    assert unit_event(sc.IN_CLOSE_WRITE, "web.sandbox.toml") == Event("units", "web.sandbox.toml")
    assert unit_event(sc.IN_MOVED_TO, ".web.sandbox.toml.swp") is None
    assert unit_event(sc.IN_CREATE, "notes.txt") is None
    assert unit_event(sc.IN_Q_OVERFLOW, "") == Event("units", ".")
    assert unit_event(sc.IN_IGNORED, "") == Event("units", ".", lost_watch=True)


def test_inotify_constants_match_the_kernel_header() -> None:
    header = Path("/usr/include/linux/inotify.h")
    if not header.is_file():
        pytest.skip("linux/inotify.h is not installed (linux-libc-dev)")
    text = header.read_text()
    for name in ("IN_MODIFY", "IN_ATTRIB", "IN_CLOSE_WRITE", "IN_MOVED_FROM", "IN_MOVED_TO"):
        assert f"#define {name}\t\t0x{getattr(sc, name):08x}" in text, name
    for name in ("IN_CREATE", "IN_DELETE", "IN_DELETE_SELF", "IN_MOVE_SELF", "IN_Q_OVERFLOW"):
        assert f"0x{getattr(sc, name):08x}" in text, name
    assert f"0x{sc.IN_IGNORED:08x}" in text and f"0x{sc.IN_ONLYDIR:08x}" in text


def test_inotify_add_watch_on_a_missing_path_names_it(tmp_path: Path) -> None:
    fd = sc.inotify_init1()
    try:
        with pytest.raises(FileNotFoundError) as caught:
            sc.inotify_add_watch(fd, tmp_path / "missing", sc.IN_CREATE)
        assert caught.value.filename == str(tmp_path / "missing")
        assert "inotify_add_watch" in str(caught.value)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# The watcher on real fds


@pytest.fixture
def watcher(tmp_path: Path) -> Iterator[Watcher]:
    units = tmp_path / "units"
    units.mkdir()
    the_watcher = Watcher(str(units))
    try:
        yield the_watcher
    finally:
        the_watcher.close()


def _wait(watcher: Watcher, kind: str) -> list[Event]:
    for _ in range(100):
        events = watcher.wait(GUARD)
        if any(e.kind == kind for e in events):
            return events
    pytest.fail(f"no {kind} event came")


def test_watcher_reports_unit_file_writes_only(watcher: Watcher) -> None:
    watcher.watch_directory()
    units = Path(watcher.directory)
    (units / ".scratch").write_text("ignored")
    (units / "web.sandbox.toml").write_text("[sandbox]\n")
    events = _wait(watcher, "units")
    assert {e.name for e in events} == {"web.sandbox.toml"}


def test_watcher_reports_records_written_beside_its_passes(
    watcher: Watcher, tmp_path: Path
) -> None:
    """A record renamed into place by another sandman (`sandman start`) or removed is an
    event, apart from unit changes; a temporary file is none."""
    from sandman.observe.records import record_of, remove_record, write_record

    records = tmp_path / "state" / "sandboxes"
    records.mkdir(parents=True)
    watcher.watch_directory()
    watcher.watch_records(str(records))
    assert watcher.watching_records
    write_record(str(tmp_path / "state"), record_of("sandbox", "web", {"sandbox": {}}))
    events = _wait(watcher, "records")
    assert [(e.kind, e.name) for e in events] == [("records", "web.json")]
    remove_record(str(tmp_path / "state"), "sandbox", "web")
    assert [e.name for e in _wait(watcher, "records")] == ["web.json"]
    shutil.rmtree(records)  # a destroy of everything: watched again after the next pass
    for _ in range(100):
        if not watcher.watching_records:
            break
        watcher.wait(GUARD)
    assert not watcher.watching_records


def test_watcher_notices_the_directory_going_away(watcher: Watcher) -> None:
    watcher.watch_directory()
    shutil.rmtree(watcher.directory)
    events: list[Event] = []
    while not any(e.lost_watch for e in events):
        events += _wait(watcher, "units")
    assert not watcher.watching_directory


def test_watcher_reports_an_exited_init_once(watcher: Watcher) -> None:
    child = subprocess.Popen(["sleep", "1000"])
    try:
        start = int(Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        assert watcher.sync_inits({"web": Init(child.pid, start)}) == []
        child.kill()
        assert Event("exit", "web") in _wait(watcher, "exit")
    finally:
        child.kill()
        child.wait()
    # Reaped and gone: a later sync does not report the same init again.
    assert watcher.sync_inits({"web": Init(child.pid, start)}) == []


def test_watcher_reports_an_init_that_is_already_gone(watcher: Watcher) -> None:
    assert watcher.sync_inits({"web": Init(2**22 + 1, 1)}) == ["web"]
    assert watcher.sync_inits({"web": Init(2**22 + 1, 1)}) == []


def test_watcher_turns_signals_into_events_and_gives_them_back(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGINT)
    watcher = Watcher(str(tmp_path))
    try:
        assert signal.getsignal(signal.SIGINT) is not before
        os.kill(os.getpid(), signal.SIGHUP)
        assert Event("signal", str(int(signal.SIGHUP))) in _wait(watcher, "signal")
    finally:
        watcher.close()
    assert signal.getsignal(signal.SIGINT) is before


# ---------------------------------------------------------------------------------------------
# The last good unit files


def test_last_good_copy_holds_the_unit_files_only(tmp_path: Path) -> None:
    units, state = tmp_path / "units", str(tmp_path / "state")
    units.mkdir()
    (units / "web.sandbox.toml").write_text("one")
    (units / ".web.sandbox.toml.swp").write_text("editor")
    assert lastgood.saved(state) is None
    lastgood.save(str(units), state)
    (units / "web.sandbox.toml").write_text("two")
    (units / "db.sandbox.toml").write_text("three")
    copy = lastgood.saved(state)
    assert copy is not None and os.listdir(copy) == ["web.sandbox.toml"]
    assert Path(copy, "web.sandbox.toml").read_text() == "one"
    lastgood.save(str(units), state)
    assert sorted(os.listdir(copy)) == ["db.sandbox.toml", "web.sandbox.toml"]
    assert Path(copy, "web.sandbox.toml").read_text() == "two"
    lastgood.remove(state)
    assert lastgood.saved(state) is None


# ---------------------------------------------------------------------------------------------
# The command line


def test_daemon_options_and_defaults() -> None:
    args = build_parser().parse_args(["daemon"])
    assert (args.directory, args.drift_interval, args.debounce, args.on_stop) == (
        None,
        30.0,
        200.0,
        "keep",
    )
    args = build_parser().parse_args(
        ["daemon", "/u", "--on-stop", "stop", "--drift-interval", "5", "--debounce", "50"]
    )
    assert (args.directory, args.drift_interval, args.debounce, args.on_stop) == (
        "/u",
        5.0,
        50.0,
        "stop",
    )
    with pytest.raises(SystemExit):
        build_parser().parse_args(["daemon", "--on-stop", "pause"])


def test_daemon_help_names_its_options() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sandman", "daemon", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    for option in ("--drift-interval", "--on-stop", "--debounce", "/etc/sandman/units"):
        assert option in done.stdout


# ---------------------------------------------------------------------------------------------
# contrib/systemd


def _systemd_tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        message = f"{name} is missing: install Debian's systemd package (contrib/setup.sh --test)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return found


def test_service_file_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """verify checks ExecStart's binary exists: where sandman is not installed at the path the
    service names, the copy checked runs the sandman of this checkout instead (the same entry
    point, installed elsewhere); every other line is checked as shipped."""
    analyze = _systemd_tool("systemd-analyze")
    text = SERVICE.read_text()
    installed = shutil.which("sandman", path=str(Path(sys.executable).parent))
    assert installed, "the sandman entry point of this environment is missing: pip install -e ."
    if not os.access("/usr/local/bin/sandman", os.X_OK):
        text = text.replace("/usr/local/bin/sandman", installed)
    checked = tmp_path / "sandman.service"
    checked.write_text(text)
    done = subprocess.run(
        [analyze, "verify", str(checked)], capture_output=True, text=True, check=False
    )
    # verify warns (an unknown key, a bad value) without failing: warnings fail here.
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


def test_service_file_keeps_the_promises_of_the_readme() -> None:
    service: dict[str, str] = {}
    for line in SERVICE.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            service.setdefault(key, value)
    assert service["Type"] == "notify"
    # The sandboxes live in a scope of their own on systemd hosts: nothing is delegated to the
    # service, whose cgroup holds the daemon alone.
    assert "Delegate" not in service
    assert service["KillMode"] == "process"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["ExecStart"].split()[1] == "daemon"
    assert service["ExecStart"].split()[-1] == "/etc/sandman/units"


def test_tmpfiles_entry_makes_the_state_image_and_log_dirs(tmp_path: Path) -> None:
    tmpfiles = _systemd_tool("systemd-tmpfiles")
    done = subprocess.run(
        [tmpfiles, "--create", f"--root={tmp_path}", str(TMPFILES)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    modes = {
        # Data dirs: root's alone (an image holds setuid-root binaries); the units are not secret.
        "run/sandman": 0o700,
        "var/lib/sandman": 0o700,
        "var/lib/sandman/images": 0o700,
        "var/lib/sandman/sandboxes": 0o700,
        "var/log/sandman": 0o700,
        "etc/sandman/units": 0o755,
    }
    for relative, mode in modes.items():
        path = tmp_path / relative
        assert path.is_dir(), relative
        assert path.stat().st_mode & 0o7777 == mode, relative
