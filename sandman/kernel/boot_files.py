"""The files a booted init finds in its root, written by the init-to-be itself, after pivot_root
and before exec (kernel/spawn.py): /run/host/container-manager, and /etc/machine-id when the
image has none.

Written from inside, as the sandbox's root in its own root: no path can lead to a host file,
whatever the image's symlinks say. The image is still not trusted with what sandman writes:
no symlink is followed (RESOLVE_NO_SYMLINKS), and only a regular file is written to (an image's
/etc/machine-id that is a FIFO or a device is left alone), as systemd-nspawn does.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

from sandman.kernel import syscalls as sc

_NO_LINKS = sc.RESOLVE_NO_SYMLINKS | sc.RESOLVE_NO_MAGICLINKS | sc.RESOLVE_BENEATH
_DIRECTORY = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
# What leaves a file as the image has it, for systemd to deal with (it then takes the machine id
# from `container_uuid`): a read-only root, a path that is a symlink, or not a directory.
_LEFT_ALONE = (errno.EROFS, errno.ELOOP, errno.ENOTDIR, errno.EACCES, errno.EPERM)
# What systemd writes into an image's /etc/machine-id to mean "not set yet" (machine-id(5)).
_UNSET = (b"", b"uninitialized")


def write(manager: str, machine_id: str) -> None:
    """/run/host/container-manager holding `manager`, and the machine id where none is set."""
    root = os.open("/", _DIRECTORY)
    try:
        _container_manager(root, manager)
        _machine_id(root, machine_id)
    finally:
        os.close(root)


def _container_manager(root: int, manager: str) -> None:
    """In /run, the fresh tmpfs of a booted sandbox: nothing of the image is there."""
    run = sc.openat2(root, "run", _DIRECTORY, 0, _NO_LINKS)
    try:
        with contextlib.suppress(FileExistsError):
            os.mkdir("host", 0o755, dir_fd=run)
        host = sc.openat2(run, "host", _DIRECTORY, 0, _NO_LINKS)
    finally:
        os.close(run)
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open("container-manager", flags, 0o444, dir_fd=host)
        try:
            os.write(fd, f"{manager}\n".encode())
        finally:
            os.close(fd)
    finally:
        os.close(host)


def _machine_id(root: int, machine_id: str) -> None:
    try:
        etc = sc.openat2(root, "etc", _DIRECTORY, 0, _NO_LINKS)
    except FileNotFoundError:
        return  # no /etc: no OS to boot; the init will say what it misses
    except OSError as exc:
        if exc.errno in _LEFT_ALONE:
            return
        raise
    try:
        _write_unset(etc, machine_id)
    except OSError as exc:
        if exc.errno not in _LEFT_ALONE:
            raise
    finally:
        os.close(etc)


def _write_unset(etc: int, machine_id: str) -> None:
    """Create /etc/machine-id, or fill it when empty or "uninitialized"; a set one is kept."""
    line = f"{machine_id}\n".encode()
    try:
        found = sc.openat2(etc, "machine-id", os.O_PATH | os.O_CLOEXEC, 0, _NO_LINKS)
    except FileNotFoundError:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open("machine-id", flags, 0o444, dir_fd=etc)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
        return
    try:
        if not stat.S_ISREG(os.fstat(found).st_mode):
            return
        # Reopened through the O_PATH fd: the file checked is the file written.
        fd = os.open(f"/proc/self/fd/{found}", os.O_RDWR | os.O_CLOEXEC)
    finally:
        os.close(found)
    try:
        if os.read(fd, 64).strip() not in _UNSET:
            return
        os.ftruncate(fd, 0)
        os.pwrite(fd, line, 0)
    finally:
        os.close(fd)
