"""Entering a sandbox's network namespace from the host, for one thread and without forking:
what the veth code and the tests use to make a socket, or read /proc/sys/net, inside."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager

from sandman.kernel import syscalls


def open_netns(pid: int) -> int:
    try:
        return os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise OSError(errno.ESRCH, "the process is gone", f"pid {pid}") from None


@contextmanager
def netns_fd(pid: int) -> Iterator[int]:
    """The netns of `pid`, refused if it is the caller's own: configuring "the sandbox's eth0"
    in the host's netns would reconfigure the host (bubblewrap's re-checked preconditions)."""
    fd = open_netns(pid)
    try:
        theirs, ours = os.fstat(fd), os.stat("/proc/thread-self/ns/net")
        if (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino):
            raise OSError(errno.EINVAL, "process shares the host's network namespace", f"pid {pid}")
        yield fd
    finally:
        os.close(fd)


@contextmanager
def thread_in_netns(ns_fd: int) -> Iterator[None]:
    """This thread in the netns `ns_fd` until the block ends: a socket made there stays there,
    /proc/sys/net and /sys/class/net are that netns's."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        syscalls.setns(ns_fd, syscalls.CLONE_NEWNET)
        try:
            yield
        finally:
            syscalls.setns(own, syscalls.CLONE_NEWNET)
    finally:
        os.close(own)


@contextmanager
def thread_in_netns_of(pid: int) -> Iterator[None]:
    """This thread in the netns of process `pid` until the block ends."""
    fd = open_netns(pid)
    try:
        with thread_in_netns(fd):
            yield
    finally:
        os.close(fd)
