"""`sandman exec` as a trust boundary, and its terminal, stdio and signals.

The attack tests run a static probe (tests/root/exec_probes.py) inside a sandbox whose root is the
host's (`namespaces.user = false`), most with `capabilities = "os"` (CAP_SYS_PTRACE, CAP_SYS_ADMIN):
each fails if its defence in kernel/enter.py, kernel/sealed.py or tty.py is removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from exec_probes import SOURCES
from test_sandboxes import (
    WAIT,
    Sandman,
    alive,
    busybox_image,
    probe_unit,
    processes_in_cgroup,
    sm,
    stat_of,
    unit,
    wait_for,
)

__all__ = ["busybox_image", "sm"]  # the fixtures, used by name

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
ROUNDS = 40  # execs an attack gets at most; it stops at its first catch


@pytest.fixture(scope="module")
def probes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    compiler = shutil.which("gcc")
    assert compiler, "gcc is needed to build the exec probes; `sh contrib/setup.sh --test`"
    directory = tmp_path_factory.mktemp("exec-probes")
    directory.chmod(0o755)
    for name, source in SOURCES.items():
        (directory / f"{name}.c").write_text(source)
        binary = str(directory / name)
        subprocess.run([compiler, "-static", "-O1", "-o", binary, f"{binary}.c"], check=True)
    return directory


def _hostile_unit(probes: Path, capabilities: str, command: str = "sleep 1000") -> str:
    """A sandbox whose root is the host's root, with the probes at /opt/probes."""
    return probe_unit(
        probes,
        command=command.split(),
        rest="[namespaces]\nuser = false\n",
        capabilities=capabilities,
    )


def _log(sm: Sandman, name: str) -> str:
    return sm.run("logs", name).out


def _start_probe(sm: Sandman, probes: Path, probe: str, capabilities: str) -> None:
    sm.write("victim", _hostile_unit(probes, capabilities, f"/opt/probes/{probe}"))
    sm.apply()
    wait_for(lambda: "ready" in _log(sm, "victim"), "the probe to start")


def _environment(**extra: str) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SANDMAN_")}
    return {**environment, **extra}


# ---------------------------------------------------------------------------------------------
# CVE-2019-5736: the entering process's /proc/PID/exe


@pytest.fixture
def python_copy(tmp_path: Path) -> Path:
    """A copy of the interpreter that runs `sandman exec` in the attack test: if the defence
    fails, the probe writes to this copy, never to the interpreter of the venv."""
    copy = tmp_path / "python-copy"
    shutil.copy2(os.path.realpath(sys.executable), copy)
    ran = subprocess.run([copy, "-c", "pass"], capture_output=True, text=True, check=False)
    assert ran.returncode == 0, f"a copy of the interpreter does not run: {ran.stderr}"
    return copy


def _exec_with(sm: Sandman, python: Path, name: str, *command: str) -> None:
    argv = [str(python), *sm.argv("exec", name, "--", *command)[1:]]
    path = os.pathsep.join([str(REPO), *(p for p in sys.path if p)])
    done = subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=_environment(PYTHONPATH=path),
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("capabilities", ["default", "os"])
def test_the_sandbox_cannot_write_the_host_interpreter_through_proc_exe(
    sm: Sandman, probes: Path, python_copy: Path, capabilities: str
) -> None:
    """The runc attack: the probe holds /proc/PID/exe of every entering process it sees (O_PATH)
    and, once that process has exec'd and the client is gone, reopens it for writing."""
    before = _digest(python_copy)
    _start_probe(sm, probes, "exe_grab", capabilities)
    for _ in range(ROUNDS if capabilities == "os" else 10):
        _exec_with(sm, python_copy, "victim", "true")
        if "opened" in _log(sm, "victim"):
            break

    def settled() -> str | None:
        log = _log(sm, "victim")
        results = sum(log.count(w) for w in ("wrote", "reopen refused", "write refused"))
        return log if results >= log.count("opened") else None

    log = wait_for(settled, "the probe to try every exe it holds")
    assert "wrote" not in log, log
    assert _digest(python_copy) == before, log
    if capabilities == "os":
        # CAP_SYS_PTRACE in the host's user namespace opens the link: what it leads to is the
        # sealed copy, which takes no write.
        assert "opened /memfd:" in log and "write refused" in log, log
    else:
        assert "opened" not in log, log


# ---------------------------------------------------------------------------------------------
# ptrace of the entering process


def _status_fields(text: str) -> dict[str, str]:
    return {k.strip(): v.strip() for k, _, v in (f.partition(":") for f in text.split(";")) if v}


def _exec_holding(sm: Sandman, held: int, name: str, *command: str) -> None:
    """`sandman exec` started with `held`, a host fd without close-on-exec, as its fd 3."""
    done = subprocess.run(
        sm.argv("exec", name, "--", *command),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env=_environment(),
        timeout=60,
        check=False,
        pass_fds=(held,),
    )
    assert done.returncode == 0, done.stderr


def test_a_sandbox_that_may_ptrace_attaches_to_no_unconfined_process(
    sm: Sandman, probes: Path
) -> None:
    """With CAP_SYS_PTRACE and no user namespace the probe attaches to each entering process it
    sees before its exec: that process must already be the sandbox's, uid, capabilities,
    seccomp filter and no_new_privs, and hold nothing of the client's but its stdio (the client
    is given a host terminal as an extra fd)."""
    _start_probe(sm, probes, "ptrace_grab", "os")
    status = sm.exec("victim", "cat", "/proc/1/status").out
    init = _status_fields(";".join(status.splitlines()))
    with _host_terminal() as (_, slave):
        for _ in range(ROUNDS):
            _exec_holding(sm, slave, "victim", "true")
            if _log(sm, "victim").count("attached") >= 3:
                break
    log = _log(sm, "victim")
    attached = [line for line in log.splitlines() if line.startswith("attached")]
    assert attached or "attach refused" in log, log
    for line in attached:
        fields = _status_fields(line.split("|")[1])
        assert fields["Seccomp"] == "2", line
        assert fields["NoNewPrivs"] == "1", line
        assert fields["CapEff"] == init["CapEff"], (line, init["CapEff"])
        assert fields["Uid"].split() == init["Uid"].split(), line
        assert sorted(fields["fds"].strip(",").split(",")) == ["0", "1", "2"], line


# ---------------------------------------------------------------------------------------------
# Terminals


@contextlib.contextmanager
def _host_terminal(rows: int = 24, columns: int = 80) -> Iterator[tuple[int, int]]:
    """A pty of the host's devpts: (master, slave), the slave as a user's terminal is."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    try:
        yield master, slave
    finally:
        os.close(master)
        os.close(slave)


def _on_terminal(argv: list[str], slave: int) -> subprocess.Popen[bytes]:
    """Run `argv` with the terminal as stdin, stdout, stderr and controlling terminal, as a
    shell runs a command."""
    return subprocess.Popen(
        argv,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        # Safe here: pytest runs this test in one thread.
        preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),  # noqa: PLW1509
        env=_environment(),
    )


def _read_terminal(master: int, until: str | None = None) -> str:
    """What was written to the terminal: until `until` shows, or until nothing more comes."""
    os.set_blocking(master, False)
    text = b""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        try:
            chunk = os.read(master, 65536)
        except BlockingIOError:
            chunk = b""
        except OSError:  # EIO: no slave fd left
            break
        text += chunk
        if until is not None and until in text.decode(errors="replace"):
            break
        if until is None and not chunk:
            break
        time.sleep(0.02)
    return text.decode(errors="replace")


def test_exec_without_t_hands_no_host_terminal_to_inject_keystrokes_into(
    sm: Sandman, probes: Path
) -> None:
    """TIOCSTI: with the admin's terminal as its stdio the probe would push keystrokes into the
    admin's shell (root of the host, CAP_SYS_ADMIN: even a terminal that is not its own)."""
    sm.write("box", _hostile_unit(probes, "os"))
    sm.apply()
    with _host_terminal() as (master, slave):
        client = _on_terminal(sm.argv("exec", "box", "--", "/opt/probes/tiocsti"), slave)
        assert client.wait(timeout=60) == 0
        output = _read_terminal(master)
        queued = struct.unpack("i", fcntl.ioctl(slave, termios.FIONREAD, b"\0" * 4))[0]
    assert "injected" not in output and output.count("fd ") == 3, output
    assert queued == 0, f"{queued} bytes pushed into the host terminal's input"


def _command_process(sm: Sandman, name: str, cmdline: bytes) -> int | None:
    for pid in processes_in_cgroup(sm.base, name):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/cmdline").read_bytes() == cmdline:
                return pid
    return None


def _reaped(pid: int, start: int) -> bool:
    found = stat_of(pid)
    return found is None or found[1] != start


@pytest.mark.parametrize("tty", [False, True], ids=["pipes", "tty"])
def test_the_command_holds_only_its_stdio_none_a_host_terminal_and_dies_with_the_client(
    sm: Sandman, tty: bool
) -> None:
    sm.write("box", unit())
    sm.apply()
    script = "echo ready; exec sleep 999"
    with _host_terminal() as (master, slave):
        option = ["-t"] if tty else []
        client = _on_terminal(sm.argv("exec", "box", *option, "--", "sh", "-c", script), slave)
        try:
            assert "ready" in _read_terminal(master, until="ready")
            pid = wait_for(
                lambda: _command_process(sm, "box", b"sleep\0999\0"), "the command to run"
            )
            fds = sorted(os.listdir(f"/proc/{pid}/fd"))
            assert fds == ["0", "1", "2"], fds
            host_devpts = os.fstat(slave).st_dev
            for fd in fds:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                assert os.stat(f"/proc/{pid}/fd/{fd}").st_dev != host_devpts, (fd, target)
                assert not target.startswith("/dev/tty") and target != "/dev/console", target
                assert target.startswith("/dev/pts/" if tty else "pipe:"), target
            start = (stat_of(pid) or ("", 0))[1]
        finally:
            client.kill()
            client.wait(timeout=60)
        wait_for(lambda: not alive(pid, start), "the command to end with its client")
        # Its parent died with the client: the host's init reaps it, and until then the sandbox's
        # init cannot finish exiting (a pid namespace ends when its last PID is freed).
        wait_for(lambda: _reaped(pid, start), "the command to be reaped")


def test_exec_t_gives_the_window_size_and_ends_at_the_end_of_piped_input(sm: Sandman) -> None:
    sm.write("box", unit())
    sm.apply()
    for given, expected in (("hello\n", "hello"), ("no newline", "no newline")):
        done = subprocess.run(
            sm.argv("exec", "box", "-t", "--", "cat"),
            input=given,
            capture_output=True,
            text=True,
            env=_environment(),
            timeout=60,
            check=False,
        )
        assert done.returncode == 0 and expected in done.stdout, done
    with _host_terminal(rows=33, columns=101) as (master, slave):
        client = _on_terminal(sm.argv("exec", "box", "-t", "--", "stty", "size"), slave)
        assert client.wait(timeout=60) == 0
        assert "33 101" in _read_terminal(master), "the pty has the terminal's size"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signals_to_the_client_reach_the_command(sm: Sandman, signum: int) -> None:
    sm.write("box", unit())
    sm.apply()
    script = (
        "sleep 1000 & child=$!; "
        'trap "kill $child; echo caught; exit 3" TERM INT HUP; '
        "echo ready; wait"
    )
    client = subprocess.Popen(
        sm.argv("exec", "box", "--", "sh", "-c", script),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
        env=_environment(),
    )
    assert client.stdout is not None
    assert client.stdout.readline() == "ready\n"
    client.send_signal(signum)
    rest, _ = client.communicate(timeout=60)
    assert (client.returncode, rest) == (3, "caught\n")


def test_a_killed_client_takes_the_command_down(sm: Sandman) -> None:
    """SIGKILL cannot be relayed: PR_SET_PDEATHSIG does it. No terminal here, whose hangup would
    signal the entering process on the client's exit and hide a missing parent-death signal."""
    sm.write("box", unit())
    sm.apply()
    client = subprocess.Popen(
        sm.argv("exec", "box", "--", "sh", "-c", "echo ready; exec sleep 998"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        start_new_session=True,
        env=_environment(),
    )
    assert client.stdout is not None
    assert client.stdout.readline() == b"ready\n"
    pid = wait_for(lambda: _command_process(sm, "box", b"sleep\0998\0"), "the command to run")
    start = (stat_of(pid) or ("", 0))[1]
    client.kill()
    client.wait(timeout=60)
    client.stdout.close()
    wait_for(lambda: not alive(pid, start), "the command to end with its client")
    wait_for(lambda: _reaped(pid, start), "the command to be reaped")  # see above


def test_exec_t_follows_the_terminal_size(sm: Sandman) -> None:
    """A resize of the user's terminal (SIGWINCH to the client) reaches the sandbox's pty."""
    sm.write("box", unit())
    sm.apply()
    script = 'trap "stty size; exit 0" WINCH; echo ready; while :; do sleep 0.1; done'
    with _host_terminal(rows=24, columns=80) as (master, slave):
        client = _on_terminal(sm.argv("exec", "box", "-t", "--", "sh", "-c", script), slave)
        assert "ready" in _read_terminal(master, until="ready")
        # As a terminal emulator does: the new size, and SIGWINCH to the foreground group.
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        assert "40 120" in _read_terminal(master, until="40 120")
        assert client.wait(timeout=60) == 0
