"""How spawn's first fork picks its way into the sandbox's cgroup, without forking: clone3 with
CLONE_INTO_CGROUP where the kernel takes it, os.fork and a join where it refuses (the kernel
calls are replaced; tests/root/test_syscalls.py makes the real one)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from sandman.kernel import spawn
from sandman.kernel import syscalls as sc

FORKED = 4242  # what the replaced os.fork returns


@pytest.fixture
def clones(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The fds fork_into_cgroup was given; os.fork returns FORKED; no refusal remembered yet."""
    monkeypatch.setattr(spawn, "_refused", [])
    monkeypatch.setattr(os, "fork", lambda: FORKED)
    return []


def clone_answering(clones: list[int], answer: int | OSError) -> object:
    def fork_into_cgroup(fd: int) -> int:
        os.fstat(fd)  # open while the clone runs
        clones.append(fd)
        if isinstance(answer, OSError):
            raise answer
        return answer

    return fork_into_cgroup


def test_born_in_the_cgroup_when_the_kernel_takes_it(
    tmp_path: Path, clones: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sc, "fork_into_cgroup", clone_answering(clones, 77))
    assert spawn._fork_into(str(tmp_path)) == (77, True)
    (fd,) = clones
    with pytest.raises(OSError) as closed:  # the parent keeps no fd of the cgroup
        os.fstat(fd)
    assert closed.value.errno == errno.EBADF


def test_without_a_cgroup_dir_it_is_a_plain_fork(clones: list[int]) -> None:
    assert spawn._fork_into(None) == (FORKED, False)  # v1 and hybrid hosts: the driver has none


@pytest.mark.parametrize("err", sorted(spawn._KERNEL_REFUSALS))
def test_a_kernel_refusal_falls_back_and_is_not_asked_again(
    tmp_path: Path, clones: list[int], monkeypatch: pytest.MonkeyPatch, err: int
) -> None:
    refusal = OSError(err, f"clone3: {os.strerror(err)}")
    monkeypatch.setattr(sc, "fork_into_cgroup", clone_answering(clones, refusal))
    assert spawn._fork_into(str(tmp_path)) == (FORKED, False)
    assert spawn._fork_into(str(tmp_path / "other")) == (FORKED, False)
    assert len(clones) == 1
    assert spawn._refused == [err]


@pytest.mark.parametrize("err", [errno.ENODEV, errno.EBUSY, errno.EAGAIN, errno.EBADF])
def test_a_refusal_about_one_cgroup_falls_back_and_is_asked_again(
    tmp_path: Path, clones: list[int], monkeypatch: pytest.MonkeyPatch, err: int
) -> None:
    """A cgroup removed, not a leaf or full: the child forks and its join names the cgroup's
    file in the error; the next sandbox's cgroup is another, so clone3 is tried again."""
    refusal = OSError(err, f"clone3: {os.strerror(err)}")
    monkeypatch.setattr(sc, "fork_into_cgroup", clone_answering(clones, refusal))
    assert spawn._fork_into(str(tmp_path)) == (FORKED, False)
    assert spawn._fork_into(str(tmp_path)) == (FORKED, False)
    assert len(clones) == 2
    assert spawn._refused == []


def test_a_cgroup_dir_that_cannot_be_opened_leaves_it_to_the_join(
    tmp_path: Path, clones: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sc, "fork_into_cgroup", clone_answering(clones, 77))
    assert spawn._fork_into(str(tmp_path / "gone")) == (FORKED, False)
    assert clones == []
