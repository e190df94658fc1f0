"""`sandman shell NAME [USER]` (issue #17): a login shell of the sandbox's /etc/passwd in a
terminal of the sandbox, through exec's way in. Driven from a pseudo-terminal the test opens, as
an admin's terminal; what the shell says of itself ($0, its ids, its home, its terminal) is read
back from the screen."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest
import test_sandboxes as base
from test_sandboxes import WAIT, Sandman, sm, unit

pytestmark = pytest.mark.root

busybox_image = base.busybox_image
__all__ = ["busybox_image", "sm"]  # fixtures, used by name

REPORT = (
    'echo "zero=$0 ids=$(id -u):$(id -g) home=$HOME pwd=$(pwd) user=$USER tty=$(tty)"; exit 3\n'
)


def on_a_terminal(sm: Sandman, *args: str, until: bytes | None = None) -> tuple[int, str]:
    """`sandman shell ARGS` with a pty of the test as its terminal: REPORT typed at the first
    prompt, cursor position requests answered (busybox's line editor asks), as a terminal
    does. The exit code and what the terminal showed; with `until`, once it shows that, the
    client is sent SIGHUP, which it passes on to the shell, as a terminal closed would.
    (SIGKILLed, it would leave the dying shell to the host's init to reap: an init that reaps
    lazily keeps the sandbox's pid namespace, and its init, from ending for that long.)"""
    master, slave = os.openpty()
    try:
        process = subprocess.Popen(
            sm.argv("shell", *args), stdin=slave, stdout=slave, stderr=slave, start_new_session=True
        )
    finally:
        os.close(slave)
    try:
        screen = _converse(master, process, until)
        if until is not None:
            process.send_signal(signal.SIGHUP)
        code = process.wait(timeout=WAIT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)
    return code, screen.decode(errors="replace")


def _converse(master: int, process: subprocess.Popen[bytes], until: bytes | None) -> bytes:
    screen, typed = b"", False
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if not select.select([master], [], [], 0.1)[0]:
            if process.poll() is not None:
                break
            continue
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the client closed the terminal
            break
        screen += chunk
        if until is not None and until in screen:
            break
        if b"\x1b[6n" in chunk:
            os.write(master, b"\x1b[1;1R")
        if not typed and screen.replace(b"\x1b[6n", b"").rstrip().endswith((b"#", b"$")):
            os.write(master, REPORT.encode())
            typed = True
    return screen


def report_of(screen: str) -> dict[str, str]:
    line = next(s for s in screen.splitlines() if s.startswith("zero=") and "$" not in s)
    return dict(field.split("=", 1) for field in line.split())


def test_shell_runs_the_users_login_shell_in_a_terminal_of_the_sandbox(sm: Sandman) -> None:
    sm.write("box", unit())
    sm.apply()
    code, screen = on_a_terminal(sm, "box")
    assert code == 3, screen
    report = report_of(screen)
    # busybox's passwd: root's shell is /bin/sh, started as login(1) starts one.
    assert report["zero"] == "-sh" and report["ids"] == "0:0", screen
    assert report["home"] == "/root" and report["pwd"] == "/root" and report["user"] == "root"
    assert report["tty"].startswith("/dev/pts/"), screen  # the sandbox's own devpts


def test_shell_takes_a_user_by_name_with_their_shell_and_home(sm: Sandman) -> None:
    sm.write("box", unit())
    sm.apply()
    sm.sh(
        "box",
        "echo 'alice:x:1000:1001:Alice:/home/alice:/bin/ash' >> /etc/passwd"
        " && mkdir -p /home/alice && chown 1000:1001 /home/alice",
    )
    code, screen = on_a_terminal(sm, "box", "alice")
    assert code == 3, screen
    report = report_of(screen)
    assert report["zero"] == "-ash" and report["ids"] == "1000:1001", screen
    assert report["home"] == report["pwd"] == "/home/alice" and report["user"] == "alice"
    code, screen = on_a_terminal(sm, "box", "2000")
    assert code == 3 and report_of(screen)["ids"] == "2000:2000", screen
    unknown = sm.run("shell", "box", "mallory", expect=2)
    assert "no user 'mallory'" in unknown.err and "Traceback" not in unknown.err, unknown


def test_a_passwd_that_leads_out_of_the_root_or_blocks_is_not_followed(
    sm: Sandman, tmp_path: Path
) -> None:
    """The sandbox makes its /etc/passwd a symlink to a host path, then a FIFO: the host's file
    is never read (its shell would be named), the FIFO never blocks sandman, and /bin/sh runs
    (a FIFO there then blocks the shell's own look-ups: the sandbox's business)."""
    host_passwd = tmp_path / "host-passwd"
    host_passwd.write_text("root:x:0:0:root:/root:/bin/host-only-shell\n")
    sm.write("box", unit())
    sm.apply()
    sm.sh("box", f"ln -sf {host_passwd} /etc/passwd")
    code, screen = on_a_terminal(sm, "box")
    assert code == 3 and "host-only-shell" not in screen, screen
    assert report_of(screen)["zero"] == "-sh", screen
    sm.sh("box", "rm /etc/passwd && mkfifo /etc/passwd")
    _, screen = on_a_terminal(sm, "box", until=b"built-in shell")
    assert "running /bin/sh" in screen and "built-in shell" in screen, screen


def test_shell_refuses_what_it_cannot_enter_in_one_line(sm: Sandman) -> None:
    missing = sm.run("shell", "nobody-here", expect=2)
    assert "no sandbox 'nobody-here'" in missing.err and "Traceback" not in missing.err
    bad = sm.run("shell", "a", "b", "c", expect=2)
    assert bad.err.startswith("usage: sandman shell"), bad
