"""The exit status of a process sandman is not the parent of, through a pidfd held while it
ended (PIDFD_GET_INFO with PIDFD_INFO_EXIT, Linux 6.15).

A sandbox's init is the host init's child once apply returns, so no sandman process can wait()
for it. The kernel keeps the status of a process that had a pidfd open when it ended, and gives
it to the holder of that pidfd once the parent has reaped it: the daemon, which watches every
init by pidfd, can so learn how each one ended. Before the reap, and on older kernels, there is
nothing to read.
"""

from __future__ import annotations

import errno
import fcntl
import struct

# <linux/pidfd.h>: _IOWR(PIDFS_IOCTL_MAGIC 0xFF, 11, struct pidfd_info), 64 bytes in version 0.
PIDFD_GET_INFO = 0xC040FF0B
PIDFD_INFO_EXIT = 1 << 3
_INFO = struct.Struct("=QQ12I")  # mask, cgroupid, pid ... fsgid, then exit_code (an s32)
_EXIT_CODE = 11  # index of exit_code among the twelve 32-bit fields


class UnknowableError(OSError):
    """The kernel will not tell: no PIDFD_GET_INFO, or reaped without an exit status kept."""


def exit_status(pidfd: int) -> int | None:
    """The wait status of the process of `pidfd` (os.waitstatus_to_exitcode reads it) once its
    parent reaped it; None while it runs or is a zombie. UnknowableError when it never will be."""
    buffer = bytearray(_INFO.size)
    struct.pack_into("=Q", buffer, 0, PIDFD_INFO_EXIT)
    try:
        fcntl.ioctl(pidfd, PIDFD_GET_INFO, buffer)
    except OSError as exc:
        # ESRCH: reaped, and no status kept (a kernel before 6.15); ENOTTY, EINVAL: no ioctl.
        if exc.errno in (errno.ESRCH, errno.ENOTTY, errno.EINVAL, errno.EOPNOTSUPP):
            message = f"no exit status from the kernel: {exc.strerror}"
            raise UnknowableError(exc.errno, message) from None
        raise
    fields = _INFO.unpack(buffer)
    if not fields[0] & PIDFD_INFO_EXIT:
        return None
    status: int = struct.unpack("=i", struct.pack("=I", fields[2 + _EXIT_CODE]))[0]
    return status


def describe(status: int) -> dict[str, object]:
    """{"code": N} for an exit, {"signal": "SIGKILL"} for a death by signal."""
    import os

    from sandman.signals import signal_name  # names SIGRTMIN+3 too

    if os.WIFSIGNALED(status):
        return {"signal": signal_name(os.WTERMSIG(status))}
    return {"code": os.waitstatus_to_exitcode(status)}
