"""`exec` runs from a sealed in-memory copy of its interpreter (the CVE-2019-5736 defence).

The process that `exec` forks into a sandbox's pid namespace runs the host's Python until it execs
the command, and the sandbox can see it there. Its /proc/PID/exe is a magic link to the host's
interpreter: the runc attack opens it (O_PATH) while the process still runs Python, and reopens it
for writing through /proc/self/fd once the exec is over, overwriting the host's interpreter.
Keeping that process non-dumpable closes /proc/PID/exe only to a sandbox without CAP_SYS_PTRACE
in the host's user namespace; a sandbox with `namespaces.user = false` and CAP_SYS_PTRACE
(`capabilities = "os"`) passes ptrace_may_access anyway. So, as runc and crun do, `exec` re-execs
itself from a memfd copy of the interpreter, sealed against writes, before it enters anything:
/proc/PID/exe then leads to that copy, which nobody can write, and never to a host file.

The copy costs a second interpreter start (about 20 ms) and the size of the interpreter in memory
for the life of the `exec` client.
"""

from __future__ import annotations

import fcntl
import os
import sys

from sandman.kernel import syscalls as sc

_SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
# Set for the re-exec'd process only: a copy that still does not look sealed is an error, not a
# reason to re-exec again, forever.
_MARK = "_SANDMAN_EXEC_SEALED"


def run_sealed() -> None:
    """Return if the interpreter already runs from a sealed memfd; otherwise re-exec from one.
    OSError when the copy cannot be made or run."""
    if is_sealed():
        os.environ.pop(_MARK, None)
        return
    if os.environ.get(_MARK):
        raise OSError(0, "the re-exec'd interpreter does not run from a sealed copy")
    copy = _sealed_copy()
    os.environ[_MARK] = "1"
    # argv[0] stays the interpreter's path: Python finds its prefix and the venv from it, not
    # from /proc/self/exe (which now reads "/memfd:...").
    os.execve(copy, [sys.executable, *sys.orig_argv[1:]], os.environ)


def is_sealed() -> bool:
    fd = os.open("/proc/self/exe", os.O_RDONLY | os.O_CLOEXEC)
    try:
        return fcntl.fcntl(fd, fcntl.F_GET_SEALS) & _SEALS == _SEALS
    except OSError:  # EINVAL: not a memfd
        return False
    finally:
        os.close(fd)


def _sealed_copy() -> int:
    copy = _memfd()
    source = os.open("/proc/self/exe", os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(source).st_size
        done = 0
        while done < size:
            done += os.sendfile(copy, source, done, size - done)
    finally:
        os.close(source)
    fcntl.fcntl(copy, fcntl.F_ADD_SEALS, _SEALS)
    return copy


def _memfd() -> int:
    flags = os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING
    try:
        return os.memfd_create("sandman-exec", flags | sc.MFD_EXEC)
    except OSError:  # EINVAL: a kernel before 6.3, where every memfd may be executed
        return os.memfd_create("sandman-exec", flags)
