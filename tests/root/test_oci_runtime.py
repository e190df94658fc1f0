"""sandman-oci against the real kernel, as root: the runc command line's lifecycle (create,
start, state, kill, delete, run, ps, pause, resume), checked from outside (what /proc and the
cgroup trees show) and from inside (what the container's process prints).

The test process is a child subreaper, as conmon and containerd's shim are: the init, orphaned
by the runtime, is reparented to it, which is what lets the tests wait for its exit status.
Every container's cgroup sits under a prefix of the test's own, and the fixture fails the test
on any cgroup, process or state dir left behind."""

from __future__ import annotations

import array
import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from oci_bundles import Runtime, make_rootfs

pytestmark = pytest.mark.root

PR_SET_CHILD_SUBREAPER = 36
WAIT = 30.0  # a guard against hanging, never an assertion about speed
CGROUP_ROOT = Path("/sys/fs/cgroup")


def _subreaper(on: bool = True) -> None:
    """Make the test process a child subreaper, or (off) end that: left on, every orphan of the
    later tests (a sandbox's init, whose spawner exits) would become pytest's unreaped child."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) == 0


def _cgroup_dirs(prefix: str) -> list[Path]:
    """Every directory named by `prefix` in any hierarchy (v1 controllers, the v2 tree)."""
    found = []
    for top in [CGROUP_ROOT, *CGROUP_ROOT.iterdir()]:
        if (top / prefix).exists():
            found.append(top / prefix)
    return found


@pytest.fixture(scope="session")
def busybox_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_rootfs(tmp_path_factory.mktemp("oci-busybox") / "rootfs")


@pytest.fixture
def oci(tmp_path: Path, busybox_root: Path) -> Iterator[Runtime]:
    _subreaper()
    prefix = f"sandman-oci-test-{uuid.uuid4().hex[:10]}"
    runtime = Runtime(tmp_path / "state", busybox_root, tmp_path, prefix, [])
    yield runtime
    leftovers = []
    for container_id in runtime.ids:
        state = runtime("state", container_id, check=False)
        if state.returncode == 0:
            leftovers.append(f"container {container_id} ({json.loads(state.stdout)['status']})")
            runtime("delete", "--force", container_id, check=False)
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    _subreaper(on=False)
    for directory in _cgroup_dirs(prefix):
        # The prefix is the containers' parent (an engine's /machine): the test's to remove.
        for child in sorted(directory.rglob("*"), reverse=True):
            if child.is_dir():
                leftovers.append(f"cgroup {child}")
                child.rmdir()
        directory.rmdir()
    if runtime.root.exists() and os.listdir(runtime.root):
        leftovers.append(f"state {os.listdir(runtime.root)}")
    assert not leftovers, f"left behind: {leftovers}"


def _wait_exit(pid: int) -> int:
    """The exit status of a container's init, reparented to this subreaper."""
    pidfd = os.pidfd_open(pid)
    try:
        import select

        assert select.select([pidfd], [], [], WAIT)[0], f"init {pid} did not exit"
    finally:
        os.close(pidfd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _create_capturing(
    oci: Runtime, bundle: Path, container_id: str, tmp_path: Path
) -> tuple[int, Path]:
    """`create` with the container's output to a file: the init's PID and that file."""
    out = tmp_path / "out"
    with out.open("w") as stdout:
        pid_file = tmp_path / "pid"
        oci(
            "create",
            "--bundle",
            str(bundle),
            "--pid-file",
            str(pid_file),
            container_id,
            stdout=stdout,
        )
    return int(pid_file.read_text()), out


def _created(oci: Runtime, tmp_path: Path, name: str, args: list[str]) -> int:
    """Container `name` running `args`, created (its init waits for `start`): the init's PID."""
    bundle = oci.bundle(name, args)
    oci("create", "-b", str(bundle), "--pid-file", str(tmp_path / "pid"), name)
    return int((tmp_path / "pid").read_text())


def _ns(pid: int | str, name: str) -> str:
    return os.readlink(f"/proc/{pid}/ns/{name}")


def test_create_waits_then_start_runs_and_delete_cleans(oci: Runtime, tmp_path: Path) -> None:
    script = "echo started; cat /proc/self/cgroup; hostname; echo $OCI_TEST; exit 3"
    bundle = oci.bundle("c1", ["sh", "-c", script])
    pid, out = _create_capturing(oci, bundle, "c1", tmp_path)
    # Created: the init exists, in its own namespaces and cgroup, not yet running the command.
    assert oci.state("c1")["status"] == "created"
    assert oci.state("c1")["pid"] == pid
    assert os.stat(f"/proc/{pid}").st_uid == 0
    # The runtime is gone and never was the init's parent: it was reparented to us.
    assert int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]) == os.getpid()
    for name in ("pid", "mnt", "net", "uts", "ipc"):
        assert _ns(pid, name) != _ns("self", name), name
    assert f"/{oci.cgroup_prefix}/c1" in Path(f"/proc/{pid}/cgroup").read_text()
    assert out.read_text() == ""  # held at the gate: nothing of the container ran
    oci("start", "c1")
    assert _wait_exit(pid) == 3
    lines = out.read_text().splitlines()
    assert lines[0] == "started"
    assert lines[-2:] == ["ocitest", "1"]
    assert oci.state("c1")["status"] == "stopped"
    oci("delete", "c1")
    assert "does not exist" in oci("state", "c1", check=False).stderr
    assert not _cgroup_dirs(f"{oci.cgroup_prefix}/c1")


def test_kill_by_name_and_number_and_errors(oci: Runtime, tmp_path: Path) -> None:
    pid = _created(oci, tmp_path, "k1", ["sleep", "1000"])
    oci("start", "k1")
    assert oci.state("k1")["status"] == "running"
    assert json.loads(oci("ps", "--format", "json", "k1").stdout) == [pid]
    refused = oci("delete", "k1", check=False)
    assert refused.returncode != 0 and "not stopped" in refused.stderr
    oci("kill", "k1", "KILL")
    assert _wait_exit(pid) == -signal.SIGKILL
    stopped = oci("kill", "k1", "9", check=False)
    assert stopped.returncode != 0 and "container not running" in stopped.stderr
    oci("delete", "k1")
    missing = oci("kill", "k1", "TERM", check=False)
    assert missing.returncode != 0 and "does not exist" in missing.stderr
    assert oci("delete", "--force", "k1").returncode == 0


def test_kill_all_and_signal_of_a_created_container(oci: Runtime, tmp_path: Path) -> None:
    pid = _created(oci, tmp_path, "k2", ["sh", "-c", "sleep 1000 & sleep 1000 & wait"])
    oci("kill", "k2", "SIGTERM")  # a created container's init is waiting: TERM ends it
    assert _wait_exit(pid) != 0
    assert oci.state("k2")["status"] == "stopped"
    oci("delete", "k2")
    bundle = oci.bundle("k3", ["sh", "-c", "sleep 1000 & sleep 1000 & wait"])
    oci("create", "-b", str(bundle), "--pid-file", str(tmp_path / "pid3"), "k3")
    pid = int((tmp_path / "pid3").read_text())
    oci("start", "k3")
    oci("kill", "--all", "k3", "KILL")
    assert _wait_exit(pid) == -signal.SIGKILL
    oci("delete", "k3")


def test_pause_and_resume_freeze_the_cgroup(oci: Runtime, tmp_path: Path) -> None:
    pid = _created(oci, tmp_path, "p1", ["sleep", "1000"])
    oci("start", "p1")
    oci("pause", "p1")
    assert oci.state("p1")["status"] == "paused"
    freezer = [d for d in _cgroup_dirs(f"{oci.cgroup_prefix}/p1") if "freezer" in str(d)]
    if freezer:
        assert (freezer[0] / "freezer.state").read_text().strip() == "FROZEN"
    again = oci("pause", "p1", check=False)
    assert again.returncode != 0
    oci("resume", "p1")
    assert oci.state("p1")["status"] == "running"
    oci("delete", "--force", "p1")
    assert _wait_exit(pid) == -signal.SIGKILL


def test_cpu_shares_quota_period_and_cpuset_of_the_config(oci: Runtime, tmp_path: Path) -> None:
    bundle = oci.bundle("u1", ["sh", "-c", "grep Cpus_allowed_list /proc/self/status"])
    config = json.loads((bundle / "config.json").read_text())
    cpu = {"shares": 512, "quota": 20000, "period": 50000, "cpus": "0", "mems": "0"}
    config["linux"]["resources"] = {"cpu": cpu}
    (bundle / "config.json").write_text(json.dumps(config))
    pid, out = _create_capturing(oci, bundle, "u1", tmp_path)
    # From outside: the files the kernel shows, v1's or v2's.
    rel = f"{oci.cgroup_prefix}/u1"
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        top = CGROUP_ROOT / rel
        assert (top / "cpu.weight").read_text().strip() == "20"  # runc's map of 512 shares
        assert (top / "cpu.max").read_text().split() == ["20000", "50000"]
        cpuset = top
    else:
        assert (CGROUP_ROOT / "cpu" / rel / "cpu.shares").read_text().strip() == "512"
        assert (CGROUP_ROOT / "cpu" / rel / "cpu.cfs_quota_us").read_text().strip() == "20000"
        assert (CGROUP_ROOT / "cpu" / rel / "cpu.cfs_period_us").read_text().strip() == "50000"
        cpuset = CGROUP_ROOT / "cpuset" / rel
        assert str(pid) in (cpuset / "cgroup.procs").read_text().split()
    assert (cpuset / "cpuset.cpus").read_text().strip() == "0"
    assert (cpuset / "cpuset.mems").read_text().strip() == "0"
    # From inside: the scheduler lets the process run on CPU 0 only.
    oci("start", "u1")
    assert _wait_exit(pid) == 0
    assert out.read_text().split() == ["Cpus_allowed_list:", "0"]
    oci("delete", "u1")
    assert not _cgroup_dirs(rel)


def test_a_cpuset_the_host_cannot_give_fails_the_create(oci: Runtime, tmp_path: Path) -> None:
    bundle = oci.bundle("u2", ["true"])
    config = json.loads((bundle / "config.json").read_text())
    config["linux"]["resources"] = {"cpu": {"cpus": f"{os.cpu_count() or 1}"}}
    (bundle / "config.json").write_text(json.dumps(config))
    done = oci("create", "-b", str(bundle), "u2", check=False)
    assert done.returncode != 0
    assert "linux.resources.cpu:" in done.stderr and "cpuset.cpus" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert "does not exist" in oci("state", "u2", check=False).stderr
    assert not _cgroup_dirs(f"{oci.cgroup_prefix}/u2")


def test_update_changes_the_limits_of_a_running_container(oci: Runtime, tmp_path: Path) -> None:
    pid = _created(oci, tmp_path, "w1", ["sleep", "1000"])
    oci("start", "w1")
    resources = tmp_path / "resources.json"
    resources.write_text(json.dumps({"memory": {"limit": 96 << 20}, "pids": {"limit": 8}}))
    oci("update", "--resources", str(resources), "--cpu-quota", "25000", "w1")
    rel = f"{oci.cgroup_prefix}/w1"
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        top = CGROUP_ROOT / rel
        assert (top / "memory.max").read_text().strip() == str(96 << 20)
        assert (top / "pids.max").read_text().strip() == "8"
        assert (top / "cpu.max").read_text().split()[0] == "25000"
    else:
        assert (CGROUP_ROOT / "memory" / rel / "memory.limit_in_bytes").read_text().strip() == str(
            96 << 20
        )
        assert (CGROUP_ROOT / "pids" / rel / "pids.max").read_text().strip() == "8"
        assert (CGROUP_ROOT / "cpu" / rel / "cpu.cfs_quota_us").read_text().strip() == "25000"
    # From inside: a process of the container cannot fork past the new pids limit.
    fork = _process_file(
        tmp_path, "fork", ["sh", "-c", "for i in 1 2 3 4 5 6 7 8 9; do sleep 60 & done"]
    )
    forked = oci("exec", "--process", fork, "w1", check=False)
    assert "can't fork" in forked.stderr or "Resource temporarily unavailable" in forked.stderr
    # What it cannot change is refused by name, and a stopped container is refused.
    refused = oci(
        "update", "--resources", "-", "w1", check=False, input='{"blockIO": {"weight": 10}}'
    )
    assert refused.returncode != 0 and "resources.blockIO" in refused.stderr, refused.stderr
    oci("kill", "w1", "KILL")
    assert _wait_exit(pid) == -signal.SIGKILL
    stopped = oci("update", "--memory", str(64 << 20), "w1", check=False)
    assert stopped.returncode != 0 and "not running" in stopped.stderr, stopped.stderr
    oci("delete", "w1")


def test_a_config_joins_an_existing_mount_namespace(oci: Runtime, tmp_path: Path) -> None:
    holder = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sleep", "1000"])
    try:
        path = f"/proc/{holder.pid}/ns/mnt"
        for _ in range(1000):  # until unshare has made the namespace and exec'd sleep
            if os.readlink(path) != _ns("self", "mnt"):
                break
            time.sleep(0.01)
        bundle = oci.bundle("n1", ["sh", "-c", "cat /proc/self/mountinfo | wc -l; echo inside"])
        config = json.loads((bundle / "config.json").read_text())
        namespaces = config["linux"]["namespaces"]
        namespaces[:] = [n for n in namespaces if n["type"] != "mount"]
        namespaces.append({"type": "mount", "path": path})
        (bundle / "config.json").write_text(json.dumps(config))
        pid, out = _create_capturing(oci, bundle, "n1", tmp_path)
        # From outside: the init is in the holder's mount namespace, not a new one.
        assert _ns(pid, "mnt") == os.readlink(path) != _ns("self", "mnt")
        oci("start", "n1")
        assert _wait_exit(pid) == 0
        assert out.read_text().split()[-1] == "inside"  # its own root, pivoted into there
        oci("delete", "n1")
        # A new user namespace could not own the joined one: refused by name, nothing left.
        namespaces.append({"type": "user"})
        config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        (bundle / "config.json").write_text(json.dumps(config))
        refused = oci("create", "-b", str(bundle), "n1", check=False)
        assert "joining a mount namespace together with a new user namespace" in refused.stderr
    finally:
        holder.kill()
        holder.wait()


def _mounts_under(directory: Path) -> list[str]:
    """The mount points of this mount namespace at or below `directory`."""
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    points = [line.split()[4] for line in lines]
    return [p for p in points if p == str(directory) or p.startswith(f"{directory}/")]


def test_a_config_without_a_mount_namespace_shares_the_callers(
    oci: Runtime, tmp_path: Path
) -> None:
    """No mount namespace in the config: the container lives in the caller's, as runc gives it,
    its root built there on the state dir's stage and chrooted into; exec lands in that root;
    delete unmounts all of it, and the bundle's files, below those mounts, stay whole."""
    script = "cat /marker; echo $$; exec sleep 1000"
    bundle = oci.bundle("m1", ["sh", "-c", script])
    (bundle / "rootfs" / "marker").write_text("in-the-bundle\n")
    config = json.loads((bundle / "config.json").read_text())
    namespaces = config["linux"]["namespaces"]
    namespaces[:] = [n for n in namespaces if n["type"] != "mount"]
    (bundle / "config.json").write_text(json.dumps(config))
    pid, out = _create_capturing(oci, bundle, "m1", tmp_path)
    # From outside: the caller's mount namespace, the others its own; its root is the bundle's.
    assert _ns(pid, "mnt") == _ns("self", "mnt")
    assert _ns(pid, "pid") != _ns("self", "pid") and _ns(pid, "net") != _ns("self", "net")
    assert Path(f"/proc/{pid}/root/marker").read_text() == "in-the-bundle\n"
    mounted = _mounts_under(oci.root)
    assert any(p.endswith("/m1/rootfs/proc") for p in mounted), mounted
    oci("start", "m1")
    deadline = time.monotonic() + WAIT
    while len(out.read_text().split()) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    # From inside: its own files, and PID 1 of its own pid namespace.
    assert out.read_text().split() == ["in-the-bundle", "1"]
    process = _process_file(tmp_path, "look", ["sh", "-c", "cat /marker; ls /"])
    seen = oci("exec", "--process", process, "m1")
    assert seen.stdout.splitlines()[0] == "in-the-bundle"
    assert "marker" in seen.stdout.split() and "usr" not in seen.stdout.split()
    oci("delete", "--force", "m1")
    assert _wait_exit(pid) == -signal.SIGKILL
    assert _mounts_under(oci.root) == []
    assert (bundle / "rootfs" / "marker").read_text() == "in-the-bundle\n"
    assert (bundle / "rootfs" / "bin" / "busybox").is_file()
    # A new user namespace could not own the caller's mount namespace: refused, nothing left.
    namespaces.append({"type": "user"})
    (bundle / "config.json").write_text(json.dumps(config))
    refused = oci("create", "-b", str(bundle), "m1", check=False)
    assert refused.returncode != 0
    assert "a new user namespace needs a new mount namespace too" in refused.stderr
    assert _mounts_under(oci.root) == []


def test_start_succeeds_when_the_command_exits_and_is_reaped_at_once(
    oci: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worst schedule, forced: the moment `start` opens the gate, the command runs, exits
    and is reaped by the engine (here the test, its subreaper), before `start` looks at it again.
    Under containerd, whose shim reaps at once, `start` failed with ESRCH about 1 in 100 runs."""
    from sandman.oci import verbs
    from sandman.oci.state import Store

    bundle = oci.bundle("q1", ["true"])
    oci("create", "--bundle", str(bundle), "--pid-file", str(tmp_path / "pid"), "q1")
    pid = int((tmp_path / "pid").read_text())
    real_open = os.open
    reaped: list[int] = []

    def open_then_reap(path: str, flags: int, *args: int, **kwargs: int) -> int:
        fd = real_open(path, flags, *args, **kwargs)
        if str(path).endswith("exec.fifo"):
            reaped.append(_wait_exit(pid))
        return fd

    monkeypatch.setattr(os, "open", open_then_reap)
    verbs.start(Store(str(oci.root)), "q1")
    monkeypatch.undo()
    assert reaped == [0]
    assert oci.state("q1")["status"] == "stopped"
    oci("delete", "q1")


def test_run_waits_and_passes_the_exit_code(oci: Runtime) -> None:
    bundle = oci.bundle("r1", ["sh", "-c", "echo ran; exit 7"])
    done = oci("run", "-b", str(bundle), "r1", check=False)
    assert done.returncode == 7, done.stderr
    assert done.stdout == "ran\n"
    assert "does not exist" in oci("state", "r1", check=False).stderr


def test_missing_command_fails_the_create(oci: Runtime, tmp_path: Path) -> None:
    bundle = oci.bundle("m1", ["no-such-program"])
    log = tmp_path / "log.json"
    done = oci(
        "--log", str(log), "--log-format", "json", "create", "-b", str(bundle), "m1", check=False
    )
    assert done.returncode != 0
    assert "executable file not found" in done.stderr
    entry = json.loads(log.read_text().splitlines()[-1])
    assert entry["level"] == "error" and "executable file not found" in entry["msg"]
    assert "does not exist" in oci("state", "m1", check=False).stderr


def test_console_socket_gets_a_pty_master_of_the_containers_devpts(
    oci: Runtime, tmp_path: Path
) -> None:
    bundle = oci.bundle("t1", ["sh", "-c", "tty; echo on-the-pty"], terminal=True)
    path = str(tmp_path / "console.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        listener.listen(1)
        oci(
            "create",
            "-b",
            str(bundle),
            "--console-socket",
            path,
            "--pid-file",
            str(tmp_path / "pid"),
            "t1",
        )
        connection, _ = listener.accept()
        with connection:
            fds = array.array("i")
            data, ancillary, _, _ = connection.recvmsg(4096, socket.CMSG_SPACE(4 * fds.itemsize))
            assert len(ancillary) == 1
            fds.frombytes(
                ancillary[0][2][: len(ancillary[0][2]) - len(ancillary[0][2]) % fds.itemsize]
            )
            assert len(fds) == 1
            assert connection.recv(1) == b""  # one message, then the runtime closed it
    master = fds[0]
    try:
        assert data.decode().startswith("/dev/pts/")
        # The container's own devpts instance, not the host's.
        assert os.fstat(master).st_dev != os.stat("/dev/pts/ptmx").st_dev
        pid = int((tmp_path / "pid").read_text())
        oci("start", "t1")
        output = b""
        with contextlib.suppress(OSError):  # EIO once the slave's last holder is gone
            while chunk := os.read(master, 1024):
                output += chunk
        assert b"on-the-pty" in output
        assert data.decode().encode() in output  # `tty` names the pty it was given
        assert _wait_exit(pid) == 0
    finally:
        os.close(master)
    oci("delete", "t1")


def test_features_and_version(oci: Runtime) -> None:
    features = json.loads(oci("features").stdout)
    assert features["ociVersionMin"] and features["ociVersionMax"]
    assert "pid" in features["linux"]["namespaces"]
    assert "sandman-oci" in oci("--version").stdout


def _process_file(tmp_path: Path, name: str, args: list[str], **extra: object) -> str:
    process = {"args": args, "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}}
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({**process, **extra}))
    return str(path)


def test_exec_foreground_detached_and_with_a_terminal(oci: Runtime, tmp_path: Path) -> None:
    init = _created(oci, tmp_path, "e1", ["sleep", "1000"])
    oci("start", "e1")
    # Foreground: the runtime exits with the process's status; the process ran inside.
    script = "cat /proc/1/cmdline; echo; hostname; exit 5"
    process = _process_file(tmp_path, "fg", ["sh", "-c", script])
    done = oci(
        "exec", "--process", process, "--pid-file", str(tmp_path / "fg.pid"), "e1", check=False
    )
    assert done.returncode == 5, done.stderr
    assert done.stdout.splitlines() == ["sleep\x001000\x00", "ocitest"]
    assert int((tmp_path / "fg.pid").read_text()) > 0
    # Detached: the runtime returns; the process is reparented to this subreaper.
    process = _process_file(tmp_path, "bg", ["sh", "-c", "exit 6"])
    oci("exec", "--detach", "--process", process, "--pid-file", str(tmp_path / "bg.pid"), "e1")
    assert _wait_exit(int((tmp_path / "bg.pid").read_text())) == 6
    # A terminal: the master comes over the console socket, from the container's devpts.
    process = _process_file(tmp_path, "tty", ["sh", "-c", "tty; echo in-exec-tty"], terminal=True)
    path = str(tmp_path / "exec.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        listener.listen(1)
        pid_file = str(tmp_path / "tty.pid")
        options = ("--detach", "--tty", "--console-socket", path, "--pid-file", pid_file)
        oci("exec", *options, "--process", process, "e1")
        connection, _ = listener.accept()
        with connection:
            data, fds, _, _ = socket.recv_fds(connection, 4096, 1)
    assert len(fds) == 1 and data.startswith(b"/dev/pts/")
    try:
        assert os.fstat(fds[0]).st_dev != os.stat("/dev/pts/ptmx").st_dev
        output = b""
        with contextlib.suppress(OSError):
            while chunk := os.read(fds[0], 1024):
                output += chunk
        assert b"in-exec-tty" in output and data in output
    finally:
        os.close(fds[0])
    assert _wait_exit(int(Path(pid_file).read_text())) == 0
    oci("delete", "--force", "e1")
    assert _wait_exit(init) == -signal.SIGKILL


def test_exec_into_a_stopped_container_is_refused(oci: Runtime, tmp_path: Path) -> None:
    pid = _created(oci, tmp_path, "e2", ["true"])
    oci("start", "e2")
    assert _wait_exit(pid) == 0
    process = _process_file(tmp_path, "p", ["true"])
    done = oci("exec", "--process", process, "e2", check=False)
    assert done.returncode != 0 and "container not running" in done.stderr
    oci("delete", "e2")


def test_an_images_symlinks_never_lead_a_mount_or_mask_onto_the_host(
    oci: Runtime, tmp_path: Path
) -> None:
    """The root file system is untrusted: an absolute symlink in it that names a host directory
    is resolved inside the root for mount targets, masked and read-only paths alike."""
    host = tmp_path / "host-side"
    (host / "kept").mkdir(parents=True)
    script = (
        "ls -d /escape/sub /escape/masked /escape/bound/marker;"
        " touch /escape/kept/written && echo wrote"
    )
    bundle = oci.bundle("s1", ["sh", "-c", script])
    rootfs = bundle / "rootfs"
    (rootfs / "escape").symlink_to(host)  # absolute: the host's path, if followed from outside
    (rootfs / str(host).lstrip("/")).mkdir(parents=True)
    (rootfs / str(host).lstrip("/") / "kept").mkdir()
    config = json.loads((bundle / "config.json").read_text())
    config["mounts"].append({"destination": "/escape/sub", "type": "tmpfs", "source": "tmpfs"})
    # A bind mount too: without a user namespace it is made inside, in the config's order.
    source = tmp_path / "bind-source"
    source.mkdir()
    (source / "marker").touch()
    bind = {"destination": "/escape/bound", "source": str(source), "options": ["bind"]}
    config["mounts"].append(bind)
    config["linux"]["maskedPaths"] = ["/escape/masked", "/escape/kept"]
    (bundle / "config.json").write_text(json.dumps(config))
    out = tmp_path / "out"
    with out.open("w") as stdout:
        pid_file = str(tmp_path / "pid")
        oci("create", "-b", str(bundle), "--pid-file", pid_file, "s1", stdout=stdout)
    pid = int(Path(pid_file).read_text())
    oci("start", "s1")
    _wait_exit(pid)
    # Outside: nothing was made, mounted or written on the host's side of the link.
    assert sorted(os.listdir(host)) == ["kept"]
    assert os.listdir(host / "kept") == []
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        assert str(host) not in handle.read()
    # Inside: the tmpfs landed in the root's own copy of that path, and the mask held there.
    assert "/escape/sub" in out.read_text()
    assert "/escape/bound/marker" in out.read_text()
    assert "wrote" not in out.read_text()
    oci("delete", "s1")
    assert os.stat(oci.root).st_mode & 0o777 == 0o700
