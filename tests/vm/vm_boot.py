"""One boot of the guest: qemu on the run's copy-on-write overlay of the image, the serial
console streamed to the runner's stdout (and the run's console.log) as it comes, a watchdog on
the boot and a deadline on the run, then the results the guest wrote on its results disk."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, Literal

import vm_recipe as recipe

State = Literal["done", "hung", "timeout", "no-result"]


@dataclass(frozen=True)
class Outcome:
    state: State
    seconds: float  # qemu's whole run
    ready_after: float | None  # from qemu's start to the guest's ready line
    status: dict[str, Any] | None  # the guest's status.json: rc, reboot, facts, error


@dataclass(frozen=True)
class Limits:
    boot_timeout: float  # seconds from qemu's start to the guest's ready line
    deadline: float  # monotonic time the whole run must end by


def create_overlay(image: Path, overlay: Path) -> None:
    """A qcow2 layer over the image, which every boot of a run writes to: the cached image
    is never changed, and a second boot finds what the first left."""
    argv = ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(image)]
    subprocess.run([*argv, str(overlay)], check=True)


def fresh_results_disk(path: Path, size_mib: int) -> None:
    """Sparse, zeroed: a guest that writes nothing leaves no archive to read."""
    path.unlink(missing_ok=True)
    with open(path, "wb") as disk:
        disk.truncate(size_mib << 20)


class Console(threading.Thread):
    """qemu's stdout, the guest's serial console: copied to LOG and ECHO without the CRs of
    the guest's tty; `ready` is set when the guest says it starts the command."""

    def __init__(self, source: IO[bytes], log: BinaryIO, echo: BinaryIO | None) -> None:
        super().__init__(daemon=True)
        self.source, self.log, self.echo = source, log, echo
        self.ready = threading.Event()
        self.ready_at = 0.0  # monotonic

    def run(self) -> None:
        seen = b""
        while chunk := os.read(self.source.fileno(), 65536):
            chunk = chunk.replace(b"\r", b"")
            self.log.write(chunk)
            self.log.flush()
            self.copy_to_echo(chunk)
            seen = seen[-len(recipe.READY_MARKER) :] + chunk
            if recipe.READY_MARKER in seen and not self.ready.is_set():
                self.ready_at = time.monotonic()
                self.ready.set()

    def copy_to_echo(self, chunk: bytes) -> None:
        """A reader of the runner's output that went away (`| head`) stops the echo, not the
        console: unread, qemu's serial port would stall the guest."""
        if self.echo is None:
            return
        try:
            self.echo.write(chunk)
            self.echo.flush()
        except OSError:
            self.echo = None


def boot(
    number: int,
    machine: recipe.Machine,
    run_dir: Path,
    results_disk: Path,
    limits: Limits,
    *,
    echo: BinaryIO | None,
) -> tuple[Outcome, Path]:
    """Boot NUMBER of the run: MACHINE until it powers off. The outcome, and where the guest's
    results were unpacked."""
    results = run_dir / f"boot-{number}"
    start = time.monotonic()
    with open(run_dir / "console.log", "ab") as log, open(run_dir / "qemu.log", "ab") as qlog:
        qemu = subprocess.Popen(
            recipe.qemu_argv(machine), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=qlog
        )
        assert qemu.stdout is not None
        console = Console(qemu.stdout, log, echo)
        console.start()
        try:
            state = watch(qemu, console.ready, start + limits.boot_timeout, limits.deadline)
        finally:
            stop(qemu)
            console.join(timeout=10)
    ready_after = console.ready_at - start if console.ready.is_set() else None
    status = None
    if state == "done":
        status = unpack_results(results_disk, results)
        if status is None:
            state = "no-result"
    seconds = time.monotonic() - start
    return Outcome(state, seconds, ready_after, status), results


def watch(
    qemu: subprocess.Popen[bytes], ready: threading.Event, boot_limit: float, deadline: float
) -> State:
    """Wait for qemu to end: "done" when it did, "hung" when the guest was not ready by
    BOOT_LIMIT, "timeout" past DEADLINE (monotonic times)."""
    while True:
        try:
            qemu.wait(timeout=0.5)
            return "done"
        except subprocess.TimeoutExpired:
            now = time.monotonic()
            if now >= deadline:
                return "timeout"
            if now >= boot_limit and not ready.is_set():
                return "hung"


def stop(qemu: subprocess.Popen[bytes]) -> None:
    if qemu.poll() is None:
        qemu.terminate()
        try:
            qemu.wait(timeout=10)
        except subprocess.TimeoutExpired:
            qemu.kill()
            qemu.wait()


def unpack_results(disk: Path, dest: Path) -> dict[str, Any] | None:
    """The guest's archive on DISK into DEST: regular files and directories only, below DEST
    (what a test left in $VM_RESULTS must not write elsewhere on the host); its status.json."""
    try:
        with tarfile.open(disk) as archive:
            members = [m for m in archive.getmembers() if is_plain(m)]
            if hasattr(tarfile, "data_filter"):  # 3.11.4 on, and Debian's backport
                archive.extraction_filter = tarfile.data_filter
            archive.extractall(dest, members=members)
    except (tarfile.ReadError, OSError):
        return None
    try:
        status: dict[str, Any] = json.loads((dest / "status.json").read_text())
    except (OSError, ValueError):
        return None
    return status


def is_plain(member: tarfile.TarInfo) -> bool:
    parts = Path(member.name).parts
    return (
        (member.isfile() or member.isdir())
        and ".." not in parts
        and not member.name.startswith("/")
    )
