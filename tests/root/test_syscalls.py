"""Tests of sandman.kernel.syscalls against the real kernel, as root.

Anything that changes namespaces, mounts, the hostname, capabilities or the fd table runs in a
forked child (`in_child`) that first gets its own namespaces, so a failing assertion cannot leave a
mount or a hostname behind: the kernel drops the child's namespaces when it exits. The autouse
fixture `host_left_clean` then proves that the test process still has no mount under the test's
directory, the same hostname, and no child processes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pickle
import select
import signal
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from sandman.capabilities import CAPABILITIES
from sandman.kernel import syscalls as sc

T = TypeVar("T")
CHILD_TIMEOUT = 30.0


def children_of_self() -> list[str]:
    tasks = Path("/proc/self/task").glob("*/children")
    return [pid for task in tasks for pid in task.read_text().split()]


def mount_points() -> list[str]:
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return [line.split()[4] for line in lines]


@pytest.fixture(autouse=True)
def host_left_clean(tmp_path: Path) -> Iterator[None]:
    hostname = os.uname().nodename
    yield
    assert [m for m in mount_points() if m.startswith(str(tmp_path))] == []
    assert os.uname().nodename == hostname
    assert children_of_self() == []


def _send(fd: int, payload: bytes) -> None:
    while payload:
        payload = payload[os.write(fd, payload) :]


def _child_main(fn: Callable[[], object], fd: int) -> None:
    try:
        payload = pickle.dumps((True, fn()))
    except BaseException as exc:
        exc.add_note(f"in the child:\n{traceback.format_exc()}")
        try:
            payload = pickle.dumps((False, exc))
        except Exception:
            payload = pickle.dumps((False, RuntimeError(traceback.format_exc())))
    _send(fd, payload)


def in_child(fn: Callable[[], T]) -> T:
    """Run `fn` in a forked child; return its result or raise its exception here."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(read_end)
            os.setpgid(0, 0)  # its own group, so it can be killed with anything it started
            _child_main(fn, write_end)
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    chunks, deadline = [], time.monotonic() + CHILD_TIMEOUT
    try:
        while time.monotonic() < deadline:
            if select.select([read_end], [], [], deadline - time.monotonic())[0]:
                if not (chunk := os.read(read_end, 65536)):
                    break
                chunks.append(chunk)
        else:
            pytest.fail(f"child {pid} did not finish within {CHILD_TIMEOUT}s")
    finally:
        os.close(read_end)
        reaped, status = os.waitpid(pid, os.WNOHANG)
        if not reaped:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
    if not chunks:
        pytest.fail(f"child {pid} died without a result: wait status {status:#x}")
    ok, value = pickle.loads(b"".join(chunks))
    if not ok:
        raise value
    result: T = value
    return result


def private_mounts() -> None:
    """Give the (child) process its own mount namespace that does not propagate to the host."""
    sc.unshare(sc.CLONE_NEWNS)
    sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)


def ns_inode(name: str) -> int:
    return os.stat(f"/proc/self/ns/{name}").st_ino


def proc_status(field: str) -> str:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return line.split(":", 1)[1].strip()
    raise KeyError(field)


@pytest.mark.root
def test_unshare_creates_each_namespace_type() -> None:
    kinds = {
        "mnt": sc.CLONE_NEWNS,
        "uts": sc.CLONE_NEWUTS,
        "ipc": sc.CLONE_NEWIPC,
        "net": sc.CLONE_NEWNET,
        "cgroup": sc.CLONE_NEWCGROUP,
        "user": sc.CLONE_NEWUSER,
        "time_for_children": sc.CLONE_NEWTIME,
    }

    def child() -> dict[str, object]:
        before = {name: ns_inode(name) for name in kinds}
        sc.unshare(sum(kinds.values()) | sc.CLONE_NEWPID)
        changed = {name: ns_inode(name) != inode for name, inode in before.items()}
        # The new PID namespace only comes to life with its first process, which is its pid 1.
        pid = os.fork()
        if pid == 0:
            os._exit(0 if os.getpid() == 1 else 1)
        return {**changed, "first child is pid 1": os.waitpid(pid, 0)[1] == 0}

    assert in_child(child) == {**dict.fromkeys(kinds, True), "first child is pid 1": True}


@pytest.mark.root
def test_unshare_unknown_flag_is_einval_and_named() -> None:
    with pytest.raises(OSError) as e:
        in_child(lambda: sc.unshare(sc.CLONE_NEWNS | 0x1))
    assert e.value.errno == errno.EINVAL
    assert e.value.filename == "CLONE_NEWNS|0x1"
    assert str(e.value.strerror).startswith(
        "unshare: Invalid argument (flag unknown to this kernel"
    )


@pytest.mark.root
def test_mount_tmpfs_then_umount(tmp_path: Path) -> None:
    target = tmp_path / "mnt"
    target.mkdir()

    def child() -> tuple[bool, list[str], bool]:
        private_mounts()
        sc.mount("tmpfs", target, "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, "size=1m,mode=0700")
        (target / "file").write_text("x")
        mounted = str(target) in mount_points()
        content = os.listdir(target)
        sc.umount2(target)
        return mounted, content, os.path.ismount(target)

    assert in_child(child) == (True, ["file"], False)
    assert os.listdir(target) == []


@pytest.mark.root
def test_mount_missing_target_is_enoent_with_path(tmp_path: Path) -> None:
    missing = tmp_path / "missing"

    def child() -> None:
        private_mounts()
        sc.mount("tmpfs", missing, "tmpfs")

    with pytest.raises(FileNotFoundError) as e:
        in_child(child)
    assert e.value.filename == str(missing)
    assert e.value.strerror == "mount: No such file or directory"


@pytest.mark.root
def test_mount_bind_missing_source_names_both_paths(tmp_path: Path) -> None:
    def child() -> None:
        private_mounts()
        sc.mount(tmp_path / "nothing", tmp_path, None, sc.MS_BIND)

    with pytest.raises(FileNotFoundError) as e:
        in_child(child)
    assert (e.value.filename, e.value.filename2) == (str(tmp_path), str(tmp_path / "nothing"))


@pytest.mark.root
def test_mount_unknown_fstype_is_enodev(tmp_path: Path) -> None:
    def child() -> None:
        private_mounts()
        sc.mount("none", tmp_path, "sandmanfs")

    with pytest.raises(OSError) as e:
        in_child(child)
    assert e.value.errno == errno.ENODEV
    assert "filesystem type not supported" in str(e.value.strerror)


@pytest.mark.root
def test_umount2_not_mounted_busy_and_detach(tmp_path: Path) -> None:
    def child() -> tuple[int, str, int, bool, str]:
        private_mounts()
        try:
            sc.umount2(tmp_path)
        except OSError as exc:
            not_mounted = (exc.errno or 0, exc.strerror or "")
        sc.mount("tmpfs", tmp_path, "tmpfs")
        with open(tmp_path / "open", "w") as held:
            try:
                sc.umount2(tmp_path)
            except OSError as exc:
                busy = exc.errno or 0
            sc.umount2(tmp_path, sc.MNT_DETACH)
            held.write("still writable after a lazy detach")
        return *not_mounted, busy, os.path.ismount(tmp_path), str(tmp_path)

    not_mounted, text, busy, mounted, path = in_child(child)
    assert (not_mounted, text) == (errno.EINVAL, "umount2: Invalid argument (not a mount point)")
    assert (busy, mounted, path) == (errno.EBUSY, False, str(tmp_path))


@pytest.mark.root
def test_bind_readonly_recursive_covers_submounts(tmp_path: Path) -> None:
    source, target = tmp_path / "src", tmp_path / "dst"
    (source / "sub").mkdir(parents=True)
    target.mkdir()

    def write_errno(path: Path) -> int:
        try:
            path.write_text("x")
        except OSError as exc:
            return exc.errno or 0
        return 0

    def child() -> dict[str, object]:
        private_mounts()
        sc.mount("tmpfs", source / "sub", "tmpfs")
        (source / "sub" / "seen").write_text("from the submount")
        sc.bind_readonly_recursive(source, target)
        return {
            "top": write_errno(target / "f"),
            "sub": write_errno(target / "sub" / "f"),
            "source still writable": write_errno(source / "sub" / "g"),
            "submount visible": (target / "sub" / "seen").read_text(),
            "mounted": {str(target), str(target / "sub")} <= set(mount_points()),
        }

    assert in_child(child) == {
        "top": errno.EROFS,
        "sub": errno.EROFS,
        "source still writable": 0,
        "submount visible": "from the submount",
        "mounted": True,
    }
    assert sorted(os.listdir(source)) == ["sub"]


@pytest.mark.root
def test_bind_readonly_recursive_missing_source(tmp_path: Path) -> None:
    def child() -> bool:
        private_mounts()
        try:
            sc.bind_readonly_recursive(tmp_path / "missing", tmp_path)
        finally:
            assert str(tmp_path) not in mount_points()
        return True

    with pytest.raises(FileNotFoundError) as e:
        in_child(child)
    assert e.value.filename == str(tmp_path / "missing")
    assert e.value.strerror == "open_tree: No such file or directory"


@pytest.mark.root
def test_sethostname_only_in_new_uts_namespace() -> None:
    host = os.uname().nodename
    name = f"smt{os.getpid():x}"

    def child() -> tuple[str, int]:
        sc.unshare(sc.CLONE_NEWUTS)
        sc.sethostname(name)
        try:
            sc.sethostname("x" * 65)
        except OSError as exc:
            return os.uname().nodename, exc.errno or 0
        return os.uname().nodename, 0

    assert in_child(child) == (name, errno.EINVAL)
    assert os.uname().nodename == host


@pytest.mark.root
def test_setns_returns_to_the_original_namespace() -> None:
    host = os.uname().nodename

    def child() -> tuple[str, str, int, str]:
        original = os.open("/proc/self/ns/uts", os.O_RDONLY)
        sc.unshare(sc.CLONE_NEWUTS)
        sc.sethostname("smt-inside")
        inside = os.uname().nodename
        try:
            sc.setns(original, sc.CLONE_NEWNET)
        except OSError as exc:
            wrong_type, detail = exc.errno or 0, str(exc.filename)
        sc.setns(original, sc.CLONE_NEWUTS)
        return inside, os.uname().nodename, wrong_type, detail

    inside, back, wrong_type, detail = in_child(child)
    assert (inside, back) == ("smt-inside", host)
    assert wrong_type == errno.EINVAL
    assert detail.endswith(", CLONE_NEWNET")


@pytest.mark.root
def test_pivot_root_into_tmpfs(tmp_path: Path) -> None:
    new_root = tmp_path / "newroot"
    new_root.mkdir()

    def child() -> tuple[list[str], list[str]]:
        private_mounts()
        sc.mount("tmpfs", new_root, "tmpfs")
        (new_root / "old").mkdir()
        (new_root / "marker").write_text("")
        sc.pivot_root(new_root, new_root / "old")
        os.chdir("/")
        sc.umount2("/old", sc.MNT_DETACH)
        return sorted(os.listdir("/")), os.listdir("/old")

    assert in_child(child) == (["marker", "old"], [])
    assert os.listdir(new_root) == []


@pytest.mark.root
def test_pivot_root_in_host_root_fails(tmp_path: Path) -> None:
    def child() -> None:
        sc.unshare(sc.CLONE_NEWNS)  # a copy of the host's mounts, propagation left as it is
        sc.pivot_root("/", tmp_path)

    with pytest.raises(OSError) as e:
        in_child(child)
    assert e.value.errno in {errno.EINVAL, errno.EBUSY}
    assert (e.value.filename, e.value.filename2) == ("/", str(tmp_path))


@pytest.mark.root
def test_pivot_root_new_root_not_a_mount_point(tmp_path: Path) -> None:
    def child() -> None:
        private_mounts()
        sc.mount("tmpfs", tmp_path, "tmpfs")
        (tmp_path / "dir" / "old").mkdir(parents=True)
        sc.pivot_root(tmp_path / "dir", tmp_path / "dir" / "old")

    with pytest.raises(OSError) as e:
        in_child(child)
    assert e.value.errno == errno.EINVAL
    assert "new_root must be a mount point" in str(e.value.strerror)
    assert e.value.filename == str(tmp_path / "dir")


@pytest.mark.root
def test_pidfd_open_and_send_signal_kill_a_child() -> None:
    pid = os.fork()
    if pid == 0:
        try:
            time.sleep(CHILD_TIMEOUT)
        finally:
            os._exit(0)
    pidfd, reaped = -1, False
    try:
        pidfd = sc.pidfd_open(pid)
        sc.pidfd_send_signal(pidfd, signal.SIGKILL)
        assert select.select([pidfd], [], [], CHILD_TIMEOUT)[0] == [pidfd]  # readable: exited
        _, status = os.waitpid(pid, 0)
        reaped = True
        assert os.WIFSIGNALED(status)
        assert os.WTERMSIG(status) == signal.SIGKILL
        with pytest.raises(ProcessLookupError) as e:
            sc.pidfd_send_signal(pidfd, 0)
        assert (
            e.value.strerror
            == "pidfd_send_signal: No such process (the process has already exited)"
        )
    finally:
        if pidfd >= 0:
            os.close(pidfd)
        if not reaped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


@pytest.mark.root
def test_openat2_resolve_in_root_stays_inside(tmp_path: Path) -> None:
    root = tmp_path / "root"
    outside = tmp_path / "secret"
    outside.write_text("host")
    inside = root / outside.relative_to("/")
    inside.parent.mkdir(parents=True)
    inside.write_text("jail")
    (root / "link").symlink_to(outside)  # absolute: "/…/secret"
    escape = "../" * 10 + str(outside.relative_to("/"))

    def read(dirfd: int, path: str, resolve: int) -> str:
        fd = sc.openat2(dirfd, path, os.O_RDONLY, resolve=resolve)
        with open(fd) as f:
            return f.read()

    rootfd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        assert (root / "link").read_text() == "host"
        assert read(rootfd, "link", sc.RESOLVE_IN_ROOT) == "jail"
        assert read(rootfd, escape, sc.RESOLVE_IN_ROOT) == "jail"
        assert read(rootfd, str(outside), sc.RESOLVE_IN_ROOT) == "jail"
        with pytest.raises(OSError) as beneath:
            read(rootfd, "link", sc.RESOLVE_BENEATH)
        assert (beneath.value.errno, beneath.value.filename) == (errno.EXDEV, "link")
        assert "escapes the root" in str(beneath.value.strerror)
        with pytest.raises(OSError) as magic:
            read(sc.AT_FDCWD, f"/proc/self/fd/{rootfd}", sc.RESOLVE_NO_MAGICLINKS)
        assert magic.value.errno == errno.ELOOP
    finally:
        os.close(rootfd)


@pytest.mark.root
def test_close_range_leaves_only_fds_below_first() -> None:
    def child() -> dict[str, object]:
        below = [fd for fd in map(int, os.listdir("/proc/self/fd")) if is_open(fd)]
        first = max(below) + 1  # so the pipe back to the parent survives
        high = [first, first + 1, first + 50]
        os.set_inheritable(0, True)
        for fd in high:
            os.dup2(0, fd, inheritable=True)
        sc.close_range(first, first)
        bounded = [is_open(fd) for fd in high]
        sc.close_range(first, sc.FD_LAST, sc.CLOSE_RANGE_CLOEXEC)
        cloexec = [(is_open(fd), os.get_inheritable(fd)) for fd in high[1:]]
        sc.close_range(first)
        return {
            "bounded": bounded,
            "cloexec": cloexec,
            "open at or above first": [fd for fd in range(first, first + 64) if is_open(fd)],
            "below first": [fd for fd in below if is_open(fd)] == below,
            "stdin still inheritable": os.get_inheritable(0),
        }

    assert in_child(child) == {
        "bounded": [False, True, True],
        "cloexec": [(True, False), (True, False)],
        "open at or above first": [],
        "below first": True,
        "stdin still inheritable": True,
    }


def is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError as exc:
        assert exc.errno == errno.EBADF
        return False
    return True


@pytest.mark.root
def test_prctl_sets_and_reads_process_flags() -> None:
    module = CAPABILITIES["CAP_SYS_MODULE"]

    def child() -> dict[str, object]:
        return {
            "no_new_privs": sc.prctl(sc.PR_SET_NO_NEW_PRIVS, 1),
            "get no_new_privs": sc.prctl(sc.PR_GET_NO_NEW_PRIVS),
            "subreaper": sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1),
            "pdeathsig": sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL),
            "drop": sc.prctl(sc.PR_CAPBSET_DROP, module),
            "read": sc.prctl(sc.PR_CAPBSET_READ, module),
            "status": (proc_status("NoNewPrivs"), int(proc_status("CapBnd"), 16) >> module & 1),
        }

    assert in_child(child) == {
        "no_new_privs": 0,
        "get no_new_privs": 1,
        "subreaper": 0,
        "pdeathsig": 0,
        "drop": 0,
        "read": 0,
        "status": ("1", 0),
    }


@pytest.mark.root
def test_capset_changes_sets_and_refuses_to_raise() -> None:
    raw = 1 << CAPABILITIES["CAP_NET_RAW"]
    bind_number = CAPABILITIES["CAP_NET_BIND_SERVICE"]
    bind = 1 << bind_number
    admin = 1 << CAPABILITIES["CAP_SYS_ADMIN"]

    def child() -> dict[str, object]:
        start = sc.capget()
        assert start.effective & start.permitted & admin, start
        eff, prm = start.effective & ~raw, start.permitted & ~raw
        sc.capset(eff, prm, start.inheritable | bind)
        after = sc.capget()
        try:
            sc.capset(eff | raw, prm, after.inheritable)
        except OSError as exc:
            refused = (exc.errno, exc.strerror)
        ambient = sc.prctl(sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_RAISE, bind_number)
        return {
            "after": after == sc.CapSets(eff, prm, start.inheritable | bind),
            "status": int(proc_status("CapEff"), 16) == eff,
            "refused": refused,
            "ambient": (
                ambient,
                sc.prctl(sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_IS_SET, bind_number),
            ),
            "CapAmb": int(proc_status("CapAmb"), 16) == bind,
        }

    assert in_child(child) == {
        "after": True,
        "status": True,
        "refused": (
            errno.EPERM,
            "capset: Operation not permitted (cannot add capabilities beyond the permitted or "
            "bounding set)",
        ),
        "ambient": (0, 1),
        "CapAmb": True,
    }


def cgroup2_mount() -> str:
    """Where the cgroup v2 hierarchy is mounted: /sys/fs/cgroup on a pure v2 host,
    /sys/fs/cgroup/unified on a hybrid one."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.split()[0] == "cgroup2":
            return left.split()[4]
    pytest.fail("this host mounts no cgroup v2 hierarchy")


AT_FORK: list[str] = []  # what the os.register_at_fork hooks saw, in this process


def _child_report(write_end: int) -> None:
    """The first thing the child does: its cgroup, then proof that the interpreter works as
    after os.fork: an import (the import lock was reset), a thread (the GIL and the thread
    states were remade), the hooks the child saw."""
    cgroup = Path("/proc/self/cgroup").read_text()
    import colorsys  # noqa: F401 - not imported before: takes the import lock
    import threading

    ran: list[bool] = []
    thread = threading.Thread(target=lambda: ran.append(True))
    thread.start()
    thread.join(CHILD_TIMEOUT)
    report = {"cgroup": cgroup, "thread": ran == [True], "at_fork": AT_FORK, "pid": os.getpid()}
    os.write(write_end, pickle.dumps(report))


@pytest.mark.root
def test_fork_into_cgroup_is_born_in_the_cgroup_and_runs_python_as_after_fork() -> None:
    os.register_at_fork(
        before=lambda: AT_FORK.append("before"),
        after_in_parent=lambda: AT_FORK.append("parent"),
        after_in_child=lambda: AT_FORK.append("child"),
    )
    AT_FORK.clear()
    directory = Path(cgroup2_mount(), f"sandman-test-clone-{os.getpid()}")
    directory.mkdir()
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        read_end, write_end = os.pipe()
        try:
            pid = sc.fork_into_cgroup(fd)
            if pid == 0:
                status = 1
                try:
                    _child_report(write_end)
                    status = 0
                finally:
                    os._exit(status)
        finally:
            os.close(fd)
            os.close(write_end)
        chunks, ended = [], False
        try:
            while select.select([read_end], [], [], CHILD_TIMEOUT)[0]:
                if not (chunk := os.read(read_end, 65536)):
                    ended = True
                    break
                chunks.append(chunk)
        finally:
            os.close(read_end)
            if not ended:  # a hung child: a guard, not a timing
                os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        report = pickle.loads(b"".join(chunks))
        # Born there: its first look at /proc/self/cgroup already shows the cgroup.
        assert f"0::/{directory.name}\n" in report["cgroup"], report
        assert report["pid"] == pid
        assert report["thread"] is True
        assert report["at_fork"] == ["before", "child"]
        assert AT_FORK == ["before", "parent"]
    finally:
        directory.rmdir()


@pytest.mark.root
def test_fork_into_cgroup_refused_makes_no_child(tmp_path: Path) -> None:
    """A directory that is not a cgroup v2 one: EBADF, named as clone3's, and nothing forked."""
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with pytest.raises(OSError) as caught:
            sc.fork_into_cgroup(fd)
    finally:
        os.close(fd)
    assert caught.value.errno == errno.EBADF
    assert str(caught.value.strerror).startswith("clone3: Bad file descriptor (the fd is not")
    assert children_of_self() == []
