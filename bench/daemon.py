"""`sandman daemon`: its resident memory with 10 and 100 sandboxes watched, and a new unit file
to its init running, beside a cold `sandman apply` of the same directory.

`sandman daemon DIR --debounce 0 --drift-interval 0` (0 is the smallest debounce it accepts; the
default 200 ms would only add itself; no drift pass in the middle of a trial) over scale.py's
units, with a NOTIFY_SOCKET bound here: its VmRSS one second after READY=1, with 10 and with 100
sandboxes. With 100, per run: a busybox `sleep 1000` unit without network written under a hidden
name (the daemon and the loader skip names starting with a dot) and renamed into the dir, timed
until its record's runtime.pid is a live process (polled every 1 ms); untimed, the end of that
pass in the daemon's journal awaited, the file removed, its record's removal and that pass
awaited. Then, the daemon stopped (the 100 keep running), as many cold runs: the unit added,
`sandman apply DIR` timed, the unit removed and applied away.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator

from census import read_proc
from harness import BenchError, Instance, Peer, Session, Stats, emit, main, stop_gently, wait_until
from peers import Names
from scale import units

MANY = 100
RSS_LIMIT_MB = 60.0
FLAGS = ("--debounce", "0", "--drift-interval", "0")
NEW_UNIT = "added"  # the unit file added to the daemon's dir: added.sandbox.toml
NEW_UNIT_TEXT = '[sandbox]\ncommand = ["/bin/sleep", "1000"]\n\n[rootfs]\nimage = "busybox"\n'
POLL = 0.001  # s between looks at the new unit's record
TIMEOUT = 120.0  # s for READY=1, a new unit's init, a pass of the daemon
COLD = "cold `sandman apply`"


@contextlib.contextmanager
def daemon(session: Session, instance: Instance, journal: str) -> Iterator[subprocess.Popen[bytes]]:
    """`sandman daemon DIR` once it has sent READY=1 on the NOTIFY_SOCKET bound here, and a
    second more; its journal (stderr) in `journal`; stopped with SIGTERM at the end (its
    sandboxes keep running)."""
    path = os.path.join(session.workdir, f"notify-{os.path.basename(instance.units)}")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(path)
    listener.settimeout(TIMEOUT)
    with open(journal, "wb") as handle:
        process = subprocess.Popen(
            instance.argv("daemon", *FLAGS),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=handle,
            env={**session.env, "NOTIFY_SOCKET": path},
            cwd=session.workdir,
        )
    try:
        while "READY=1" not in listener.recv(4096).decode(errors="replace").split("\n"):
            if process.poll() is not None:
                raise BenchError(f"the daemon exited with {process.returncode} before READY=1")
        time.sleep(1.0)  # let it settle into its watch loop
        yield process
    except TimeoutError:
        raise BenchError(f"the daemon sent no READY=1 in {TIMEOUT:.0f} s") from None
    finally:
        listener.close()
        process.terminate()
        stop_gently(process)


class NewUnit:
    """The unit added to a running instance's dir: written under a hidden name, renamed in; its
    record's init awaited; the daemon's passes over it read from its journal."""

    def __init__(self, instance: Instance) -> None:
        self.final = os.path.join(instance.units, f"{NEW_UNIT}.sandbox.toml")
        self.hidden = os.path.join(instance.units, f".{NEW_UNIT}.sandbox.toml.tmp")
        self.record = os.path.join(instance.state, "sandboxes", f"{NEW_UNIT}.json")
        self.journal, self.offset = f"{instance.units}.daemon.log", 0

    def add(self) -> None:
        with open(self.hidden, "w", encoding="utf-8") as handle:
            handle.write(NEW_UNIT_TEXT)
        os.rename(self.hidden, self.final)

    def restore(self) -> None:
        """On an interruption: the file back while its sandbox runs, for `destroy DIR`."""
        if os.path.exists(self.record) and not os.path.exists(self.final):
            self.add()

    def running(self) -> bool:
        """The record exists and its runtime.pid is a live process (not a zombie)."""
        try:
            with open(self.record, "rb") as handle:
                proc = read_proc(int(json.load(handle)["runtime"]["pid"]))
        except (OSError, ValueError, KeyError, TypeError):
            return False
        return proc is not None and not proc.zombie

    def gone(self) -> bool:
        return not os.path.exists(self.record)

    def mark(self) -> None:
        self.offset = os.path.getsize(self.journal)

    def pass_ended(self) -> bool:
        """A journal line since the mark names the unit (a pass's last line names its reason);
        an error line raises."""
        with open(self.journal, "rb") as handle:
            handle.seek(self.offset)
            lines = handle.read().decode(errors="replace").splitlines()
        if errors := [line for line in lines if line.startswith("<3>")]:
            raise BenchError(f"the daemon logged: {errors[0][3:]}")
        return any(f"({NEW_UNIT}.sandbox.toml): " in line for line in lines)


def through_daemon(unit: NewUnit, process: subprocess.Popen[bytes], runs: int) -> list[float]:
    def until(done: Callable[[], bool], what: str) -> None:
        def alive_and_done() -> bool:
            if process.poll() is not None:
                raise BenchError(f"the daemon exited with {process.returncode} ({what})")
            return done()

        wait_until(alive_and_done, what, TIMEOUT, POLL)

    samples = []
    for _ in range(runs):
        unit.mark()
        start = time.perf_counter()
        unit.add()
        until(unit.running, "the new unit's init running")
        samples.append((time.perf_counter() - start) * 1000.0)
        until(unit.pass_ended, "the end of its pass")
        unit.mark()
        os.unlink(unit.final)
        until(unit.gone, "its record removed")
        until(unit.pass_ended, "the end of its pass")
    return samples


def cold(instance: Instance, unit: NewUnit, runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        unit.add()
        start = time.perf_counter()
        instance.apply()
        samples.append((time.perf_counter() - start) * 1000.0)
        if not unit.running():
            raise BenchError(f"after `sandman apply`, {NEW_UNIT}'s init does not run")
        os.unlink(unit.final)
        instance.apply()
    return samples


def measure(session: Session) -> None:
    args, rss, warm, colds = session.args, {}, [], []
    names = Names(session)
    session.image()
    for count in (10, MANY):
        instance = Instance.make(session, f"daemon-{count}", units(names, count))
        instance.apply()
        unit = NewUnit(instance)
        session.cleanup.add("the added unit", unit.restore)
        with daemon(session, instance, unit.journal) as process:
            if (proc := read_proc(process.pid)) is None:
                raise BenchError("the daemon exited after READY=1")
            rss[count] = proc.rss / 2**20
            if count == MANY:
                warm = through_daemon(unit, process, args.warmups + args.runs)[args.warmups :]
        if count == MANY:
            colds = cold(instance, unit, args.warmups + args.runs)[args.warmups :]
        instance.destroy()
        instance.settle()
    growth = (rss[MANY] - rss[10]) / (MANY - 10)
    emit(
        "daemon_rss",
        f"daemon RSS with {MANY} sandboxes watched",
        value=rss[MANY],
        unit="MB",
        peers=[Peer("10 sandboxes", rss[10])],
        target=f"<= {RSS_LIMIT_MB:.0f} MB, flat in the count",
        verdict="met" if rss[MANY] <= RSS_LIMIT_MB and growth <= 0.1 else "MISSED",
        note=f"{growth * 1024:.0f} kB more per sandbox from 10 to {MANY}",
    )
    theirs = Stats(tuple(colds))
    emit(
        "daemon_new_unit",
        "daemon: a new unit file to its init running",
        sandman=Stats(tuple(warm)),
        peers=[Peer(COLD, theirs.median)],
        base=COLD,
        verdict="-",
        note=f"`sandman daemon {' '.join(FLAGS)}` (--debounce 0: the smallest it accepts; "
        f"default 200 ms) watching {MANY} networked sandboxes; one `sleep 1000` busybox unit "
        f"without network renamed in, until its record's runtime.pid runs (/proc polled every "
        f"{POLL * 1000:.0f} ms); cold: `sandman apply DIR` with the unit added, daemon stopped, "
        f"the {MANY} running, {theirs} ms",
    )


if __name__ == "__main__":
    raise SystemExit(
        main("Time sandman daemon's memory and its start of a new unit.", measure, runs=5)
    )
