"""What finish() reports when the sandbox's init fails in its own set-up while apply prepares
it: the init's error, never the broken pipe apply meets when it then tells the gone init to
start (a race CI met: "starting the init: [Errno 32] Broken pipe" instead of the key)."""

from __future__ import annotations

import json
import os

import pytest

from sandman.kernel import spawn


def exited_child() -> int:
    """A child of this test that has exited (a zombie until reaped): a pid spawn may signal
    and reap without touching anything else."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    return pid


def reported(*messages: dict[str, object]) -> int:
    """A report pipe holding these JSON lines, its write end closed (the children are gone)."""
    read, write = os.pipe2(os.O_CLOEXEC)
    os.write(write, b"".join(json.dumps(m).encode() + b"\n" for m in messages))
    os.close(write)
    return read


def started_with_gone_init(init: int, *after_pid: dict[str, object]) -> spawn.Started:
    """A spawn whose init reported its pid, then failed and closed its end of the go pipe."""
    go_read, go_write = os.pipe2(os.O_CLOEXEC)
    os.close(go_read)
    report = reported({"pid": init}, *after_pid)
    return spawn.Started(exited_child(), report, go_write, lambda pid: None, 5.0)


def test_the_init_s_own_error_is_reported_not_the_broken_pipe() -> None:
    init = exited_child()
    started = started_with_gone_init(
        init,
        {"key": "sandbox.working_directory", "error": "No such file or directory", "errno": 2},
    )
    try:
        with pytest.raises(spawn.SpawnError) as raised:
            spawn._parent(started)
    finally:
        os.waitpid(init, 0)
    assert raised.value.key == "sandbox.working_directory"
    assert raised.value.errno == 2


def test_an_init_gone_without_a_word_is_an_error_not_a_started_sandbox() -> None:
    init = exited_child()
    started = started_with_gone_init(init)
    try:
        with pytest.raises(spawn.SpawnError) as raised:
            spawn._parent(started)
    finally:
        os.waitpid(init, 0)
    assert "exited before it was told to start" in str(raised.value)
