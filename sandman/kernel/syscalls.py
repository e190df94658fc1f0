"""The one ctypes module of sandman: the Linux calls it needs beyond `os`, as thin typed wrappers.

Every failing call raises `OSError(errno, "<syscall>: <strerror> (<hint>)", path)`, so callers add
context without guessing which call failed or on what; no other module imports ctypes.

unshare, setns, pivot_root, capset and prctl change the calling *thread*: use them in a
single-threaded child after os.fork(). clone() with namespace flags or a new stack is missing on
purpose: such a child would share CPython's locks and memory with its parent, so the spawn path
is a fork + unshare(). The one clone3 here, fork_into_cgroup, is a fork in every other respect: no
stack, no CLONE_VM, SIGCHLD at exit, and CPython's own fork hooks around it, as os.fork runs them.
"""

# No `from __future__ import annotations`: typing compiles each string annotation of a
# NamedTuple when the class is made (about 0.1 ms a field, at every start).
import ctypes
import errno
import gc
import os
import signal
from collections.abc import Callable, Iterable
from typing import NamedTuple, NoReturn, TypeAlias

from sandman import syscall_table
from sandman.capabilities import CAPABILITIES

StrPath: TypeAlias = str | bytes | os.PathLike[str] | os.PathLike[bytes]

# <linux/sched.h>
CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_INTO_CGROUP = 0x200000000  # clone3 only (5.7): the child starts in clone_args.cgroup
CLONE_ARGS_SIZE_VER2 = 88  # sizeof(struct clone_args) with its cgroup field

# <linux/mount.h>: flags of mount(2)
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24

# <sys/mount.h> (glibc; the kernel spells them out in fs/namespace.c): flags of umount2(2)
MNT_FORCE = 1
MNT_DETACH = 2
MNT_EXPIRE = 4
UMOUNT_NOFOLLOW = 8

# <linux/mount.h>: the new mount API (open_tree, move_mount, mount_setattr)
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
MOVE_MOUNT_F_SYMLINKS = 0x01
MOVE_MOUNT_F_AUTOMOUNTS = 0x02
MOVE_MOUNT_F_EMPTY_PATH = 0x04
MOVE_MOUNT_T_SYMLINKS = 0x10
MOVE_MOUNT_T_AUTOMOUNTS = 0x20
MOVE_MOUNT_T_EMPTY_PATH = 0x40
MOUNT_ATTR_RDONLY = 0x01
MOUNT_ATTR_NOSUID = 0x02
MOUNT_ATTR_NODEV = 0x04
MOUNT_ATTR_NOEXEC = 0x08
MOUNT_ATTR_NOATIME = 0x10
MOUNT_ATTR_NODIRATIME = 0x80
MOUNT_ATTR_IDMAP = 0x00100000
MOUNT_ATTR_NOSYMFOLLOW = 0x00200000

# <linux/fcntl.h>
AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000

# <linux/openat2.h>
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10
RESOLVE_CACHED = 0x20

# <linux/close_range.h>
CLOSE_RANGE_UNSHARE = 1 << 1
CLOSE_RANGE_CLOEXEC = 1 << 2
FD_LAST = 0xFFFF_FFFF  # ~0U: "up to the highest fd" for close_range

# <linux/prctl.h>
PR_SET_PDEATHSIG = 1
PR_GET_PDEATHSIG = 2
PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_SET_NAME = 15
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_SECUREBITS = 28
PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_IS_SET = 1
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_LOWER = 3
PR_CAP_AMBIENT_CLEAR_ALL = 4

# <asm-generic/ioctls.h>: a pty master's ioctls: unlock the slave (a new pty's slave is locked
# until then: its open fails with EIO), and open it without a path lookup (4.13)
TIOCSPTLCK = 0x40045431
TIOCGPTPEER = 0x5441
TIOCGPTN = 0x80045430  # <asm-generic/ioctls.h> _IOR('T', 0x30, unsigned int)

# <linux/memfd.h>: an executable memfd, asked for explicitly where vm.memfd_noexec exists (6.3)
MFD_EXEC = 0x0010

# <linux/inotify.h>: the events the daemon watches a unit directory for
IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

# <linux/capability.h>
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_LINUX_CAPABILITY_U32S_3 = 2
# The capability numbers live in sandman.capabilities, shared with the unit models.

# Called through syscall(2): glibc 2.36 lacks pivot_root and openat2, and older glibc or musl lack
# more. The numbers are sandman.syscall_table's; the version is the Linux release that added the
# call, for the hint of an ENOSYS.
_NEW_SYSCALLS = {
    "pidfd_send_signal": "5.1",
    "clone3": "5.3",
    "open_tree": "5.2",
    "move_mount": "5.2",
    "pidfd_open": "5.3",
    "close_range": "5.9",
    "openat2": "5.6",
    "mount_setattr": "5.12",
}
SYSCALL_NUMBERS = syscall_table.NUMBERS
_NR = SYSCALL_NUMBERS.get(os.uname().machine, {})

_CLONE_NAMES = {v: k for k, v in list(globals().items()) if k.startswith("CLONE_NEW")}
_PR_NAMES = {
    v: k
    for k, v in list(globals().items())
    if k.startswith("PR_") and not k.startswith("PR_CAP_AMBIENT_")
}

_PRIV = "needs CAP_SYS_ADMIN: run as root, or inside a user namespace that owns the object"
_HINTS: dict[tuple[str, int], str] = {
    ("*", errno.EPERM): _PRIV,
    ("*", errno.ENOSPC): "namespace or mount limit reached: see /proc/sys/user/max_*_namespaces "
    "and /proc/sys/fs/mount-max",
    ("unshare", errno.EINVAL): "flag unknown to this kernel, or CLONE_NEWUSER/CLONE_NEWNS "
    "from a multithreaded process",
    ("unshare", errno.EUSERS): "user namespaces nested too deep (the limit is 32)",
    ("setns", errno.EINVAL): "fd is not a namespace of type nstype, or the caller is multithreaded",
    ("mount", errno.EINVAL): "bad flag combination or options, or the target of MS_REMOUNT, "
    "MS_MOVE or a propagation change is not a mount point",
    ("mount", errno.ENODEV): "filesystem type not supported by this kernel",
    ("umount2", errno.EINVAL): "not a mount point",
    ("umount2", errno.EBUSY): "still in use; MNT_DETACH detaches it lazily",
    ("pivot_root", errno.EINVAL): "new_root must be a mount point, put_old must be under it, "
    "and / must not be shared (mount / with MS_REC|MS_PRIVATE first)",
    ("pivot_root", errno.EBUSY): "new_root or put_old is on the current root mount",
    ("sethostname", errno.EINVAL): "longer than 64 bytes",
    ("sethostname", errno.EPERM): "needs CAP_SYS_ADMIN in a new UTS namespace (CLONE_NEWUTS)",
    ("mount_setattr", errno.EINVAL): "unknown MOUNT_ATTR_* bit or propagation type",
    ("move_mount", errno.EINVAL): "the source is not a mount, or the target is a shared mount",
    ("openat2", errno.EINVAL): "unknown O_* or RESOLVE_* bit, or mode without O_CREAT/O_TMPFILE",
    ("openat2", errno.EXDEV): "the path escapes the root (RESOLVE_BENEATH) or crosses a mount "
    "(RESOLVE_NO_XDEV)",
    ("openat2", errno.ELOOP): "a symlink or /proc magic link was refused by RESOLVE_NO_*",
    ("openat2", errno.EAGAIN): "RESOLVE_CACHED could not resolve from the dentry cache alone",
    ("close_range", errno.EINVAL): "first is greater than last, or unknown flag",
    ("clone3", errno.E2BIG): "this kernel's struct clone_args has no cgroup field (before 5.7)",
    ("clone3", errno.EINVAL): "a flag this kernel does not know (CLONE_INTO_CGROUP needs 5.7)",
    ("clone3", errno.EBADF): "the fd is not a directory of the cgroup v2 hierarchy",
    ("clone3", errno.EBUSY): "the cgroup enables controllers for its children: only its leaves "
    "may hold processes",
    ("clone3", errno.EOPNOTSUPP): "the cgroup cannot take processes (an invalid domain, or a "
    "threaded cgroup)",
    ("clone3", errno.ENODEV): "the cgroup was removed",
    ("clone3", errno.EAGAIN): "the cgroup's pids.max, or RLIMIT_NPROC, is reached",
    ("pidfd_send_signal", errno.ESRCH): "the process has already exited",
    ("pidfd_send_signal", errno.EPERM): "not allowed to signal it (needs CAP_KILL or same uid)",
    ("inotify_init1", errno.EMFILE): "too many inotify instances: see "
    "/proc/sys/fs/inotify/max_user_instances",
    ("inotify_add_watch", errno.ENOSPC): "too many inotify watches: see "
    "/proc/sys/fs/inotify/max_user_watches",
    ("inotify_add_watch", errno.ENOTDIR): "IN_ONLYDIR was given and the path is not a directory",
    ("capset", errno.EPERM): "cannot add capabilities beyond the permitted or bounding set",
    ("seccomp", errno.EACCES): "loading a filter needs CAP_SYS_ADMIN or no_new_privs",
    ("seccomp", errno.EINVAL): "the kernel refused the program, or has no seccomp filters",
    ("prctl", errno.EPERM): "PR_CAPBSET_DROP needs CAP_SETPCAP; PR_CAP_AMBIENT_RAISE needs the "
    "capability in both the permitted and the inheritable set",
}


def _error(err: int, syscall: str, detail: object, detail2: object = None) -> OSError:
    hint = _HINTS.get((syscall, err)) or _HINTS.get(("*", err), "")
    if err == errno.ENOSYS:
        version = _NEW_SYSCALLS.get(syscall, "")
        needs = f" ({syscall} needs Linux {version})" if version else ""
        hint = f"kernel too old{needs} or the call is blocked by seccomp"
    message = f"{syscall}: {os.strerror(err)}" + (f" ({hint})" if hint else "")
    return OSError(err, message, detail, None, detail2)


def _raise(syscall: str, detail: object, detail2: object = None) -> NoReturn:
    raise _error(ctypes.get_errno(), syscall, detail, detail2)


def _check(result: int, syscall: str, detail: object, detail2: object = None) -> int:
    if result < 0:
        _raise(syscall, detail, detail2)
    return result


def _c_str(value: StrPath | None) -> bytes | None:
    # ctypes would silently cut a path at its first NUL byte and act on another file.
    raw = None if value is None else os.fsencode(value)
    if raw is not None and b"\0" in raw:
        raise ValueError(f"embedded null byte in {value!r}")
    return raw


def _uint(value: int, what: str, bits: int = 32) -> int:
    # ctypes truncates out-of-range integers without a word, turning a typo into other flags.
    if not 0 <= value < 1 << bits:
        raise ValueError(f"{what} must be an unsigned {bits}-bit integer, got {value!r}")
    return value


def _cint(value: int, what: str) -> ctypes.c_int:
    if not -(1 << 31) <= value < 1 << 31:
        raise ValueError(f"{what} must be a C int, got {value!r}")
    return ctypes.c_int(value)


def _cuint(value: int, what: str) -> ctypes.c_uint:
    return ctypes.c_uint(_uint(value, what))


def _cpath(path: StrPath) -> ctypes.c_char_p:
    return ctypes.c_char_p(_c_str(path))


def _where(dirfd: int, path: StrPath) -> object:
    return os.fspath(path) if os.fspath(path) else f"fd {dirfd}"


def _flag_names(flags: int, names: dict[int, str]) -> str:
    known = [name for bit, name in names.items() if flags & bit]
    rest = flags & ~sum(names)
    return "|".join(known + ([hex(rest)] if rest else [])) or "0"


_libc = ctypes.CDLL(None, use_errno=True)
_str, _ulong = ctypes.c_char_p, ctypes.c_ulong
for _name, _argtypes in {
    "unshare": (ctypes.c_int,),
    "setns": (ctypes.c_int, ctypes.c_int),
    "mount": (_str, _str, _str, _ulong, _str),
    "umount2": (_str, ctypes.c_int),
    "sethostname": (_str, ctypes.c_size_t),
    "prctl": (ctypes.c_int, _ulong, _ulong, _ulong, _ulong),
    "capget": (ctypes.c_void_p, ctypes.c_void_p),
    "capset": (ctypes.c_void_p, ctypes.c_void_p),
    "inotify_init1": (ctypes.c_int,),
    "inotify_add_watch": (ctypes.c_int, _str, ctypes.c_uint32),
    "inotify_rm_watch": (ctypes.c_int, ctypes.c_int),
    "setfsuid": (ctypes.c_uint32,),
    "setfsgid": (ctypes.c_uint32,),
}.items():
    getattr(_libc, _name).argtypes = _argtypes
    getattr(_libc, _name).restype = ctypes.c_int
# syscall(2) is variadic: no argtypes, so every argument below is passed as an explicit C type.
_libc.syscall.restype = ctypes.c_long


def _syscall(name: str, *args: object) -> int:
    if name not in _NR:
        raise _error(errno.ENOSYS, name, f"no syscall number for {os.uname().machine}")
    result: int = _libc.syscall(ctypes.c_long(_NR[name]), *args)
    return result


class _MountAttr(ctypes.Structure):  # struct mount_attr, <linux/mount.h>
    _fields_ = tuple(
        (f, ctypes.c_uint64) for f in ("attr_set", "attr_clr", "propagation", "userns_fd")
    )


class _OpenHow(ctypes.Structure):  # struct open_how, <linux/openat2.h>
    _fields_ = (("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64))


class CloneArgs(ctypes.Structure):  # struct clone_args, <linux/sched.h>: all __aligned_u64
    _fields_ = tuple(
        (f, ctypes.c_uint64)
        for f in (
            "flags",
            "pidfd",
            "child_tid",
            "parent_tid",
            "exit_signal",
            "stack",
            "stack_size",
            "tls",
            "set_tid",
            "set_tid_size",
            "cgroup",
        )
    )


class _CapHeader(ctypes.Structure):  # struct __user_cap_header_struct, <linux/capability.h>
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):  # struct __user_cap_data_struct; v3 passes two: bits 0-31, 32-63
    _fields_ = tuple((f, ctypes.c_uint32) for f in ("effective", "permitted", "inheritable"))


_CapDataV3 = _CapData * _LINUX_CAPABILITY_U32S_3


def unshare(flags: int) -> None:
    if _libc.unshare(_uint(flags, "flags")) < 0:
        _raise("unshare", _flag_names(flags, _CLONE_NAMES))


def setns(fd: int, nstype: int = 0) -> None:
    """Join the namespace behind `fd`; `nstype` (one CLONE_NEW*, or 0 for any) guards its type."""
    if _libc.setns(_cint(fd, "fd"), _uint(nstype, "nstype")) < 0:
        _raise("setns", f"fd {fd}" + (f", {_flag_names(nstype, _CLONE_NAMES)}" if nstype else ""))


def mount(
    source: StrPath | None,
    target: StrPath,
    fstype: str | bytes | None = None,
    flags: int = 0,
    data: str | bytes | None = None,
) -> None:
    args = (_c_str(source), _c_str(target), _c_str(fstype), _uint(flags, "flags", 64), _c_str(data))
    if _libc.mount(*args) < 0:
        # For binds and moves the source is a path too, and may be the one that is missing.
        moved = os.fspath(source) if source is not None and flags & (MS_BIND | MS_MOVE) else None
        _raise("mount", os.fspath(target), moved)


def umount2(target: StrPath, flags: int = 0) -> None:
    if _libc.umount2(_c_str(target), _uint(flags, "flags", 31)) < 0:
        _raise("umount2", os.fspath(target))


def pivot_root(new_root: StrPath, put_old: StrPath) -> None:
    result = _syscall("pivot_root", _cpath(new_root), _cpath(put_old))
    _check(result, "pivot_root", os.fspath(new_root), os.fspath(put_old))


def sethostname(name: str | bytes) -> None:
    raw = _c_str(name) or b""
    if _libc.sethostname(raw, len(raw)) < 0:
        _raise("sethostname", name)


def open_tree(dirfd: int, path: StrPath, flags: int) -> int:
    """Return an fd for the mount at `path`, or with OPEN_TREE_CLONE for a detached copy of it.

    OPEN_TREE_CLOEXEC is always added: like os.open, fds are not inherited across exec.
    """
    flags |= OPEN_TREE_CLOEXEC
    result = _syscall("open_tree", _cint(dirfd, "dirfd"), _cpath(path), _cuint(flags, "flags"))
    return _check(result, "open_tree", _where(dirfd, path))


def move_mount(
    from_dirfd: int, from_path: StrPath, to_dirfd: int, to_path: StrPath, flags: int = 0
) -> None:
    source = (_cint(from_dirfd, "from_dirfd"), _cpath(from_path))
    target = (_cint(to_dirfd, "to_dirfd"), _cpath(to_path))
    result = _syscall("move_mount", *source, *target, _cuint(flags, "flags"))
    _check(result, "move_mount", _where(to_dirfd, to_path), _where(from_dirfd, from_path))


def mount_setattr(
    dirfd: int,
    path: StrPath,
    flags: int,
    attr_set: int,
    attr_clr: int = 0,
    *,
    propagation: int = 0,
    userns_fd: int = 0,
) -> None:
    """Set and clear MOUNT_ATTR_* bits, and change propagation (an MS_* type) when not 0;
    MOUNT_ATTR_IDMAP takes the user namespace whose maps to apply as `userns_fd`."""
    values = {
        "attr_set": attr_set,
        "attr_clr": attr_clr,
        "propagation": propagation,
        "userns_fd": userns_fd,
    }
    attr = _MountAttr(*(_uint(v, k, 64) for k, v in values.items()))
    args = (_cint(dirfd, "dirfd"), _cpath(path), _cuint(flags, "flags"), ctypes.byref(attr))
    result = _syscall("mount_setattr", *args, ctypes.c_size_t(ctypes.sizeof(attr)))
    _check(result, "mount_setattr", _where(dirfd, path))


def openat2(dirfd: int, path: StrPath, flags: int, mode: int = 0, resolve: int = 0) -> int:
    """Open with RESOLVE_* limits on path resolution; O_CLOEXEC is always added, as in os.open."""
    values = {"flags": flags | os.O_CLOEXEC, "mode": mode, "resolve": resolve}
    how = _OpenHow(*(_uint(v, k, 64) for k, v in values.items()))
    args = (_cint(dirfd, "dirfd"), _cpath(path), ctypes.byref(how))
    result = _syscall("openat2", *args, ctypes.c_size_t(ctypes.sizeof(how)))
    return _check(result, "openat2", _where(dirfd, path))


def pidfd_open(pid: int, flags: int = 0) -> int:
    result = _syscall("pidfd_open", _cint(pid, "pid"), _cuint(flags, "flags"))
    return _check(result, "pidfd_open", f"pid {pid}")


def pidfd_send_signal(pidfd: int, sig: int, flags: int = 0) -> None:
    args = (_cint(pidfd, "pidfd"), _cint(sig, "sig"), None, _cuint(flags, "flags"))
    _check(_syscall("pidfd_send_signal", *args), "pidfd_send_signal", f"pidfd {pidfd}, sig {sig}")


def inotify_init1(flags: int = 0) -> int:
    """A new inotify instance as an fd; IN_CLOEXEC is always added, as in os.open."""
    flags |= IN_CLOEXEC
    return _check(_libc.inotify_init1(_cint(flags, "flags")), "inotify_init1", f"flags {flags:#x}")


def inotify_add_watch(fd: int, path: StrPath, mask: int) -> int:
    """Watch `path` for the IN_* events of `mask`; returns the watch descriptor."""
    result = _libc.inotify_add_watch(_cint(fd, "fd"), _c_str(path), _uint(mask, "mask"))
    return _check(result, "inotify_add_watch", os.fspath(path))


def inotify_rm_watch(fd: int, wd: int) -> None:
    result = _libc.inotify_rm_watch(_cint(fd, "fd"), _cint(wd, "wd"))
    _check(result, "inotify_rm_watch", f"watch {wd}")


def setfsuid(uid: int) -> int:
    """Set the calling thread's file-system uid; the previous one. setfsuid(2) reports no error,
    so the result is read back (with -1, which only returns the current value) and compared."""
    return _set_fs_id(_libc.setfsuid, "setfsuid", uid)


def setfsgid(gid: int) -> int:
    """Set the calling thread's file-system gid; the previous one (see setfsuid)."""
    return _set_fs_id(_libc.setfsgid, "setfsgid", gid)


def _set_fs_id(call: Callable[[int], int], name: str, value: int) -> int:
    previous: int = call(_uint(value, "id"))
    if call(0xFFFF_FFFF) != value:
        raise _error(errno.EPERM, name, f"id {value}")
    return previous


# clone3 runs through a PyDLL: the call keeps the GIL, as os.fork does around fork(), so that
# no other thread can run between PyOS_BeforeFork and the clone (nor in the child before
# PyOS_AfterFork_Child has made it the only thread).
_libc_gil = ctypes.PyDLL(None, use_errno=True)
_libc_gil.syscall.restype = ctypes.c_long
for _name in ("PyOS_BeforeFork", "PyOS_AfterFork_Parent", "PyOS_AfterFork_Child"):
    getattr(ctypes.pythonapi, _name).argtypes = ()
    getattr(ctypes.pythonapi, _name).restype = None


def fork_into_cgroup(cgroup_fd: int) -> int:
    """fork(), with the child born in the cgroup v2 directory open at `cgroup_fd`:
    clone3(CLONE_INTO_CGROUP, Linux 5.7), so that no instruction of the child runs outside it.
    Returns 0 in the child and the child's PID in the parent, as os.fork; when the kernel
    refuses, raises OSError("clone3: ...") and no child exists. See _clone3_fork."""
    cgroup = _uint(cgroup_fd, "cgroup_fd")
    return _clone3_fork(CLONE_INTO_CGROUP, cgroup, f"CLONE_INTO_CGROUP, cgroup fd {cgroup_fd}")


def fork_into_namespaces(flags: int) -> int:
    """fork(), with the child born in new namespaces, `flags` (CLONE_NEW*; with CLONE_NEWUSER
    every other one is owned by the new user namespace, and with CLONE_NEWPID the child is its
    PID 1). Returns as os.fork; raises OSError("clone3: ...") when refused. See _clone3_fork."""
    return _clone3_fork(flags, 0, f"namespaces {flags:#x}")


def _clone3_fork(flags: int, cgroup: int, what: str) -> int:
    """clone3 as fork.

    The interpreter is kept sane exactly as os.fork keeps it: PyOS_BeforeFork (the at-fork
    `before` hooks, the import lock), then PyOS_AfterFork_Child (one thread, a new GIL, the
    locks reset, the `after_in_child` hooks) or PyOS_AfterFork_Parent. No stack is given: the
    child runs on a copy of the caller's, as after fork(). What glibc's fork() does beyond the
    syscall (its pthread_atfork handlers, its cached thread id) is not done: the caller must be
    single-threaded, as sandman is, and the child must not rely on pthread_atfork handlers.
    """
    if "clone3" not in _NR:
        raise _error(errno.ENOSYS, "clone3", f"no syscall number for {os.uname().machine}")
    args = CloneArgs(flags=flags, exit_signal=signal.SIGCHLD, cgroup=cgroup)
    number, size = ctypes.c_long(_NR["clone3"]), ctypes.c_size_t(ctypes.sizeof(args))
    before, parent, child = (
        ctypes.pythonapi.PyOS_BeforeFork,
        ctypes.pythonapi.PyOS_AfterFork_Parent,
        ctypes.pythonapi.PyOS_AfterFork_Child,
    )
    clone3 = _libc_gil.syscall
    # No collection between the hooks: a finalizer run there would run with the import lock
    # held, and in the child before the interpreter knows it is a child.
    collecting = gc.isenabled()
    gc.disable()
    try:
        before()
        pid: int = clone3(number, ctypes.byref(args), size)
        if pid == 0:
            child()
            return 0
        err = ctypes.get_errno()
        parent()
    finally:
        if collecting:
            gc.enable()
    if pid < 0:
        raise _error(err, "clone3", what)
    return pid


def close_range(first: int, last: int = FD_LAST, flags: int = 0) -> None:
    args = (_cuint(first, "first"), _cuint(last, "last"), _cuint(flags, "flags"))
    _check(_syscall("close_range", *args), "close_range", f"fds {first}..{last}")


def close_fds_except(keep: Iterable[int]) -> None:
    """Close every fd above 2 but those in `keep`, right after a fork.

    A forked child that waits before it execs holds everything its parent had open, close-on-exec
    or not: another sandbox's pipes, apply's lock, netlink sockets. Closing by an explicit
    keep-list, not by O_CLOEXEC, is what makes the child hold nothing it does not own while it
    waits (and nothing of the host's once it runs the sandbox's code).
    """
    first = 3
    for fd in sorted({fd for fd in keep if fd >= 3}):
        if fd > first:
            close_range(first, fd - 1)
        first = fd + 1
    close_range(first, FD_LAST)


# <linux/seccomp.h>
SECCOMP_SET_MODE_FILTER = 1
_SOCK_FILTER_SIZE = 8  # struct sock_filter: u16 code, u8 jt, u8 jf, u32 k


class _SockFprog(ctypes.Structure):  # struct sock_fprog, <linux/filter.h>
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


class SeccompFilter:
    """A classic BPF seccomp filter (packed struct sock_filter), loaded by calling it. Its
    buffers are made at construction, before a fork, so that the child only makes the call. The
    filter holds the calling thread and everything it execs or forks from then on."""

    def __init__(self, program: bytes) -> None:
        if not program or len(program) % _SOCK_FILTER_SIZE:
            raise ValueError(f"a filter is whole sock_filter instructions, not {len(program)} B")
        self._buffer = ctypes.create_string_buffer(program, len(program))  # fprog points here
        self._fprog = _SockFprog(len(program) // _SOCK_FILTER_SIZE, ctypes.addressof(self._buffer))

    def __call__(self) -> None:
        mode, flags = ctypes.c_uint(SECCOMP_SET_MODE_FILTER), ctypes.c_uint(0)
        result = _syscall("seccomp", mode, flags, ctypes.byref(self._fprog))
        _check(result, "seccomp", f"SECCOMP_SET_MODE_FILTER, {self._fprog.len} instructions")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    """Call prctl(2) with integer arguments and return its (non-negative) result."""
    args = [_uint(a, f"arg{i}", 64) for i, a in enumerate((arg2, arg3, arg4, arg5), start=2)]
    result: int = _libc.prctl(_cint(option, "option"), *args)
    return _check(result, "prctl", f"{_PR_NAMES.get(option, option)}({', '.join(map(str, args))})")


class CapSets(NamedTuple):
    """The capability sets of a thread, each a 64-bit mask with bit n for capability number n."""

    effective: int
    permitted: int
    inheritable: int


def capget(pid: int = 0) -> CapSets:
    """Read the capability sets of `pid` (0: the calling thread)."""
    header, data = _CapHeader(_LINUX_CAPABILITY_VERSION_3, _cint(pid, "pid").value), _CapDataV3()
    if _libc.capget(ctypes.byref(header), ctypes.byref(data)) < 0:
        _raise("capget", f"pid {pid}")
    return CapSets(*(getattr(data[0], f) | getattr(data[1], f) << 32 for f in CapSets._fields))


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """Replace the capability sets of the calling thread (not the whole process)."""
    masks = CapSets(effective, permitted, inheritable)
    header, data = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0), _CapDataV3()
    for field, mask in zip(CapSets._fields, masks, strict=True):
        _uint(mask, field, 64)
        setattr(data[0], field, mask & 0xFFFF_FFFF)
        setattr(data[1], field, mask >> 32)
    if _libc.capset(ctypes.byref(header), ctypes.byref(data)) < 0:
        _raise("capset", ", ".join(f"{k}={v:#x}" for k, v in masks._asdict().items()))


def cap_mask(names: Iterable[str]) -> int:
    """Turn capability names ("CAP_NET_ADMIN") into a mask; unknown names raise ValueError."""
    wanted = set(names)
    if unknown := sorted(wanted - CAPABILITIES.keys()):
        raise ValueError(f"unknown capabilities: {', '.join(unknown)}")
    return sum(1 << CAPABILITIES[name] for name in wanted)


def cap_names(mask: int) -> list[str]:
    """The names of the capabilities set in `mask`, in numeric order."""
    return [name for name, number in CAPABILITIES.items() if mask >> number & 1]


def bind_readonly_recursive(source: StrPath, target: StrPath) -> None:
    """Bind `source` and every mount below it onto `target`, all read-only.

    The tree is made read-only while still detached, so `target` is never writable, even for a
    moment; classic MS_BIND|MS_REC followed by remounts would leave submounts writable.
    """
    fd = open_tree(AT_FDCWD, source, OPEN_TREE_CLONE | AT_RECURSIVE)
    try:
        mount_setattr(fd, "", AT_EMPTY_PATH | AT_RECURSIVE, MOUNT_ATTR_RDONLY)
        move_mount(fd, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH)
    finally:
        os.close(fd)


# --- bpf(2): the cgroup v2 device filter (load, attach, query, detach) -------------------------

# <linux/bpf.h>: the commands (enum bpf_cmd), program and attach types, attach flags
BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_DETACH = 9
BPF_PROG_GET_FD_BY_ID = 13
BPF_PROG_QUERY = 16
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_OVERRIDE = 1 << 0
BPF_F_ALLOW_MULTI = 1 << 1
BPF_OBJ_NAME_LEN = 16
_BPF_LOG_SIZE = 1 << 20  # the verifier's log of a refused program, read only after a refusal

_BPF_CMD_NAMES = {
    BPF_PROG_LOAD: "BPF_PROG_LOAD",
    BPF_PROG_ATTACH: "BPF_PROG_ATTACH",
    BPF_PROG_DETACH: "BPF_PROG_DETACH",
    BPF_PROG_GET_FD_BY_ID: "BPF_PROG_GET_FD_BY_ID",
    BPF_PROG_QUERY: "BPF_PROG_QUERY",
}
_HINTS.update(
    {
        ("bpf", errno.EPERM): "needs CAP_BPF or CAP_SYS_ADMIN in the initial user namespace "
        "(run as root), or an ancestor cgroup holds a program that allows no others",
        ("bpf", errno.EACCES): "the verifier refused the program",
        ("bpf", errno.EINVAL): "unknown command, program type or flag for this kernel, or the "
        "verifier refused the program",
        ("bpf", errno.EBADF): "not a cgroup directory or program fd",
        ("bpf", errno.ENOENT): "no such program attached, or the program id is gone",
    }
)


class _BpfProgLoad(ctypes.Structure):  # union bpf_attr, the BPF_PROG_LOAD member (its start)
    _fields_ = (
        ("prog_type", ctypes.c_uint32),
        ("insn_cnt", ctypes.c_uint32),
        ("insns", ctypes.c_uint64),
        ("license", ctypes.c_uint64),
        ("log_level", ctypes.c_uint32),
        ("log_size", ctypes.c_uint32),
        ("log_buf", ctypes.c_uint64),
        ("kern_version", ctypes.c_uint32),
        ("prog_flags", ctypes.c_uint32),
        ("prog_name", ctypes.c_char * BPF_OBJ_NAME_LEN),
        ("prog_ifindex", ctypes.c_uint32),
        ("expected_attach_type", ctypes.c_uint32),
    )


class _BpfAttach(ctypes.Structure):  # the BPF_PROG_ATTACH / BPF_PROG_DETACH member
    _fields_ = tuple(
        (f, ctypes.c_uint32)
        for f in ("target_fd", "attach_bpf_fd", "attach_type", "attach_flags", "replace_bpf_fd")
    )


class _BpfQuery(ctypes.Structure):  # the BPF_PROG_QUERY member (its start)
    _fields_ = (
        ("target_fd", ctypes.c_uint32),
        ("attach_type", ctypes.c_uint32),
        ("query_flags", ctypes.c_uint32),
        ("attach_flags", ctypes.c_uint32),
        ("prog_ids", ctypes.c_uint64),
        ("prog_cnt", ctypes.c_uint32),
    )


class _BpfGetId(ctypes.Structure):  # the BPF_*_GET_FD_BY_ID member
    _fields_ = tuple((f, ctypes.c_uint32) for f in ("prog_id", "next_id", "open_flags"))


_BpfAttr: TypeAlias = _BpfProgLoad | _BpfAttach | _BpfQuery | _BpfGetId


def _bpf(cmd: int, attr: _BpfAttr) -> int:
    # The kernel copies `size` bytes and treats the rest of its union as zero, so each command
    # passes only its own member.
    size = ctypes.c_uint(ctypes.sizeof(attr))
    return _syscall("bpf", ctypes.c_int(cmd), ctypes.byref(attr), size)


def _bpf_check(result: int, cmd: int, detail: object, extra: str = "") -> int:
    if result < 0:
        err = ctypes.get_errno()
        # "bpf BPF_PROG_LOAD: Permission denied (hint); verifier log: ...": which command failed
        text = str(_error(err, "bpf", detail).strerror).removeprefix("bpf")
        raise OSError(err, f"bpf {_BPF_CMD_NAMES[cmd]}{text}{extra}", detail)
    return result


def bpf_prog_load(prog_type: int, insns: bytes, license: str, name: str = "") -> int:
    """Load a program of 8-byte eBPF instructions; returns its fd (always close-on-exec).

    A refused program is loaded once more with the verifier's log on, and the error carries the
    log's end: the verifier says which instruction it refused and why.
    """
    if len(insns) % 8:
        raise ValueError(f"eBPF instructions are 8 bytes each, got {len(insns)} bytes")
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license.encode())
    attr = _BpfProgLoad(prog_type=_uint(prog_type, "prog_type"), insn_cnt=len(insns) // 8)
    attr.insns, attr.license = ctypes.addressof(code), ctypes.addressof(lic)
    attr.prog_name = name.encode()[: BPF_OBJ_NAME_LEN - 1]
    result = _bpf(BPF_PROG_LOAD, attr)
    if result >= 0:
        return result
    log = ctypes.create_string_buffer(_BPF_LOG_SIZE)
    attr.log_level, attr.log_size, attr.log_buf = 1, _BPF_LOG_SIZE, ctypes.addressof(log)
    result = _bpf(BPF_PROG_LOAD, attr)
    text = log.value.decode(errors="replace").strip()
    extra = f"; verifier log: {text[-2000:]}" if text else ""
    return _bpf_check(result, BPF_PROG_LOAD, f"program {name or '?'}", extra)


def bpf_prog_attach(target_fd: int, prog_fd: int, attach_type: int, flags: int = 0) -> None:
    """Attach a program to the object behind `target_fd` (a cgroup directory's fd)."""
    attr = _BpfAttach(
        target_fd=_uint(target_fd, "target_fd"),
        attach_bpf_fd=_uint(prog_fd, "prog_fd"),
        attach_type=_uint(attach_type, "attach_type"),
        attach_flags=_uint(flags, "flags"),
    )
    _bpf_check(_bpf(BPF_PROG_ATTACH, attr), BPF_PROG_ATTACH, f"fd {target_fd}")


def bpf_prog_detach(target_fd: int, prog_fd: int, attach_type: int) -> None:
    """Detach one program (named by an fd of it) from the object behind `target_fd`."""
    attr = _BpfAttach(
        target_fd=_uint(target_fd, "target_fd"),
        attach_bpf_fd=_uint(prog_fd, "prog_fd"),
        attach_type=_uint(attach_type, "attach_type"),
    )
    _bpf_check(_bpf(BPF_PROG_DETACH, attr), BPF_PROG_DETACH, f"fd {target_fd}")


def bpf_prog_query(target_fd: int, attach_type: int) -> list[int]:
    """The ids of the programs attached to `target_fd` itself (not those it inherits)."""
    count = 16
    while True:
        ids = (ctypes.c_uint32 * count)()
        attr = _BpfQuery(
            target_fd=_uint(target_fd, "target_fd"),
            attach_type=_uint(attach_type, "attach_type"),
            prog_ids=ctypes.addressof(ids),
            prog_cnt=count,
        )
        result = _bpf(BPF_PROG_QUERY, attr)
        if result < 0 and ctypes.get_errno() == errno.ENOSPC and attr.prog_cnt > count:
            count = attr.prog_cnt  # more were attached than there was room for: ask again
            continue
        _bpf_check(result, BPF_PROG_QUERY, f"fd {target_fd}")
        return list(ids[: attr.prog_cnt])


def bpf_prog_get_fd_by_id(prog_id: int) -> int:
    """An fd (close-on-exec) of the loaded program with this id."""
    attr = _BpfGetId(prog_id=_uint(prog_id, "prog_id"))
    return _bpf_check(_bpf(BPF_PROG_GET_FD_BY_ID, attr), BPF_PROG_GET_FD_BY_ID, f"id {prog_id}")
