"""How an exited init ended, in `status` and `show` (issue #17). No sandman process is an init's
parent, so only a running daemon, which holds a pidfd of every init, learns it from the kernel
(PIDFD_INFO_EXIT, Linux 6.15); without one, `status` says `exited` and no more."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
import test_daemon
import test_sandboxes as base
from test_daemon import Daemon, daemon
from test_sandboxes import Sandman, sm, unit, wait_for

pytestmark = pytest.mark.root

busybox_image = base.busybox_image
__all__ = ["busybox_image", "daemon", "sm"]  # fixtures, used by name
assert test_daemon  # the daemon fixture's module

# Kernels before 6.15 keep no exit status for a pidfd's holder: there the end stays unknown.
KERNEL_KEEPS_EXITS = tuple(int(x) for x in os.uname().release.split(".")[:2]) >= (6, 15)


def waiting_init(go: Path, code: int) -> str:
    """A unit whose init exits with `code` once the file `go` appears (bound in at /signal)."""
    script = f"while [ ! -e /signal/go ]; do sleep 0.05; done; exit {code}"
    return unit(
        command=("sh", "-c", script),
        rest=f'[[mount]]\ntype = "bind"\nsource = "{go.parent}"\ntarget = "/signal"\n',
    )


def ended(sm: Sandman, name: str) -> dict[str, object] | None:
    found: dict[str, object] | None = sm.status_of(name).get("exit")
    return found


def test_the_daemon_learns_how_an_init_ended(
    sm: Sandman, daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    go = tmp_path / "signal" / "go"
    go.parent.mkdir()
    sm.write("quitter", waiting_init(go, 3))
    sm.write("victim", unit())
    the_daemon = daemon(sm, "--drift-interval", "0")
    the_daemon.wait_message("READY=1")
    victim = sm.running_init("victim")
    go.touch()
    os.kill(victim, signal.SIGKILL)
    if not KERNEL_KEEPS_EXITS:
        the_daemon.wait_log(r"sandbox/quitter: how the init .* ended is unknown")
        assert ended(sm, "quitter") is None
        return
    the_daemon.wait_log(r"sandbox/quitter: the init \(pid \d+\) ended: code 3")
    wait_for(lambda: ended(sm, "victim"), "the victim's end in status")
    quitter, killed = ended(sm, "quitter"), ended(sm, "victim")
    assert quitter is not None and quitter["code"] == 3, quitter
    assert killed is not None and killed["signal"] == "SIGKILL", killed
    rows = {line.split()[0]: line for line in sm.run("status").out.splitlines()[1:] if line}
    assert "exited (code 3)" in rows["quitter"] and "exited (SIGKILL)" in rows["victim"], rows
    shown = json.loads(sm.run("show", "quitter", "--json").out)
    assert shown["exit"]["code"] == 3
    assert "State: exited (code 3) at " in sm.run("show", "quitter").out


def test_without_a_daemon_an_ended_init_is_exited_and_no_more(sm: Sandman, tmp_path: Path) -> None:
    sm.write("short", unit(command=("sh", "-c", "exit 3")))
    sm.apply()
    wait_for(lambda: sm.status_of("short")["state"] == "exited" or None, "the init's end")
    assert ended(sm, "short") is None
    assert "how it ended is unknown" in sm.run("show", "short").out
