"""An instance's cgroup on a host run by systemd: a transient scope that systemd delegated to
sandman, kept by a holder process.

systemd makes a scope only around a process, and removes it, with every cgroup below, once no
process is left in it. The sandboxes' cgroups would go with the last sandbox, and a slice's
limits with its last member, to be made again by the next apply. So a holder, a sleeping process
of sandman's own, founds the scope and then moves to a leaf of its own (cgroup v2 lets a cgroup
that enables controllers for its children hold no process itself). It stays while the instance
has anything applied; release() ends it once nothing is left, and systemd removes the scope.

The scope is no service's: `systemctl restart sandman` never touches what runs in it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time

from sandman.kernel import cgroup_common as common

# No unit can take this name (unit names have no dot), so it is never a slice's or a sandbox's.
HOLDER = "sandman.holder"
HOLDER_NAME = "sandman-holder"  # its comm, what ps and top show
# argv[0] stays the interpreter's path, from which Python finds its library.
_HOLD = (
    f"import signal\nwith open('/proc/self/comm', 'w') as f: f.write({HOLDER_NAME!r})\n"
    "while True: signal.pause()"
)
_RELEASE_WAIT = 10.0


def ensure(root: str, base: str, description: str) -> bool:
    """Make the scope whose cgroup is `base` (`SLICE/UNIT.scope`) with a holder in it, unless it
    exists. True when made. Raises OSError (systemd.SystemdError when systemd refused).

    The scope has no ordering against sandman.service: its start job would wait for the
    service's, which (Type=notify) waits for the first apply, which waits for the scope."""
    top = os.path.join(root, base)
    if os.path.isdir(top):
        return False
    from sandman.kernel import systemd  # D-Bus only when a scope is to be made

    slice_name, unit = os.path.split(base)
    holder = _start_holder()
    try:
        properties = [
            ("Description", "s", description),
            ("Slice", "s", slice_name),
            ("Delegate", "b", True),
            # A holder ended by SIGKILL leaves a failed scope that would keep its name.
            ("CollectMode", "s", "inactive-or-failed"),
        ]
        systemd.start_scope(unit, [holder], properties)
        leaf = os.path.join(top, HOLDER)
        os.makedirs(leaf, exist_ok=True)
        common.write(os.path.join(leaf, "cgroup.procs"), str(holder))
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.kill(holder, signal.SIGKILL)
        raise
    return True


def release(root: str, base: str) -> None:
    """End the holder of the scope at `base`; systemd removes the scope once it is empty. Waits
    for that, so that a run that left nothing finds nothing."""
    top = os.path.join(root, base)
    leaf = os.path.join(top, HOLDER)
    for pid in common.subtree_procs([leaf]):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + _RELEASE_WAIT
    # A killed process leaves cgroup.procs only once it has exited; then systemd sees the
    # scope empty and removes it.
    while common.subtree_procs([leaf]) and time.monotonic() < deadline:
        time.sleep(0.02)
    while os.path.isdir(top) and time.monotonic() < deadline:
        time.sleep(0.05)


def _start_holder() -> int:
    """Fork twice, so that the holder is no child of ours (a daemon need not reap it), in a
    session of its own; its pid comes back through a pipe."""
    read_end, write_end = os.pipe()
    middle = os.fork()
    if middle == 0:  # pragma: no cover - the child's exit code is all the parent sees
        try:
            os.close(read_end)
            os.setsid()
            holder = os.fork()
            if holder == 0:
                _become_holder()
            os.write(write_end, str(holder).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(middle, 0)
    with os.fdopen(read_end, "rb") as pipe:
        answer = pipe.read()
    if not answer:
        raise OSError(0, "could not start the scope's holder process")
    return int(answer)


def _become_holder() -> None:  # pragma: no cover - runs in the holder, then execs
    """No fd of the parent's, default signals, no mask: then sleep in a tiny interpreter."""
    try:
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.closerange(3, 1 << 16)
        for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(number, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        os.execv(sys.executable, [sys.executable, "-I", "-S", "-c", _HOLD])
    finally:
        os._exit(127)
