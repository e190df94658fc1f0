"""Tests of sandman.kernel.syscalls that need no privileges and change nothing.

Constants are checked against the kernel headers when they are installed (linux-libc-dev); the
failing calls here are ones that fail before touching anything (bad fd, bad range, missing path).
"""

from __future__ import annotations

import ast
import ctypes
import errno
import glob
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from sandman.capabilities import CAPABILITIES
from sandman.kernel import syscalls as sc

INCLUDE = Path("/usr/include")
SANDMAN = Path(sc.__file__).resolve().parents[1]


def header_values(header: Path) -> dict[str, int]:
    """`#define NAME value` and `NAME = value,` (glibc enums) whose value is a plain integer."""
    number = r"\(?\s*(-?(?:0x[0-9a-fA-F]+|\d+))U?\s*(?:<<\s*(\d+))?\s*\)?"
    pattern = re.compile(
        rf"^\s*(?:#\s*define\s+(\w+)\s+|(\w+)\s*=\s*){number}(?:ULL)?\s*(?:,|/\*|$)"
    )
    values = {}
    for line in header.read_text().splitlines():
        if m := pattern.match(line):
            values[m[1] or m[2]] = int(m[3], 0) << int(m[4] or 0)
    return values


def find_header(relative: str) -> Path:
    found = [INCLUDE / relative, *map(Path, glob.glob(f"{INCLUDE}/*-linux-gnu/{relative}"))]
    for path in found:
        if path.is_file():
            return path
    pytest.skip(f"{relative} is not installed (linux-libc-dev / libc6-dev)")


HEADER_PREFIXES = {
    "linux/sched.h": ("CLONE_NEW", "CLONE_INTO_CGROUP", "CLONE_ARGS_SIZE_VER"),
    "linux/mount.h": ("MS_", "OPEN_TREE_CLONE", "MOVE_MOUNT_", "MOUNT_ATTR_"),
    "linux/fcntl.h": ("AT_",),
    "linux/openat2.h": ("RESOLVE_",),
    "linux/close_range.h": ("CLOSE_RANGE_",),
    "linux/prctl.h": ("PR_",),
    "sys/mount.h": ("MNT_", "UMOUNT_"),
}


@pytest.mark.parametrize("header", sorted(HEADER_PREFIXES))
def test_constants_match_kernel_headers(header: str) -> None:
    defined = header_values(find_header(header))
    ours = {
        name: getattr(sc, name)
        for name in dir(sc)
        if name.startswith(HEADER_PREFIXES[header]) and isinstance(getattr(sc, name), int)
    }
    assert ours, header
    assert {name: defined.get(name) for name in ours} == ours


def test_constants_known_values() -> None:
    # Independent of installed headers, the values the rest of sandman leans on.
    assert sc.CLONE_NEWTIME == 0x80
    assert sc.CLONE_NEWNS | sc.CLONE_NEWUTS | sc.CLONE_NEWIPC == 0x0C020000
    assert (sc.CLONE_NEWUSER, sc.CLONE_NEWPID, sc.CLONE_NEWNET) == (1 << 28, 1 << 29, 1 << 30)
    assert (sc.MS_BIND, sc.MS_REC, sc.MS_PRIVATE, sc.MS_SLAVE) == (4096, 16384, 1 << 18, 1 << 19)
    assert (sc.MNT_DETACH, sc.UMOUNT_NOFOLLOW) == (2, 8)
    assert (sc.AT_FDCWD, sc.AT_EMPTY_PATH, sc.AT_RECURSIVE) == (-100, 0x1000, 0x8000)
    assert sc.OPEN_TREE_CLOEXEC == os.O_CLOEXEC
    assert (sc.OPEN_TREE_CLONE, sc.MOVE_MOUNT_F_EMPTY_PATH) == (1, 4)
    assert (sc.MOUNT_ATTR_RDONLY, sc.MOUNT_ATTR_NOSUID, sc.MOUNT_ATTR_NODEV) == (1, 2, 4)
    assert sc.MOUNT_ATTR_NOEXEC == 8
    assert (sc.RESOLVE_NO_MAGICLINKS, sc.RESOLVE_BENEATH, sc.RESOLVE_IN_ROOT) == (2, 8, 0x10)
    assert sc.CLOSE_RANGE_CLOEXEC == 4
    assert (sc.PR_SET_PDEATHSIG, sc.PR_CAPBSET_DROP, sc.PR_SET_CHILD_SUBREAPER) == (1, 24, 36)
    assert (sc.PR_SET_NO_NEW_PRIVS, sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_RAISE) == (38, 47, 2)


def test_clone_args_is_the_kernels_struct() -> None:
    """struct clone_args (linux/sched.h): eleven __aligned_u64 in this order, 88 bytes with the
    cgroup field (CLONE_ARGS_SIZE_VER2); the kernel reads the size it is given, so one field
    out of place would pass another field's value as the cgroup fd."""
    fields = [field[0] for field in sc.CloneArgs._fields_]
    assert fields == [
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
    ]
    assert [getattr(sc.CloneArgs, name).offset for name in fields] == list(range(0, 88, 8))
    assert all(getattr(sc.CloneArgs, name).size == 8 for name in fields)
    assert ctypes.sizeof(sc.CloneArgs) == sc.CLONE_ARGS_SIZE_VER2 == 88
    assert sc.CLONE_INTO_CGROUP == 1 << 33
    assert sc.SYSCALL_NUMBERS["x86_64"]["clone3"] == sc.SYSCALL_NUMBERS["aarch64"]["clone3"] == 435


def test_clone_args_match_the_installed_header() -> None:
    text = find_header("linux/sched.h").read_text()
    body = re.search(r"struct clone_args \{(.*?)\};", text, re.S)
    assert body is not None
    declared = re.findall(r"__aligned_u64\s+(\w+);", body[1])
    assert declared == [field[0] for field in sc.CloneArgs._fields_]


def test_capabilities_table_is_complete_and_ordered() -> None:
    assert list(CAPABILITIES.values()) == list(range(41))
    assert CAPABILITIES["CAP_CHOWN"] == 0
    assert CAPABILITIES["CAP_SYS_ADMIN"] == 21
    assert CAPABILITIES["CAP_CHECKPOINT_RESTORE"] == 40
    assert all(name.startswith("CAP_") for name in CAPABILITIES)


def test_capabilities_match_kernel_header() -> None:
    defined = header_values(find_header("linux/capability.h"))
    assert {name: defined.get(name) for name in CAPABILITIES} == CAPABILITIES


def test_syscall_numbers_known_values() -> None:
    assert sc.SYSCALL_NUMBERS["x86_64"]["pivot_root"] == 155
    assert sc.SYSCALL_NUMBERS["aarch64"]["pivot_root"] == 41
    for numbers in sc.SYSCALL_NUMBERS.values():
        assert numbers["open_tree"] == 428
        assert numbers["move_mount"] == 429
        assert numbers["mount_setattr"] == 442
        assert numbers["openat2"] == 437
        assert (numbers["pidfd_open"], numbers["pidfd_send_signal"]) == (434, 424)
        assert numbers["close_range"] == 436


def test_unknown_architecture_fails_with_enosys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sc, "_NR", {})
    with pytest.raises(OSError, match=r"^\[Errno 38\] pidfd_open: .*no syscall number for") as e:
        sc.pidfd_open(os.getpid())
    assert e.value.errno == errno.ENOSYS


@pytest.mark.parametrize(
    ("err", "syscall", "expected"),
    [
        (
            errno.ENOSYS,
            "mount_setattr",
            "mount_setattr: Function not implemented (kernel too old (mount_setattr needs "
            "Linux 5.12) or the call is blocked by seccomp)",
        ),
        (
            errno.ENOSYS,
            "mount",
            "mount: Function not implemented (kernel too old or the call is blocked by seccomp)",
        ),
        (
            errno.EPERM,
            "mount",
            "mount: Operation not permitted (needs CAP_SYS_ADMIN: run as root, or inside a user "
            "namespace that owns the object)",
        ),
        (
            errno.EPERM,
            "capset",
            "capset: Operation not permitted (cannot add capabilities beyond the permitted or "
            "bounding set)",
        ),
        (
            errno.ENOSPC,
            "unshare",
            "unshare: No space left on device (namespace or mount limit reached: see "
            "/proc/sys/user/max_*_namespaces and /proc/sys/fs/mount-max)",
        ),
        (
            errno.EINVAL,
            "pivot_root",
            "pivot_root: Invalid argument (new_root must be a mount point, put_old must be under "
            "it, and / must not be shared (mount / with MS_REC|MS_PRIVATE first))",
        ),
        (errno.EINVAL, "umount2", "umount2: Invalid argument (not a mount point)"),
        (errno.ENOENT, "mount", "mount: No such file or directory"),
    ],
)
def test_error_text_and_hints(err: int, syscall: str, expected: str) -> None:
    exc = sc._error(err, syscall, "/srv/x")
    assert exc.errno == err
    assert exc.strerror == expected
    assert exc.filename == "/srv/x"
    assert str(exc) == f"[Errno {err}] {expected}: '/srv/x'"


def test_error_keeps_both_paths_and_subclass() -> None:
    exc = sc._error(errno.ENOENT, "pivot_root", "/new", "/new/old")
    assert isinstance(exc, FileNotFoundError)
    assert (exc.filename, exc.filename2) == ("/new", "/new/old")
    assert str(exc).endswith(": '/new' -> '/new/old'")


# If a check regressed, these calls must still hit nothing: every other path is NOWHERE.
NOWHERE = "/nonexistent/sandman-test"
NUL = "/nonexistent/a\0b"
WITH_NUL_PATH: dict[str, Callable[[], object]] = {
    "mount-target": lambda: sc.mount("tmpfs", NUL, "tmpfs"),
    "mount-data": lambda: sc.mount("tmpfs", NOWHERE, "tmpfs", 0, "size=1\0"),
    "umount2": lambda: sc.umount2(NUL),
    "pivot_root": lambda: sc.pivot_root(NUL, NOWHERE),
    "sethostname": lambda: sc.sethostname("a\0b"),
    "open_tree": lambda: sc.open_tree(sc.AT_FDCWD, NUL, 0),
    "move_mount": lambda: sc.move_mount(sc.AT_FDCWD, NUL, sc.AT_FDCWD, NOWHERE),
    "mount_setattr": lambda: sc.mount_setattr(sc.AT_FDCWD, NUL, 0, sc.MOUNT_ATTR_RDONLY),
    "openat2": lambda: sc.openat2(sc.AT_FDCWD, os.fsencode(NUL), os.O_RDONLY),
    "bind_readonly_recursive": lambda: sc.bind_readonly_recursive(NUL, NOWHERE),
}


@pytest.mark.parametrize("call", WITH_NUL_PATH.values(), ids=WITH_NUL_PATH.keys())
def test_embedded_nul_is_refused_before_the_call(call: Callable[[], object]) -> None:
    # ctypes would cut the path at the NUL and act on "/tmp/a" instead.
    with pytest.raises(ValueError, match="embedded null byte"):
        call()


OUT_OF_RANGE: dict[str, Callable[[], object]] = {
    "unshare-negative": lambda: sc.unshare(-1),
    "unshare-33-bits": lambda: sc.unshare(1 << 32 | sc.CLONE_NEWNS),
    "setns-fd": lambda: sc.setns(1 << 31, 0),
    "mount-flags": lambda: sc.mount(None, NOWHERE, None, 1 << 64),
    "umount2-flags": lambda: sc.umount2(NOWHERE, -1),
    "open_tree-dirfd": lambda: sc.open_tree(1 << 40, NOWHERE, 0),
    "move_mount-flags": lambda: sc.move_mount(0, "", 0, "", -4),
    "mount_setattr-attr": lambda: sc.mount_setattr(0, "", 0, 1 << 64),
    "mount_setattr-propagation": lambda: sc.mount_setattr(0, "", 0, 0, propagation=-1),
    "openat2-resolve": lambda: sc.openat2(sc.AT_FDCWD, NOWHERE, 0, resolve=-1),
    "pidfd_open-pid": lambda: sc.pidfd_open(1 << 32),
    "pidfd_send_signal-sig": lambda: sc.pidfd_send_signal(0, -(1 << 40)),
    "close_range-first": lambda: sc.close_range(-1),
    "prctl-arg": lambda: sc.prctl(sc.PR_SET_PDEATHSIG, -9),
    "capset-mask": lambda: sc.capset(1 << 64, 0, 0),
    "capget-pid": lambda: sc.capget(1 << 31),
}


@pytest.mark.parametrize("call", OUT_OF_RANGE.values(), ids=OUT_OF_RANGE.keys())
def test_out_of_range_integers_are_refused(call: Callable[[], object]) -> None:
    # ctypes would silently truncate them into other flags or another fd.
    with pytest.raises(ValueError, match="must be"):
        call()


def test_cap_mask_and_names_round_trip() -> None:
    names = ["CAP_CHOWN", "CAP_NET_ADMIN", "CAP_SYS_ADMIN", "CAP_CHECKPOINT_RESTORE"]
    mask = sc.cap_mask(names)
    assert mask == 1 | 1 << 12 | 1 << 21 | 1 << 40
    assert sc.cap_names(mask) == names
    assert sc.cap_mask(iter(names)) == mask
    assert sc.cap_mask([]) == 0


def test_cap_mask_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match=r"^unknown capabilities: CAP_BOGUS, NET_ADMIN$"):
        sc.cap_mask(["CAP_CHOWN", "NET_ADMIN", "CAP_BOGUS"])


def test_flag_names_decode_clone_flags() -> None:
    flags = sc.CLONE_NEWNS | sc.CLONE_NEWUTS | 0x1
    assert sc._flag_names(flags, sc._CLONE_NAMES) == "CLONE_NEWNS|CLONE_NEWUTS|0x1"
    assert sc._flag_names(0, sc._CLONE_NAMES) == "0"


# Calls that fail before they can change anything, so they are safe without a sandbox.


def test_setns_bad_fd_is_ebadf() -> None:
    with pytest.raises(OSError) as e:
        sc.setns(-1, sc.CLONE_NEWNET)
    assert e.value.errno == errno.EBADF
    assert e.value.filename == "fd -1, CLONE_NEWNET"
    assert e.value.strerror == "setns: Bad file descriptor"


def test_close_range_first_above_last_is_einval() -> None:
    with pytest.raises(OSError) as e:
        sc.close_range(10, 5)
    assert e.value.errno == errno.EINVAL
    assert e.value.filename == "fds 10..5"
    assert "first is greater than last" in str(e.value.strerror)


def test_pidfd_calls_report_their_target() -> None:
    with pytest.raises(OSError) as e:
        sc.pidfd_send_signal(-1, 0)
    assert (e.value.errno, e.value.filename) == (errno.EBADF, "pidfd -1, sig 0")
    with pytest.raises(ProcessLookupError) as lookup:
        sc.pidfd_open((1 << 31) - 1)  # above pid_max, so never a live process
    assert lookup.value.filename == f"pid {(1 << 31) - 1}"


def test_openat2_missing_path_carries_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(FileNotFoundError) as e:
        sc.openat2(sc.AT_FDCWD, missing, os.O_RDONLY)
    assert e.value.filename == str(missing)
    assert e.value.strerror == "openat2: No such file or directory"
    with pytest.raises(FileNotFoundError) as b:
        sc.openat2(sc.AT_FDCWD, os.fsencode(missing), os.O_RDONLY)
    assert b.value.filename == os.fsencode(missing)


def test_openat2_unknown_resolve_bit_is_einval(tmp_path: Path) -> None:
    with pytest.raises(OSError) as e:
        sc.openat2(sc.AT_FDCWD, tmp_path, os.O_RDONLY, resolve=1 << 40)
    assert e.value.errno == errno.EINVAL
    assert "unknown O_* or RESOLVE_* bit" in str(e.value.strerror)


def test_openat2_fd_is_not_inheritable(tmp_path: Path) -> None:
    fd = sc.openat2(sc.AT_FDCWD, tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert not os.get_inheritable(fd)
        assert os.path.samestat(os.fstat(fd), os.stat(tmp_path))
    finally:
        os.close(fd)


def test_prctl_unknown_option_names_the_call() -> None:
    with pytest.raises(OSError) as e:
        sc.prctl(9999, 1)
    assert e.value.errno == errno.EINVAL
    assert e.value.filename == "9999(1, 0, 0, 0)"


def proc_status() -> dict[str, str]:
    lines = Path("/proc/self/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def test_capget_and_prctl_reads_agree_with_proc() -> None:
    status = proc_status()
    assert sc.capget() == sc.CapSets(
        int(status["CapEff"], 16), int(status["CapPrm"], 16), int(status["CapInh"], 16)
    )
    assert sc.prctl(sc.PR_GET_NO_NEW_PRIVS) == int(status["NoNewPrivs"])
    bounding = sum(sc.prctl(sc.PR_CAPBSET_READ, n) << n for n in CAPABILITIES.values())
    assert bounding == int(status["CapBnd"], 16)


def test_no_other_module_imports_ctypes() -> None:
    offenders = []
    for path in sorted(SANDMAN.rglob("*.py")):
        if path.name == "syscalls.py" and path.parent.name == "kernel":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            if any(name.split(".")[0] == "ctypes" for name in names):
                offenders.append(f"{path.relative_to(SANDMAN.parent)}:{node.lineno}")
    assert offenders == []


def test_a_child_closing_by_keep_list_holds_only_stdio_and_what_it_kept(tmp_path: Path) -> None:
    """close_fds_except, as the spawn and exec children call it right after fork: whatever the
    parent had open, inheritable or close-on-exec, the child holds only stdio and its keep-list."""
    kept_read, kept_write = os.pipe()
    others = [os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY) for _ in range(3)]
    inheritable = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    os.set_inheritable(inheritable, True)
    report_read, report_write = os.pipe()
    child = os.fork()
    if child == 0:
        sc.close_fds_except((kept_write, report_write))
        # listdir's own fd is listed, and closed by the time it is looked at again
        names = [n for n in os.listdir("/proc/self/fd") if os.path.lexists(f"/proc/self/fd/{n}")]
        os.write(report_write, " ".join(map(str, names)).encode())
        os._exit(0)
    os.close(report_write)
    listed = {int(fd) for fd in os.read(report_read, 4096).decode().split()}
    os.waitpid(child, 0)
    for fd in (kept_read, kept_write, report_read, inheritable, *others):
        os.close(fd)
    assert listed == {0, 1, 2, kept_write, report_write}


def enum_values(header: Path, enum: str) -> dict[str, int]:
    """The members of `enum NAME { A, B = 5, C = B, ... };`, numbered as C numbers them."""
    body = re.search(rf"enum {enum} \{{(.*?)\}};", header.read_text(), re.S)
    assert body, enum
    values: dict[str, int] = {}
    number = 0
    for entry in re.sub(r"/\*.*?\*/", "", body[1], flags=re.S).split(","):
        name, _, value = (part.strip() for part in entry.partition("="))
        if not name:
            continue
        if value:
            number = values[value] if value in values else int(value, 0)
        values[name] = number
        number += 1
    return values


@pytest.mark.parametrize(
    ("enum", "names"),
    [
        ("bpf_cmd", ("BPF_PROG_LOAD", "BPF_PROG_ATTACH", "BPF_PROG_DETACH", "BPF_PROG_QUERY",
                     "BPF_PROG_GET_FD_BY_ID")),
        ("bpf_prog_type", ("BPF_PROG_TYPE_CGROUP_DEVICE",)),
        ("bpf_attach_type", ("BPF_CGROUP_DEVICE",)),
    ],
)  # fmt: skip
def test_bpf_enums_match_kernel_headers(enum: str, names: tuple[str, ...]) -> None:
    defined = enum_values(find_header("linux/bpf.h"), enum)
    assert {name: defined.get(name) for name in names} == {n: getattr(sc, n) for n in names}


def test_bpf_constants_known_values() -> None:
    assert (sc.BPF_PROG_LOAD, sc.BPF_PROG_ATTACH, sc.BPF_PROG_DETACH) == (5, 8, 9)
    assert (sc.BPF_PROG_GET_FD_BY_ID, sc.BPF_PROG_QUERY) == (13, 16)
    assert (sc.BPF_PROG_TYPE_CGROUP_DEVICE, sc.BPF_CGROUP_DEVICE) == (15, 6)
    assert (sc.BPF_F_ALLOW_OVERRIDE, sc.BPF_F_ALLOW_MULTI) == (1, 2)
    assert sc.SYSCALL_NUMBERS["x86_64"]["bpf"] == 321
    assert sc.SYSCALL_NUMBERS["aarch64"]["bpf"] == 280


def test_bpf_defines_match_kernel_headers() -> None:
    defined = header_values(find_header("linux/bpf.h"))
    names = ("BPF_F_ALLOW_OVERRIDE", "BPF_F_ALLOW_MULTI", "BPF_OBJ_NAME_LEN")
    assert {name: defined.get(name) for name in names} == {n: getattr(sc, n) for n in names}


def test_a_program_of_partial_instructions_is_refused() -> None:
    with pytest.raises(ValueError, match="8 bytes each"):
        sc.bpf_prog_load(sc.BPF_PROG_TYPE_CGROUP_DEVICE, b"\x95" * 7, "GPL")
