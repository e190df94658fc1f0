"""The reconcile pass against the real kernel, as root: the state lock between applies (a real
wait, --no-wait, a holder that died, a stale lock file), two applies racing on one state dir, and
a bad unit that stops an apply before anything on the host changes.

sandman is driven through `python -m sandman`, with the `sm` fixture of test_sandboxes.py, whose
teardown also fails a test that leaves a process, a cgroup or a record behind. Concurrent applies
are started with subprocess.Popen and the argv `Sandman.run` builds; their output goes to files
under tmp_path, read while they run. The test takes the state lock itself (an flock on
STATE_DIR/lock, as sandman/apply/lock.py does) to hold an apply at the door for as long as it
needs: no assertion is about time, and every wait is a bounded guard against hanging.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_sandboxes import (
    KINDS,
    Result,
    Sandman,
    alive,
    busybox_image,
    cgroup_dirs,
    processes_in_cgroup,
    sm,
    unit,
    wait_for,
)

__all__ = ["busybox_image", "sm"]  # the fixtures, used by name

pytestmark = pytest.mark.root

SANDBOXES = ("r1", "r2", "r3", "r4", "r5")
WAITING = "waiting for another apply to release"


# ---------------------------------------------------------------------------------------------
# Helpers


@dataclass
class Running:
    """A sandman process started in the background; its output goes to files."""

    process: subprocess.Popen[bytes]
    argv: list[str]
    out: Path
    err: Path

    def stderr(self) -> str:
        return self.err.read_text()

    def finish(self) -> Result:
        try:
            code = self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"{' '.join(self.argv)} did not end")
        return Result(tuple(self.argv[3:]), code, self.out.read_text(), self.err.read_text())


class Background:
    """sandman processes started in the background by one test; those still running when the
    test ends (it failed) are killed and reaped."""

    def __init__(self, sm: Sandman) -> None:
        self.sm = sm
        self.started: list[Running] = []

    def start(self, label: str, verb: str, *args: str) -> Running:
        command = self.sm.argv(verb, *args)
        out, err = self.sm.root / f"{label}.out", self.sm.root / f"{label}.err"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SANDMAN_")}
        with out.open("wb") as stdout, err.open("wb") as stderr:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, env=env
            )
        handle = Running(process, command, out, err)
        self.started.append(handle)
        return handle

    def stop(self) -> None:
        for handle in self.started:
            if handle.process.poll() is None:
                handle.process.kill()
                handle.process.wait()
        self.sm.note_records()


@contextlib.contextmanager
def background(sm: Sandman) -> Iterator[Background]:
    processes = Background(sm)
    try:
        yield processes
    finally:
        processes.stop()


@contextlib.contextmanager
def holding_the_lock(sm: Sandman) -> Iterator[int]:
    """The state lock, taken by the test process itself: sandman's own lock file, flocked."""
    sm.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(sm.state_dir / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # nobody else may hold it now
        yield fd
    finally:
        os.close(fd)


def lock_is_free(sm: Sandman) -> bool:
    fd = os.open(sm.state_dir / "lock", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


@dataclass(frozen=True)
class HostView:
    """What the instance has on the host, read without sandman: every record (bytes, inode and
    mtime), every recorded init (PID and start time), every cgroup dir and every process in
    them."""

    records: dict[str, tuple[int, int, bytes]]
    inits: dict[str, tuple[int, int]]
    cgroups: tuple[str, ...]
    processes: tuple[int, ...]


def host_view(sm: Sandman) -> HostView:
    records = {}
    for kind in KINDS:
        for path in sorted((sm.state_dir / kind).glob("*.json")):
            st = path.stat()
            records[f"{kind}/{path.name}"] = (st.st_ino, st.st_mtime_ns, path.read_bytes())
    inits = {
        path.stem: sm.init(path.stem)
        for path in sorted((sm.state_dir / "sandboxes").glob("*.json"))
    }
    cgroups = tuple(sorted(d for top in cgroup_dirs(sm.base) for d, _, _ in os.walk(top)))
    return HostView(records, inits, cgroups, tuple(processes_in_cgroup(sm.base)))


def assert_converged(sm: Sandman, names: tuple[str, ...]) -> None:
    """Each sandbox of `names` has one record whose init runs alone in its own cgroup, and the
    instance has nothing else: no other record, process or sandbox cgroup."""
    recorded = sorted(p.stem for p in (sm.state_dir / "sandboxes").glob("*.json"))
    assert recorded == sorted(names)
    pids = []
    for name in names:
        pid = sm.running_init(name)
        assert processes_in_cgroup(sm.base, name) == [pid], f"processes of {name}'s cgroup"
        cgroups = sm.sandbox_cgroups(name)
        assert cgroups, f"no cgroup of {name}"
        assert all(os.path.basename(os.path.dirname(c)) == sm.base for c in cgroups), cgroups
        assert len(cgroups) == len(cgroup_dirs(sm.base)), f"{name}: one cgroup per hierarchy"
        pids.append(pid)
    assert processes_in_cgroup(sm.base) == sorted(pids), "a process of the instance is no init"
    for top in cgroup_dirs(sm.base):
        below = sorted(e for e in os.listdir(top) if os.path.isdir(os.path.join(top, e)))
        assert below == sorted(names), f"cgroups under {top}: {below}"


def assert_one_made_all_and_one_found_nothing(sm: Sandman, results: list[Result]) -> None:
    """Two applies of the same units: one created everything, the other found nothing to do,
    and the host is what the units declare."""
    for result in results:
        assert result.code == 0, result
    assert sorted(r.out for r in results) == [
        "Apply complete: 5 created.\n",
        f"No changes: the host matches {sm.units}.\n",
    ], "\n".join(map(str, results))
    assert_converged(sm, SANDBOXES)
    assert "No changes" in sm.apply().out


def says_waiting(handle: Running) -> Callable[[], bool]:
    return lambda: WAITING in handle.stderr()


def write_sandboxes(sm: Sandman, names: tuple[str, ...] = SANDBOXES) -> None:
    for number, name in enumerate(names):
        sm.write(name, unit(command=("sleep", str(1000 + number))))


# ---------------------------------------------------------------------------------------------
# The lock


def test_an_apply_waits_for_the_lock_then_does_all_its_work(sm: Sandman) -> None:
    write_sandboxes(sm)
    with background(sm) as bg:
        with holding_the_lock(sm):
            waiter = bg.start("waiter", "apply", str(sm.units))
            wait_for(lambda: WAITING in waiter.stderr(), "the apply to say it waits for the lock")
            assert f"`{sm.state_dir}/lock`" in waiter.stderr()
            # Waiting, it has touched nothing: no record, no cgroup, no process.
            assert waiter.process.poll() is None, waiter.stderr()
            assert host_view(sm) == HostView({}, {}, (), ())
        # The test let go: the apply takes the lock and carries the whole plan out.
        done = waiter.finish()
    assert done.code == 0, done
    assert done.out == "Apply complete: 5 created.\n", done
    assert done.err.count(WAITING) == 1, done
    assert_converged(sm, SANDBOXES)
    # No init, nor anything else the apply left running, holds the lock now.
    assert lock_is_free(sm)
    again = sm.apply()
    assert "No changes" in again.out, again
    assert WAITING not in again.err, again


def test_two_applies_held_at_the_lock_run_one_after_the_other(sm: Sandman) -> None:
    """Both wait for the test's lock; once it is free, one makes everything and the other finds
    nothing left to do."""
    write_sandboxes(sm)
    with background(sm) as bg:
        with holding_the_lock(sm):
            first = bg.start("first", "apply", str(sm.units))
            second = bg.start("second", "apply", str(sm.units))
            for handle in (first, second):
                wait_for(says_waiting(handle), "both applies to wait for the lock")
            assert host_view(sm) == HostView({}, {}, (), ())
        results = [first.finish(), second.finish()]
    for result in results:
        assert result.err.count(WAITING) == 1, result
    assert_one_made_all_and_one_found_nothing(sm, results)


def test_two_applies_started_at_once_agree(sm: Sandman) -> None:
    """A free race: whichever takes the lock first makes everything, the other (whether it
    waited or came after) finds nothing to do. Never two inits or cgroups for one sandbox."""
    write_sandboxes(sm)
    with background(sm) as bg:
        one = bg.start("one", "apply", str(sm.units))
        two = bg.start("two", "apply", str(sm.units))
        results = [one.finish(), two.finish()]
    assert_one_made_all_and_one_found_nothing(sm, results)


def test_two_applies_of_different_units_leave_exactly_the_later_ones(sm: Sandman) -> None:
    """Two unit dirs on one state dir, both held at the lock: the one that runs second prunes
    what the first made, recreates the sandbox they share, and makes its own."""
    first_units, second_units = sm.root / "units-a", sm.root / "units-b"
    for number, name in enumerate(("p1", "p2", "shared")):
        sm.write(name, unit(command=("sleep", str(1100 + number))), units=first_units)
    for number, name in enumerate(("q1", "q2", "shared")):
        sm.write(name, unit(command=("sleep", str(1200 + number))), units=second_units)
    with background(sm) as bg:
        with holding_the_lock(sm):
            first = bg.start("a", "apply", str(first_units))
            second = bg.start("b", "apply", str(second_units))
            for handle in (first, second):
                wait_for(says_waiting(handle), "both applies to wait for the lock")
        results = [first.finish(), second.finish()]
    for result in results:
        assert result.code == 0, result
    # Which one ran last is up to the kernel; the records tell, and they must be all of its.
    recorded = tuple(sorted(p.stem for p in (sm.state_dir / "sandboxes").glob("*.json")))
    assert recorded in (("p1", "p2", "shared"), ("q1", "q2", "shared")), results
    assert_converged(sm, recorded)
    last, command = (
        (first_units, b"sleep\x001102\x00")
        if recorded[0] == "p1"
        else (second_units, b"sleep\x001202\x00")
    )
    assert Path(f"/proc/{sm.running_init('shared')}/cmdline").read_bytes() == command
    assert "No changes" in sm.apply(last).out


def test_no_wait_fails_at_once_while_the_lock_is_held_and_changes_nothing(sm: Sandman) -> None:
    sm.write("kept", unit(sandbox='description = "before"'))
    sm.apply()
    sm.write("kept", unit(sandbox='description = "after"'))
    sm.write("new", unit())
    before = host_view(sm)
    with holding_the_lock(sm):
        refused = sm.run("apply", "--no-wait", str(sm.units), expect=1)
        assert f"`{sm.state_dir}/lock`" in refused.err, refused
        assert "--no-wait" in refused.err, refused
        assert WAITING not in refused.err, refused
        assert refused.out == "", refused
        assert host_view(sm) == before
        # destroy --no-wait is refused the same way.
        kept = sm.run("destroy", "--no-wait", "kept", expect=1)
        assert f"`{sm.state_dir}/lock`" in kept.err, kept
        assert host_view(sm) == before
    assert sm.gone("new") == []
    # Once the lock is free, the same command goes through.
    done = sm.run("apply", "--no-wait", str(sm.units))
    sm.note_records()
    assert done.out == "Apply complete: 1 created, 1 updated.\n", done
    assert sm.init("kept") == before.inits["kept"]
    assert_converged(sm, ("kept", "new"))


# A process that takes the state lock, says so, and sleeps until it is killed.
HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, b"%d\\n" % os.getpid())
print("locked", flush=True)
time.sleep(1000)
"""


def test_a_lock_whose_holder_was_killed_does_not_block(sm: Sandman) -> None:
    sm.write("after", unit())
    sm.state_dir.mkdir(mode=0o700)
    lock = sm.state_dir / "lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
        assert not lock_is_free(sm)
        refused = sm.run("apply", "--no-wait", str(sm.units), expect=1)
        assert f"`{lock}`" in refused.err, refused
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    # The kernel dropped the flock with its holder; the file it left (with its PID) stays.
    assert lock.read_text() == f"{holder.pid}\n"
    done = sm.run("apply", "--no-wait", str(sm.units))
    sm.note_records()
    assert done.out == "Apply complete: 1 created.\n", done
    assert WAITING not in done.err, done
    assert_converged(sm, ("after",))


@pytest.mark.parametrize(
    "content", [b"", b"4194305\n", b"\x00garbage from a crashed apply\xff\n"], ids=repr
)
def test_a_stale_lock_file_left_on_disk_does_not_block(sm: Sandman, content: bytes) -> None:
    """A lock file is only a file: whatever a crashed process left in it (or its owner and
    mode), nobody holds its flock, and the next apply goes through without waiting."""
    sm.write("fresh", unit())
    sm.state_dir.mkdir(mode=0o700)
    lock = sm.state_dir / "lock"
    lock.write_bytes(content)
    os.chmod(lock, 0o444)
    done = sm.run("apply", "--no-wait", str(sm.units))
    sm.note_records()
    assert done.out == "Apply complete: 1 created.\n", done
    assert WAITING not in done.err, done
    assert_converged(sm, ("fresh",))
    assert "No changes" in sm.run("apply", "--no-wait", str(sm.units)).out


# ---------------------------------------------------------------------------------------------
# A bad unit stops the apply before the host changes

BAD_UNITS = {
    # file name, text, what the error must name
    "unknown-key": (
        "bad.sandbox.toml",
        '[sandbox]\ncommand = ["sleep", "1"]\nbogus = 1\n',
        "sandbox.bogus",
    ),
    "bad-value": (
        "bad.sandbox.toml",
        '[sandbox]\ncommand = ["sleep", "1"]\n[resources]\nmemory_max = "lots"\n',
        "resources.memory_max",
    ),
    "missing-slice": (
        "bad.sandbox.toml",
        '[sandbox]\ncommand = ["sleep", "1"]\nslice = "nowhere"\n',
        "sandbox.slice",
    ),
    "bad-slice": ("bad.slice.toml", '[slice]\nparent = "bad"\n', "slice.parent"),
    # No key to name in a file that does not parse: the line and what is wrong.
    "not-toml": ("bad.sandbox.toml", "[sandbox\ncommand = \n", "bad.sandbox.toml:1: TOML syntax"),
}


@pytest.mark.parametrize("case", sorted(BAD_UNITS))
def test_a_bad_unit_added_to_an_applied_dir_changes_nothing(sm: Sandman, case: str) -> None:
    """A good set is applied; then a broken unit is added and a good one edited (a live key and
    a recreate key) at the same time. The apply fails naming the file and key, and every init,
    record and cgroup is exactly as before; the edit is applied once the broken file is gone."""
    sm.write("lim", "[slice]\npids_max = 50\n", "slice")
    sm.write("g1", unit(sandbox='description = "one"\nslice = "lim"'))
    sm.write("g2", unit(command=("sleep", "1001")))
    sm.apply()
    before = host_view(sm)
    assert sorted(before.inits) == ["g1", "g2"]
    name, text, key = BAD_UNITS[case]
    (sm.units / name).write_text(text)
    sm.write("g1", unit(sandbox='description = "two"\nslice = "lim"'))
    sm.write("g2", unit(command=("sleep", "1002")))
    sm.write("g3", unit())
    failed = sm.apply(expect=2)
    assert name in failed.err, failed
    assert key in failed.err, failed
    assert "nothing was changed" in failed.err, failed
    assert failed.out == "", failed
    assert host_view(sm) == before
    for pid, start in before.inits.values():
        assert alive(pid, start)
    assert sm.gone("g3") == []
    planned = sm.run("plan", "--detailed-exitcode", str(sm.units), expect=2)
    assert name in planned.err, planned
    assert host_view(sm) == before
    # Without the broken file, the pending edits go through.
    (sm.units / name).unlink()
    fixed = sm.apply()
    assert fixed.out == "Apply complete: 1 created, 1 updated, 1 recreated.\n", fixed
    assert sm.init("g1") == before.inits["g1"]
    assert sm.init("g2") != before.inits["g2"]
    assert not alive(*before.inits["g2"])
    assert sm.record("g1")["unit"]["sandbox"]["description"] == "two"
    assert "No changes" in sm.apply().out
