"""Tests of sandman.kernel.cgroup against the host's real cgroup tree, as root.

They use the driver `driver_for` picks for this host (V1Driver on a v1 or hybrid host, V2Driver on
a pure v2 one) under a base unique to the test, `sandman-test-<hex>`, so nothing else on the host
is touched. The `host` fixture registers every process a test starts; its teardown kills and
removes the base with the driver, kills and reaps the processes, and then looks for the base in
every cgroup mount of the host: if anything is left it scrubs it by hand (independently of the
driver) and fails the test, so a leak is both reported and cleaned up.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandman.apply.limits import cgroup_limits
from sandman.kernel import cgroup as cg
from sandman.units.plain import Limits

ROOT = "/sys/fs/cgroup"
MiB = 1 << 20


def make_limits(**values: object) -> cg.CgroupLimits:
    """Limits as a unit writes them (`cpu_max="50%"`), through the unit validators and the
    conversion apply makes."""
    return cgroup_limits(Limits.model_validate(values))


WAIT = 30.0  # a guard against hanging, never an assertion about speed


def cgroup_mounts() -> list[str]:
    """Every cgroup and cgroup2 mount point of the host, not only the ones the driver uses."""
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.split()[0] in ("cgroup", "cgroup2"):
            mounts.append(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), left.split()[4]))
    return mounts


def leftovers(base: str) -> list[str]:
    return [
        os.path.join(m, base) for m in cgroup_mounts() if os.path.lexists(os.path.join(m, base))
    ]


def processes_in(base: str) -> list[int]:
    """PIDs anywhere under the base in any cgroup mount, read without the driver."""
    return sorted(
        {
            int(pid)
            for top in leftovers(base)
            for directory, _, _ in os.walk(top)
            for pid in Path(directory, "cgroup.procs").read_text().split()
        }
    )


def scrub(top: str) -> None:
    """Remove a leaked cgroup without the driver: thaw, SIGKILL what is inside, rmdir."""
    deadline = time.monotonic() + WAIT
    for directory, _, _ in os.walk(top, topdown=False):
        for name, value in (("freezer.state", "THAWED"), ("cgroup.freeze", "0")):
            if os.path.exists(f"{directory}/{name}"):
                Path(directory, name).write_text(value)
        while True:
            for pid in Path(directory, "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            try:
                os.rmdir(directory)
                break
            except OSError as exc:
                if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


class Host:
    def __init__(self, driver: cg.CgroupDriver) -> None:
        self.driver = driver
        self.processes: list[subprocess.Popen[str]] = []

    def spawn(self, *command: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.processes.append(process)
        return process

    def python(self, script: str) -> subprocess.Popen[str]:
        return self.spawn(sys.executable, "-c", script)

    def dirs(self, rel: str) -> list[Path]:
        """rel in each hierarchy the driver uses."""
        if isinstance(self.driver, cg.V1Driver):
            return [Path(top, rel) for top in dict.fromkeys(self.driver.hierarchies.values())]
        return [Path(ROOT, rel)]

    def file(self, rel: str, name: str) -> Path:
        """A kernel file of rel: `memory.limit_in_bytes` under the memory hierarchy on v1."""
        if isinstance(self.driver, cg.V1Driver):
            return Path(self.driver.hierarchies[name.split(".", maxsplit=1)[0]], rel, name)
        return Path(ROOT, rel, name)

    def read(self, rel: str, name: str) -> str:
        return self.file(rel, name).read_text().strip()


@pytest.fixture
def host() -> Iterator[Host]:
    base = f"sandman-test-{secrets.token_hex(4)}"
    driver = cg.driver_for(base, ROOT)
    assert driver.base == base
    state = Host(driver)
    yield state
    problems = []
    try:
        if not driver.kill(base, timeout=WAIT):
            problems.append(f"kill({base!r}) left processes: {driver.pids(base)}")
    except Exception as exc:
        problems.append(f"kill({base!r}) failed: {exc!r}")
    if processes_in(base):
        problems.append(f"processes left under {base}: {processes_in(base)}")
    for process in state.processes:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=WAIT)
    try:
        driver.remove(base, timeout=WAIT)
    except Exception as exc:
        problems.append(f"remove({base!r}) failed: {exc!r}")
    left = leftovers(base)
    for top in left:
        scrub(top)
    assert leftovers(base) == [], "scrubbing by hand failed too"
    if problems or left:
        pytest.fail("; ".join([*problems, *(f"left behind: {top}" for top in left)]))


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


@pytest.mark.root
def test_driver_for_this_host_matches_its_mounts() -> None:
    mode = cg.mode_from_mountinfo(Path("/proc/self/mountinfo").read_text(), ROOT)
    assert mode is not None
    assert cg.mode_from_files(ROOT) == mode
    assert cg.detect_mode(ROOT) == mode
    driver = cg.driver_for("sandman", ROOT)
    assert isinstance(driver, cg.V2Driver if mode == "v2" else cg.V1Driver)
    assert driver.base == "sandman"
    if isinstance(driver, cg.V1Driver):
        mounts = cgroup_mounts()
        assert driver.hierarchies
        assert all(
            os.path.realpath(top) in map(os.path.realpath, mounts)
            for top in driver.hierarchies.values()
        )


@pytest.mark.root
def test_create_makes_the_cgroup_in_every_hierarchy(host: Host) -> None:
    driver = host.driver
    rel = driver.path(("sandman", "services"), "web")
    assert rel == f"{driver.base}/services/web"
    assert driver.create(rel) == []
    assert all(path.is_dir() for path in host.dirs(rel))
    assert driver.exists(rel)
    assert driver.create(rel) == []  # idempotent
    assert host.file(rel, "memory.limit_in_bytes" if driver.version == 1 else "memory.max").exists()
    assert host.file(rel, "pids.max").exists()
    assert driver.pids(driver.base) == []


@pytest.mark.root
def test_set_limits_reach_the_kernel_files(host: Host) -> None:
    driver = host.driver
    rel = driver.path(("sandman",), "web")
    driver.create(rel)
    limits = make_limits(
        memory_max=64 * MiB,
        memory_high=48 * MiB,
        cpu_max="50%",
        cpu_weight=200,
        pids_max=64,
        io_weight=100,
    )
    warnings = driver.set_limits(rel, limits)
    assert [w for w in warnings if not w.startswith("io_weight")] == []
    if driver.version == 1:
        assert host.read(rel, "memory.limit_in_bytes") == str(64 * MiB)
        assert host.read(rel, "memory.soft_limit_in_bytes") == str(48 * MiB)
        assert host.read(rel, "cpu.cfs_quota_us") == "50000"
        assert host.read(rel, "cpu.cfs_period_us") == "100000"
        assert host.read(rel, "cpu.shares") == "2048"
    else:
        assert host.read(rel, "memory.max") == str(64 * MiB)
        assert host.read(rel, "memory.high") == str(48 * MiB)
        assert host.read(rel, "cpu.max") == "50000 100000"
        assert host.read(rel, "cpu.weight") == "200"
    assert host.read(rel, "pids.max") == "64"
    read = driver.read_limits(rel)
    assert read == driver.expected_limits(rel, limits)
    assert {k: read[k] for k in cg.LIMIT_KEYS if k != "io_weight"} == {
        "memory_max": 64 * MiB,
        "memory_high": 48 * MiB,
        "cpu_max": 50.0,
        "cpu_weight": 200,
        "pids_max": 64,
    }
    assert read.get("io_weight", 100) == 100
    # a hand-made change is drift: read_limits no longer matches
    weight_file = "cpu.shares" if driver.version == 1 else "cpu.weight"
    host.file(rel, weight_file).write_text("512" if driver.version == 1 else "50")
    assert driver.read_limits(rel)["cpu_weight"] == 50
    assert driver.read_limits(rel) != driver.expected_limits(rel, limits)


@pytest.mark.root
def test_no_limits_reset_the_kernel_files(host: Host) -> None:
    driver = host.driver
    rel = driver.path(("sandman",), "web")
    driver.create(rel)
    driver.set_limits(
        rel, make_limits(memory_max=64 * MiB, cpu_max="50%", cpu_weight=200, pids_max=8)
    )
    assert driver.set_limits(rel, make_limits()) == []
    assert host.read(rel, "pids.max") == "max"
    if driver.version == 1:
        assert host.read(rel, "cpu.cfs_quota_us") == "-1"
        assert host.read(rel, "cpu.shares") == "1024"
    read = driver.read_limits(rel)
    assert read == driver.expected_limits(rel, make_limits())
    assert read["memory_max"] is None
    assert read["memory_high"] is None
    assert read["cpu_max"] is None
    assert read["cpu_weight"] == 100
    assert read["pids_max"] is None


@pytest.mark.root
def test_expected_limits_round_memory_like_the_kernel(host: Host) -> None:
    driver = host.driver
    rel = driver.path(("sandman",), "web")
    driver.create(rel)
    limits = make_limits(memory_max=1_000_000, cpu_max="33.3333%")
    driver.set_limits(rel, limits)
    read = driver.read_limits(rel)
    assert read == driver.expected_limits(rel, limits)
    assert read["memory_max"] == 1_000_000 - 1_000_000 % os.sysconf("SC_PAGE_SIZE")


@pytest.mark.root
def test_join_puts_a_process_in_every_hierarchy(host: Host) -> None:
    driver = host.driver
    rel = driver.path(("sandman", "services"), "web")
    driver.create(rel)
    sleeper = host.spawn("sleep", "60")
    driver.join(rel, sleeper.pid)
    assert driver.pids(rel) == [sleeper.pid]
    assert driver.pids(driver.base) == [sleeper.pid]  # the subtree counts
    for path in host.dirs(rel):
        assert (path / "cgroup.procs").read_text().split() == [str(sleeper.pid)]


@pytest.mark.root
def test_join_of_a_gone_process_names_the_file(host: Host) -> None:
    driver = host.driver
    rel = driver.path(("sandman",), "web")
    driver.create(rel)
    gone = host.spawn("true")
    gone.wait()
    with pytest.raises(OSError) as caught:
        driver.join(rel, gone.pid)
    assert caught.value.errno == errno.ESRCH
    assert str(caught.value.filename).endswith(f"{rel}/cgroup.procs")


DOUBLE_FORK = """
import os, sys, time
sys.stdin.readline()
pid = os.fork()
if pid == 0:
    time.sleep(60)
    os._exit(0)
print(pid, flush=True)
"""


@pytest.mark.root
def test_kill_catches_a_double_forked_process(host: Host) -> None:
    driver = host.driver
    rel = driver.path(("sandman",), "web")
    driver.create(rel)
    child = host.python(DOUBLE_FORK)
    driver.join(rel, child.pid)
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write("go\n")
    child.stdin.flush()
    grandchild = int(child.stdout.readline())
    assert child.wait(timeout=WAIT) == 0  # the parent is gone: the grandchild is an orphan
    assert driver.pids(rel) == [grandchild]
    pidfd = os.pidfd_open(grandchild)
    try:
        assert driver.kill(rel) is True
        assert driver.pids(rel) == []
        readable, _, _ = select.select([pidfd], [], [], WAIT)
        assert readable, "the grandchild survived"
    finally:
        os.close(pidfd)
    if driver.version == 1:
        assert host.read(rel, "freezer.state") == "THAWED"
    driver.remove(rel)
    assert not driver.exists(rel)


@pytest.mark.root
def test_kill_takes_the_whole_subtree(host: Host) -> None:
    """Processes at two depths below the killed cgroup all die. They sit in leaves, as the
    product's do: cgroup v2 refuses a process in a cgroup that enables controllers for its
    children (the no-internal-process rule, EBUSY)."""
    driver = host.driver
    outer = driver.path(("sandman", "services"))
    shallow = driver.path(("sandman", "services"), "web")
    deep = driver.path(("sandman", "services", "batch"), "job")
    driver.create(shallow)
    driver.create(deep)
    first, second = host.spawn("sleep", "60"), host.spawn("sleep", "60")
    driver.join(shallow, first.pid)
    driver.join(deep, second.pid)
    assert driver.pids(outer) == sorted([first.pid, second.pid])
    assert driver.kill(outer) is True
    assert first.wait(timeout=WAIT) == -signal.SIGKILL
    assert second.wait(timeout=WAIT) == -signal.SIGKILL
    assert driver.pids(outer) == []


@pytest.mark.root
def test_remove_leaves_nothing(host: Host) -> None:
    driver = host.driver
    driver.create(driver.path(("sandman", "services"), "web"))
    driver.create(driver.path(("sandman",), "other"))
    assert leftovers(driver.base) != []
    driver.remove(driver.base)
    assert leftovers(driver.base) == []
    assert not driver.exists(driver.base)
    driver.remove(driver.base)  # already gone is fine


@pytest.mark.root
def test_remove_refuses_while_a_process_is_inside(host: Host) -> None:
    driver = host.driver
    rel = driver.path(("sandman",), "web")
    driver.create(rel)
    sleeper = host.spawn("sleep", "60")
    driver.join(rel, sleeper.pid)
    with pytest.raises(OSError) as caught:
        driver.remove(rel, timeout=0.1)
    assert caught.value.errno == errno.EBUSY
    assert str(caught.value.filename).endswith(rel)
    assert driver.exists(rel)
    assert driver.kill(rel) is True
    driver.remove(rel)
    assert not driver.exists(rel)


FORK_UNTIL_REFUSED = """
import os, sys, time
sys.stdin.readline()
children = 0
while children < 100:
    try:
        pid = os.fork()
    except OSError as exc:
        print(children, exc.errno, flush=True)
        break
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    children += 1
else:
    print(children, 0, flush=True)
sys.stdin.readline()
"""


DEVICE_PROBE = """
import errno, os, stat, sys
sys.stdin.readline()
def attempt(action):
    try:
        action()
        return "ok"
    except OSError as exc:
        return errno.errorcode[exc.errno]
def opens(path, flags):
    return lambda: os.close(os.open(path, flags))
node = sys.argv[1]
print(
    attempt(opens("/dev/null", os.O_RDWR)),
    attempt(opens("/dev/zero", os.O_RDONLY)),
    attempt(opens("/dev/zero", os.O_WRONLY)),
    attempt(opens("/dev/full", os.O_RDONLY)),
    attempt(lambda: os.mknod(node, stat.S_IFCHR | 0o600, os.makedev(1, 1))),
    attempt(lambda: os.mknod(node, stat.S_IFBLK | 0o600, os.makedev(7, 0))),
    flush=True,
)
"""


@pytest.mark.root
def test_restrict_devices_allows_only_the_rules(host: Host, tmp_path: Path) -> None:
    """As root (CAP_MKNOD, CAP_DAC_OVERRIDE), a process of the cgroup opens and makes only the
    devices of the rules: v1's devices controller, v2's eBPF device program."""
    driver = host.driver
    rel = driver.path(("sandman",), "web")
    driver.create(rel)
    assert driver.restrict_devices(rel, ["c 1:3 rwm", "c 1:5 r"]) == []
    probe = host.spawn(sys.executable, "-c", DEVICE_PROBE, str(tmp_path / "node"))
    driver.join(rel, probe.pid)
    assert probe.stdin is not None and probe.stdout is not None
    probe.stdin.write("go\n")
    probe.stdin.flush()
    results = probe.stdout.readline().split()
    assert results == ["ok", "ok", "EPERM", "EPERM", "EPERM", "EPERM"]
    assert probe.wait(timeout=WAIT) == 0
    assert not (tmp_path / "node").exists()


@pytest.mark.root
def test_v2_device_program_is_replaced_not_stacked(host: Host) -> None:
    """On a hybrid host the v2 driver is tried on the cgroup2 hierarchy mounted at `unified/`:
    a device program needs no controller, so the check is as real there as on pure v2."""
    driver = host.driver
    if isinstance(driver, cg.V2Driver):
        _replaced_not_stacked(driver)
        return
    unified = os.path.join(ROOT, "unified")
    assert os.path.isfile(os.path.join(unified, "cgroup.controllers")), "no cgroup2 on this host"
    v2 = cg.V2Driver(unified, driver.base)
    try:
        _replaced_not_stacked(v2)
    finally:
        for directory in sorted(
            (d for d, _, _ in os.walk(os.path.join(unified, driver.base))), reverse=True
        ):
            os.rmdir(directory)


def _replaced_not_stacked(driver: cg.V2Driver) -> None:
    rel = driver.path(("sandman",), "web")
    driver.create(rel)
    assert driver.device_programs(rel) == []
    driver.restrict_devices(rel, ["c 1:3 rwm"])
    (first,) = driver.device_programs(rel)
    driver.restrict_devices(rel, ["c 1:3 rwm", "c 1:5 rwm"])
    (second,) = driver.device_programs(rel)
    assert second != first
    driver.remove(rel)


@pytest.mark.root
def test_pids_max_stops_forks_with_eagain(host: Host) -> None:
    driver = host.driver
    rel = driver.path(("sandman",), "web")
    driver.create(rel)
    assert driver.set_limits(rel, make_limits(pids_max=4)) == []
    forker = host.python(FORK_UNTIL_REFUSED)
    driver.join(rel, forker.pid)
    assert forker.stdin is not None and forker.stdout is not None
    forker.stdin.write("go\n")
    forker.stdin.flush()
    children, error = map(int, forker.stdout.readline().split())
    assert (children, error) == (3, errno.EAGAIN)  # 3 children + the forker itself = 4
    assert len(driver.pids(rel)) == 4
    assert driver.usage(rel)["pids_current"] == 4
    assert driver.kill(rel) is True
    assert forker.wait(timeout=WAIT) == -signal.SIGKILL


@pytest.mark.root
def test_usage_reads_the_counters(host: Host) -> None:
    driver = host.driver
    rel = driver.path(("sandman",), "web")
    driver.create(rel)
    sleeper = host.spawn("sleep", "60")
    driver.join(rel, sleeper.pid)
    usage = driver.usage(rel)
    assert set(usage) == set(cg.USAGE_KEYS)
    assert usage["pids_current"] == 1
    assert usage["oom_kills"] == 0
    assert usage["nr_throttled"] == 0
    for key in ("memory_current", "memory_peak", "cpu_usec"):
        assert isinstance(usage[key], int), key
    assert alive(sleeper.pid)


def psi_enabled() -> bool:
    """The kernel keeps pressure stall figures: it makes /proc/pressure only when PSI is on
    (CONFIG_PSI, and not psi=0 on the command line)."""
    return os.path.exists("/proc/pressure/cpu")


@pytest.mark.root
def test_pressure_of_a_throttled_busy_loop(host: Host) -> None:
    """On pure v2 with PSI on, a busy loop held to 10% of a CPU waits for it most of the time:
    its cpu `some avg10` rises above 0 (the kernel refreshes it every 2 s), and every figure is a
    number. On v1 and hybrid hosts, and with PSI off, every figure is None."""
    driver = host.driver
    rel = driver.path(("sandman",), "web")
    driver.create(rel)
    assert driver.set_limits(rel, make_limits(cpu_max="10%")) == []
    busy = host.spawn("sh", "-c", "while :; do :; done")
    driver.join(rel, busy.pid)
    pressure = driver.pressure(rel)
    assert tuple(pressure._asdict()) == cg.PRESSURE_KEYS
    if driver.version == 1 or not psi_enabled():
        assert pressure == cg.Pressure(), pressure
        return
    deadline = time.monotonic() + WAIT
    while not (pressure.cpu_some_avg10 or 0) > 0 and time.monotonic() < deadline:
        time.sleep(0.5)
        pressure = driver.pressure(rel)
    for key, value in pressure._asdict().items():
        assert isinstance(value, float) and value >= 0, (key, pressure)
    assert pressure.cpu_some_avg10 is not None and pressure.cpu_some_avg10 > 0, pressure
    assert driver.kill(rel) is True
