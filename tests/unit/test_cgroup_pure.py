"""Tests of sandman.kernel.cgroup that need no privileges: the conversions as pure functions, mode
detection, and both drivers against fake cgroupfs trees in tmp_path.

A fake tree is plain files laid out like cgroupfs (cgroup.controllers, memory.max, ...). It does
not behave like the kernel (a write replaces the file, mkdir makes an empty directory), so these
tests check what the drivers write and how they parse; tests/root/test_cgroup.py checks what the
kernel makes of it.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandman.apply.limits import cgroup_limits
from sandman.kernel import cgroup as cg
from sandman.kernel import cgroup_common as cg_common
from sandman.kernel import cgroup_v1 as cg_v1
from sandman.kernel.cgroup_common import LimitError, quota_warning
from sandman.units import constants, model
from sandman.units.plain import Limits

PAGE = os.sysconf("SC_PAGE_SIZE")
MiB = 1 << 20


def make_limits(**values: object) -> cg.CgroupLimits:
    """Limits as a unit writes them (`cpu_max="50%"`), through the unit validators and the
    conversion apply makes."""
    return cgroup_limits(Limits.model_validate(values))


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def text(path: Path) -> str:
    return path.read_text()


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A real process whose PID a fake cgroup.procs can list."""
    process = subprocess.Popen(["sleep", "60"])
    yield process
    process.kill()
    process.wait()


# --- conversions -------------------------------------------------------------------------------


def test_the_kernels_limits_are_the_models() -> None:
    # apply converts by these names, and show and observe read a record's limits by them.
    assert tuple(model.Limits.model_fields) == cg.LIMIT_KEYS


def test_weight_to_shares_is_proportional_and_maps_default_to_default() -> None:
    assert cg.weight_to_shares(100) == 1024
    assert cg.weight_to_shares(200) == 2048
    assert cg.weight_to_shares(50) == 512
    assert cg.weight_to_shares(1) == 10
    assert cg.weight_to_shares(10000) == 102400


def test_shares_round_trip_for_every_weight() -> None:
    assert all(cg.shares_to_weight(cg.weight_to_shares(w)) == w for w in range(1, 10001))


def test_shares_written_by_hand_read_as_the_nearest_weight() -> None:
    assert cg.shares_to_weight(1024) == 100
    assert cg.shares_to_weight(512) == 50
    assert cg.shares_to_weight(2) == 1  # v1's minimum, below weight 1: clamped
    assert cg.shares_to_weight(262144) == 10000  # v1's maximum, above weight 10000: clamped


@pytest.mark.parametrize("scale", [cg.CFQ, cg.BFQ], ids=["cfq", "bfq"])
def test_io_weight_maps_ends_and_default(scale: cg.BlkioScale) -> None:
    assert cg.io_weight_to_blkio(1, scale) == scale.low
    assert cg.io_weight_to_blkio(100, scale) == scale.default
    assert cg.io_weight_to_blkio(10000, scale) == scale.high
    assert cg.blkio_to_io_weight(scale.low, scale) == 1
    assert cg.blkio_to_io_weight(scale.default, scale) == 100
    assert cg.blkio_to_io_weight(scale.high, scale) == 10000
    values = [cg.io_weight_to_blkio(w, scale) for w in range(1, 10001)]
    assert values == sorted(values)  # a heavier weight never gets a lighter blkio weight


def test_io_weight_known_values() -> None:
    assert [cg.io_weight_to_blkio(w, cg.CFQ) for w in (2, 50, 200, 5050)] == [15, 253, 505, 750]
    assert [cg.io_weight_to_blkio(w, cg.BFQ) for w in (2, 50, 200, 5050)] == [2, 50, 109, 550]


@pytest.mark.parametrize("scale", [cg.CFQ, cg.BFQ], ids=["cfq", "bfq"])
def test_io_weight_read_back_is_stable(scale: cg.BlkioScale) -> None:
    """What read_limits reports, written again, lands on the same kernel value (no drift loop);
    up to the default, where the blkio range is wider, the weight itself comes back."""
    for weight in range(1, 10001):
        value = cg.io_weight_to_blkio(weight, scale)
        back = cg.blkio_to_io_weight(value, scale)
        assert cg.io_weight_to_blkio(back, scale) == value
        if weight <= 100:
            assert back == weight
    for value in range(scale.default, scale.high + 1):
        assert cg.io_weight_to_blkio(cg.blkio_to_io_weight(value, scale), scale) == value


def test_cpu_quota_conversions() -> None:
    assert cg.percent_to_quota(50.0) == 50000
    assert cg.percent_to_quota(200.0) == 200000
    assert cg.percent_to_quota(0.5) == cg.CPU_QUOTA_MIN_US  # the kernel refuses less than 1 ms
    assert cg.quota_to_percent(50000, 100000) == 50.0
    assert cg.quota_to_percent(25000, 50000) == 50.0  # a period set by hand
    assert cg.quota_to_percent(-1, 100000) is None
    assert cg.format_cpu_max(None) == "max 100000"
    assert cg.format_cpu_max(150.0) == "150000 100000"
    assert cg.format_cpu_max(33.3333) == "33333 100000"
    assert cg.parse_cpu_max("max 100000\n") is None
    assert cg.parse_cpu_max("150000 100000\n") == 150.0
    assert cg.parse_cpu_max("50000 200000\n") == 25.0


def test_stored_bytes_rounds_down_to_pages() -> None:
    assert cg.stored_bytes(None, 4096) is None
    assert cg.stored_bytes(1_000_000, 4096) == 999_424
    assert cg.stored_bytes(64 * MiB, 4096) == 64 * MiB


def test_the_byte_limits_are_read_off_their_type() -> None:
    from sandman.kernel.cgroup_common import BYTE_LIMITS, stored_byte_limits

    assert BYTE_LIMITS == ("memory_max", "memory_high")
    limits = cg.CgroupLimits(memory_max=1_000_000, memory_high=None, pids_max=1_000_001)
    stored = stored_byte_limits(dict(limits._asdict()), 4096)
    assert stored == dict(limits._asdict()) | {"memory_max": 999_424}
    assert list(stored) == list(cg.LIMIT_KEYS)


# --- detection ---------------------------------------------------------------------------------

HYBRID = """\
23 1 0:21 / /sys rw,nosuid - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
PURE_V2 = "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
PURE_V1 = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
"""


def test_mode_from_mountinfo() -> None:
    assert cg.mode_from_mountinfo(HYBRID) == "hybrid"
    assert cg.mode_from_mountinfo(PURE_V2) == "v2"
    assert cg.mode_from_mountinfo(PURE_V1) == "v1"
    assert cg.mode_from_mountinfo(HYBRID, "/sys/fs/cgroup/") == "hybrid"
    assert cg.mode_from_mountinfo(HYBRID, "/elsewhere") is None  # not a mount point
    overmounted = HYBRID + "50 31 0:40 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
    assert cg.mode_from_mountinfo(overmounted) == "v2"  # the later mount is the visible one
    spaced = "60 1 0:41 / /mnt/my\\040cgroup rw - cgroup2 cgroup2 rw\n"
    assert cg.mode_from_mountinfo(spaced, "/mnt/my cgroup") == "v2"


def test_detect_mode_on_fake_trees(tmp_path: Path) -> None:
    v2 = tree(tmp_path / "v2", {"cgroup.controllers": "cpu io memory pids\n"})
    hybrid = tree(tmp_path / "hybrid", {"unified/cgroup.controllers": "", "memory/tasks": ""})
    v1 = tree(tmp_path / "v1", {"memory/tasks": "", "cpu/tasks": ""})
    assert cg.detect_mode(str(v2)) == "v2"
    assert cg.detect_mode(str(hybrid)) == "hybrid"
    assert cg.detect_mode(str(v1)) == "v1"


def test_detect_mode_is_cached_per_root(tmp_path: Path) -> None:
    root = tree(tmp_path, {"memory/tasks": ""})
    assert cg.detect_mode(str(root)) == "v1"
    (root / "cgroup.controllers").write_text("memory\n")
    assert cg.detect_mode(str(root) + "/") == "v1"  # same root, cached
    cg.clear_mode_cache()
    assert cg.detect_mode(str(root)) == "v2"


def test_driver_for_picks_the_driver_and_base(tmp_path: Path) -> None:
    v2 = tree(tmp_path / "v2", {"cgroup.controllers": "memory\n"})
    hybrid = tree(tmp_path / "hybrid", {"unified/cgroup.controllers": "", "memory/tasks": ""})
    driver = cg.driver_for("sandman", str(v2))
    assert isinstance(driver, cg.V2Driver)
    assert (driver.base, driver.version) == ("sandman", 2)
    driver = cg.driver_for("sandman-s1a2", str(hybrid))
    assert isinstance(driver, cg.V1Driver)
    assert (driver.base, driver.version) == ("sandman-s1a2", 1)
    assert list(driver.hierarchies) == ["memory"]  # the controllers mounted in the fake tree
    delegated = cg.driver_for("system.slice/sandman.service", str(v2))
    assert delegated.base == "system.slice/sandman.service"


# --- paths -------------------------------------------------------------------------------------


def test_path_replaces_the_root_slice_with_the_base(tmp_path: Path) -> None:
    driver = cg.V2Driver(str(tmp_path), "sandman-s1a2")
    assert driver.path(("sandman", "services"), "web") == "sandman-s1a2/services/web"
    assert driver.path(("sandman",), "web") == "sandman-s1a2/web"
    assert driver.path(("sandman", "services")) == "sandman-s1a2/services"
    assert driver.path() == "sandman-s1a2"


@pytest.mark.parametrize("bad", ["..", ".", "", "a/b"])
def test_path_refuses_names_that_leave_the_tree(tmp_path: Path, bad: str) -> None:
    driver = cg.V2Driver(str(tmp_path), "sandman")
    with pytest.raises(ValueError, match="is not a cgroup directory name"):
        driver.path(("sandman",), bad)


@pytest.mark.parametrize("rel", ["other", "sandmanx/web", "sandman/../other", "/", "sandman//x"])
def test_driver_refuses_cgroups_outside_its_base(tmp_path: Path, rel: str) -> None:
    (tmp_path / "other").mkdir()
    for driver in (cg.V2Driver(str(tmp_path)), cg.V1Driver(str(tmp_path))):
        with pytest.raises(ValueError):
            driver.remove(rel)
        with pytest.raises(ValueError):
            driver.kill(rel)
    assert (tmp_path / "other").is_dir()


# --- file I/O ----------------------------------------------------------------------------------


def test_write_errors_name_the_cgroup_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "memory.max")
    with pytest.raises(OSError) as caught:
        cg.write(missing, "max")
    assert (caught.value.errno, caught.value.filename) == (errno.ENOENT, missing)
    with pytest.raises(OSError) as caught:
        cg.write(str(tmp_path), "1")
    assert (caught.value.errno, caught.value.filename) == (errno.EISDIR, str(tmp_path))
    assert "writing '1'" in str(caught.value)


def test_read_errors_name_the_cgroup_file(tmp_path: Path) -> None:
    with pytest.raises(OSError) as caught:
        cg.read(str(tmp_path / "cpu.max"))
    assert caught.value.filename == str(tmp_path / "cpu.max")


# --- V2Driver on a fake tree -------------------------------------------------------------------

V2_LEAF = {
    "cgroup.procs": "",
    "memory.max": "max\n",
    "memory.high": "max\n",
    "cpu.max": "max 100000\n",
    "cpu.weight": "100\n",
    "pids.max": "max\n",
    "io.weight": "default 100\n",
}
ALL = "cpuset cpu io memory hugetlb pids rdma misc\n"
LIMITS = make_limits(
    memory_max=256 * MiB,
    memory_high=200 * MiB,
    cpu_max="50%",
    cpu_weight=200,
    pids_max=64,
    io_weight=300,
)


def v2_tree(root: Path, rel: str = "sandman/web", leaf: dict[str, str] | None = None) -> Path:
    files = {"cgroup.controllers": ALL, "cgroup.subtree_control": ""}
    files.update({f"{rel}/{name}": value for name, value in (leaf or V2_LEAF).items()})
    return tree(root, files)


def test_v2_create_enables_controllers_down_to_the_parent(tmp_path: Path) -> None:
    tree(
        tmp_path,
        {
            "cgroup.controllers": ALL,
            "cgroup.subtree_control": "",
            "sandman/cgroup.controllers": "cpu io memory pids\n",
            "sandman/cgroup.subtree_control": "",
            "sandman/services/cgroup.controllers": "cpu memory pids\n",  # io not given here
            "sandman/services/cgroup.subtree_control": "",
        },
    )
    driver = cg.V2Driver(str(tmp_path))
    assert driver.create("sandman/services/web") == []
    assert (tmp_path / "sandman/services/web").is_dir()
    assert text(tmp_path / "cgroup.subtree_control") == "+cpu +io +memory +pids"
    assert text(tmp_path / "sandman/cgroup.subtree_control") == "+cpu +io +memory +pids"
    assert text(tmp_path / "sandman/services/cgroup.subtree_control") == "+cpu +memory +pids"
    assert not (tmp_path / "sandman/services/web/cgroup.subtree_control").exists()
    assert driver.exists("sandman/services/web")


def test_v2_create_writes_nothing_when_already_enabled(tmp_path: Path) -> None:
    tree(
        tmp_path,
        {
            "cgroup.controllers": ALL,
            "cgroup.subtree_control": "cpu io memory pids\n",
            "sandman/cgroup.controllers": "cpu io memory pids\n",
        },
    )
    driver = cg.V2Driver(str(tmp_path))
    assert driver.create("sandman") == []
    assert driver.create("sandman") == []
    assert text(tmp_path / "cgroup.subtree_control") == "cpu io memory pids\n"
    assert not (tmp_path / "sandman/cgroup.subtree_control").exists()


def test_v2_create_under_a_delegated_base_leaves_systemds_cgroups_alone(tmp_path: Path) -> None:
    tree(
        tmp_path,
        {
            "cgroup.controllers": ALL,
            "cgroup.subtree_control": "",
            "system.slice/cgroup.controllers": "cpu io memory pids\n",
            "system.slice/cgroup.subtree_control": "",
            "system.slice/sm.service/cgroup.controllers": "cpu memory pids\n",
            "system.slice/sm.service/cgroup.subtree_control": "",
        },
    )
    driver = cg.V2Driver(str(tmp_path), "system.slice/sm.service")
    assert driver.path(("sandman",), "web") == "system.slice/sm.service/web"
    driver.create("system.slice/sm.service/web")
    assert text(tmp_path / "cgroup.subtree_control") == ""
    assert text(tmp_path / "system.slice/cgroup.subtree_control") == ""
    assert text(tmp_path / "system.slice/sm.service/cgroup.subtree_control") == "+cpu +memory +pids"


def test_v2_set_limits_writes_the_kernel_strings(tmp_path: Path) -> None:
    v2_tree(tmp_path)
    leaf = tmp_path / "sandman/web"
    driver = cg.V2Driver(str(tmp_path))
    assert driver.set_limits("sandman/web", LIMITS) == []
    assert text(leaf / "memory.max") == str(256 * MiB)
    assert text(leaf / "memory.high") == str(200 * MiB)
    assert text(leaf / "cpu.max") == "50000 100000"
    assert text(leaf / "cpu.weight") == "200"
    assert text(leaf / "pids.max") == "64"
    assert text(leaf / "io.weight") == "default 300"
    assert driver.read_limits("sandman/web") == {
        "memory_max": 256 * MiB,
        "memory_high": 200 * MiB,
        "cpu_max": 50.0,
        "cpu_weight": 200,
        "pids_max": 64,
        "io_weight": 300,
    }
    assert driver.read_limits("sandman/web") == driver.expected_limits("sandman/web", LIMITS)


def test_v2_no_limits_reset_every_file(tmp_path: Path) -> None:
    v2_tree(tmp_path)
    leaf = tmp_path / "sandman/web"
    driver = cg.V2Driver(str(tmp_path))
    driver.set_limits("sandman/web", LIMITS)
    assert driver.set_limits("sandman/web", make_limits()) == []
    assert [text(leaf / name) for name in list(V2_LEAF)[1:]] == [
        "max",
        "max",
        "max 100000",
        "100",
        "max",
        "default 100",
    ]
    expected = {
        "memory_max": None,
        "memory_high": None,
        "cpu_max": None,
        "cpu_weight": 100,
        "pids_max": None,
        "io_weight": 100,
    }
    assert driver.read_limits("sandman/web") == expected
    assert driver.expected_limits("sandman/web", make_limits()) == expected


def test_v2_read_limits_parses_what_the_kernel_shows(tmp_path: Path) -> None:
    leaf = dict(V2_LEAF, **{"cpu.max": "50000 200000\n", "io.weight": "default 80\n8:0 300\n"})
    v2_tree(tmp_path, leaf=leaf)
    limits = cg.V2Driver(str(tmp_path)).read_limits("sandman/web")
    assert (limits["cpu_max"], limits["io_weight"]) == (25.0, 80)


def test_v2_expected_limits_round_like_the_kernel(tmp_path: Path) -> None:
    v2_tree(tmp_path)
    driver = cg.V2Driver(str(tmp_path))
    expected = driver.expected_limits(
        "sandman/web", make_limits(memory_max=1_000_000, cpu_max="33.3333%")
    )
    assert expected["memory_max"] == 1_000_000 - 1_000_000 % PAGE
    assert expected["cpu_max"] == 33.333


def test_v2_set_limits_warns_for_missing_controllers(tmp_path: Path) -> None:
    leaf = {k: v for k, v in V2_LEAF.items() if k != "io.weight"}
    v2_tree(tmp_path, leaf=leaf)
    driver = cg.V2Driver(str(tmp_path))
    warnings = driver.set_limits("sandman/web", LIMITS)
    path = tmp_path / "sandman/web/io.weight"
    assert warnings == [
        f"io_weight = 300 not applied: {path} is missing (the io controller is not available "
        "to this cgroup)"
    ]
    assert not path.exists()
    assert driver.set_limits("sandman/web", make_limits()) == []  # nothing asked, nothing to warn
    assert "io_weight" not in driver.read_limits("sandman/web")
    assert "io_weight" not in driver.expected_limits("sandman/web", LIMITS)


def test_v2_cpu_max_below_the_kernel_minimum_warns(tmp_path: Path) -> None:
    v2_tree(tmp_path)
    driver = cg.V2Driver(str(tmp_path))
    warnings = driver.set_limits("sandman/web", make_limits(cpu_max="0.5%"))
    assert warnings == [
        "cpu_max = 0.5% is below the kernel's smallest CFS quota (1000 us per 100000 us); "
        "applied 1%"
    ]
    assert text(tmp_path / "sandman/web/cpu.max") == "1000 100000"


def test_the_units_cpu_floor_is_the_kernels_smallest_quota() -> None:
    """validate refuses less than constants.CPU_MAX_MIN (it cannot import the kernel side): that
    floor is the smallest quota, which set_limits writes as given, without a warning. Below
    it, only a record of an older sandman reaches the warning above."""
    assert cg.percent_to_quota(constants.CPU_MAX_MIN) == cg.CPU_QUOTA_MIN_US
    assert quota_warning(constants.CPU_MAX_MIN) == []
    assert quota_warning(constants.CPU_MAX_MIN * 0.99) != []


def test_v2_usage_parses_sample_files(tmp_path: Path) -> None:
    sample = {
        "memory.current": "1048576\n",
        "memory.peak": "2097152\n",
        "cpu.stat": "usage_usec 1234\nuser_usec 1000\nsystem_usec 234\nnr_periods 10\n"
        "nr_throttled 3\nthrottled_usec 500\n",
        "pids.current": "2\n",
        "memory.events": "low 0\nhigh 4\nmax 2\noom 1\noom_kill 1\noom_group_kill 0\n",
    }
    v2_tree(tmp_path, leaf=sample)
    assert cg.V2Driver(str(tmp_path)).usage("sandman/web") == {
        "memory_current": 1048576,
        "memory_peak": 2097152,
        "cpu_usec": 1234,
        "pids_current": 2,
        "oom_kills": 1,
        "nr_throttled": 3,
    }


def test_v2_usage_is_none_for_missing_counters(tmp_path: Path) -> None:
    v2_tree(tmp_path, leaf={"cpu.stat": "usage_usec 5\n"})  # no controllers enabled, old kernel
    usage = cg.V2Driver(str(tmp_path)).usage("sandman/web")
    assert usage == dict.fromkeys(cg.USAGE_KEYS) | {"cpu_usec": 5}


# Two PSI files as Linux 6.1 writes them: cpu.pressure with its `full` line (5.13+), and
# io.pressure of a cgroup that waited on a disk.
CPU_PRESSURE = (
    "some avg10=12.50 avg60=3.21 avg300=0.80 total=4567890\n"
    "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
)
IO_PRESSURE = (
    "some avg10=1.20 avg60=0.40 avg300=0.10 total=1200\n"
    "full avg10=0.80 avg60=0.30 avg300=0.05 total=900\n"
)


def test_parse_pressure_reads_some_and_full() -> None:
    assert cg.parse_pressure(CPU_PRESSURE) == {
        "some": cg.Stall(12.5, 3.21, 0.8, 4567890),
        "full": cg.Stall(0.0, 0.0, 0.0, 0),
    }


def test_parse_pressure_skips_what_it_cannot_read() -> None:
    """A kernel before 5.13 writes no `full` line for cpu; a line of another shape (a field
    missing or not a number, an empty line) is left out rather than failing status."""
    text = "some avg10=0.50 avg60=0.10 avg300=0.00 total=7\n\nfull avg10=x avg60=0 total=1\n"
    assert cg.parse_pressure(text) == {"some": cg.Stall(0.5, 0.1, 0.0, 7)}
    assert cg.parse_pressure("") == {}
    # A field the kernel may add one day does not hide the ones we read.
    assert cg.parse_pressure("some avg10=1.00 avg60=2.00 avg300=3.00 total=4 avg1=9\n") == {
        "some": cg.Stall(1.0, 2.0, 3.0, 4)
    }


def test_v2_pressure_reads_the_three_files(tmp_path: Path) -> None:
    memory = (
        "some avg10=4.00 avg60=1.00 avg300=0.20 total=50\n"
        "full avg10=2.50 avg60=0.00 avg300=0.00 total=9\n"
    )
    v2_tree(
        tmp_path,
        leaf={"cpu.pressure": CPU_PRESSURE, "memory.pressure": memory, "io.pressure": IO_PRESSURE},
    )
    assert cg.V2Driver(str(tmp_path)).pressure("sandman/web") == cg.Pressure(
        cpu_some_avg10=12.5,
        memory_some_avg10=4.0,
        memory_full_avg10=2.5,
        io_some_avg10=1.2,
        io_full_avg10=0.8,
    )
    assert cg.Pressure._fields == cg.PRESSURE_KEYS


def test_v2_pressure_is_none_where_the_kernel_offers_none(tmp_path: Path) -> None:
    """psi=0 (or `cgroup.pressure` 0) on Linux 6.1 hides the files; a cpu.pressure of a kernel
    before 5.13 has no `full` line, which status never shows for cpu anyway."""
    v2_tree(tmp_path, leaf={"cpu.pressure": CPU_PRESSURE.splitlines()[0] + "\n"})
    assert cg.V2Driver(str(tmp_path)).pressure("sandman/web") == cg.Pressure(cpu_some_avg10=12.5)
    v2_tree(tmp_path, rel="sandman/bare", leaf={"cgroup.procs": ""})
    assert cg.V2Driver(str(tmp_path)).pressure("sandman/bare") == cg.Pressure()


def test_v2_pressure_refused_by_the_kernel_is_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kernels before 6.1 made the files even with psi=0, and refused to read them."""
    from sandman.kernel import cgroup_common

    v2_tree(tmp_path, leaf={"cpu.pressure": CPU_PRESSURE})

    def refuse(path: str) -> str:
        raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP), path)

    monkeypatch.setattr(cgroup_common, "read", refuse)
    assert cg.V2Driver(str(tmp_path)).pressure("sandman/web") == cg.Pressure()


def test_v2_pressure_read_errors_other_than_absent_name_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sandman.kernel import cgroup_common

    v2_tree(tmp_path, leaf={"cpu.pressure": CPU_PRESSURE})

    def broken(path: str) -> str:
        raise OSError(errno.EIO, os.strerror(errno.EIO), path)

    monkeypatch.setattr(cgroup_common, "read", broken)
    with pytest.raises(OSError) as caught:
        cg.V2Driver(str(tmp_path)).pressure("sandman/web")
    assert caught.value.filename == str(tmp_path / "sandman/web/cpu.pressure")


def test_v2_pressure_of_a_missing_cgroup_is_an_error(tmp_path: Path) -> None:
    v2_tree(tmp_path)
    with pytest.raises(FileNotFoundError) as caught:
        cg.V2Driver(str(tmp_path)).pressure("sandman/gone")
    assert caught.value.filename == str(tmp_path / "sandman/gone")


def test_v1_keeps_no_pressure(tmp_path: Path) -> None:
    """Mainline Linux has no per-cgroup PSI in v1: every figure is None, read from nothing."""
    assert cg.V1Driver(str(v1_tree(tmp_path))).pressure("sandman/web") == cg.Pressure()


def test_v2_kill_uses_cgroup_kill(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    v2_tree(tmp_path, leaf={"cgroup.procs": f"{sleeper.pid}\n", "cgroup.kill": ""})
    # a fake cgroup.kill kills nothing, so the fake never empties and kill() reports it
    assert cg.V2Driver(str(tmp_path)).kill("sandman/web", timeout=0.1) is False
    assert text(tmp_path / "sandman/web/cgroup.kill") == "1"
    assert sleeper.poll() is None


def test_v2_kill_without_cgroup_kill_freezes_kills_the_subtree_and_thaws(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    v2_tree(
        tmp_path, leaf={"cgroup.procs": "", "cgroup.freeze": "0\n", "cgroup.events": "frozen 1"}
    )
    tree(tmp_path, {"sandman/web/child/cgroup.procs": f"{sleeper.pid}\n"})
    driver = cg.V2Driver(str(tmp_path))
    assert driver.pids("sandman/web") == [sleeper.pid]
    assert driver.kill("sandman/web", timeout=0.1) is False  # the fake still lists the pid
    assert sleeper.wait() == -signal.SIGKILL
    assert text(tmp_path / "sandman/web/cgroup.freeze") == "0"


def test_v2_kill_of_a_missing_or_empty_cgroup_is_done(tmp_path: Path) -> None:
    v2_tree(tmp_path)
    driver = cg.V2Driver(str(tmp_path))
    assert driver.kill("sandman/web") is True
    assert driver.kill("sandman/gone") is True


def test_remove_takes_the_subtree_and_tolerates_gone(tmp_path: Path) -> None:
    tree(tmp_path, {"cgroup.controllers": ""})
    driver = cg.V2Driver(str(tmp_path))
    driver.create("sandman/services/web")
    driver.create("sandman/other")
    driver.remove("sandman")
    assert not (tmp_path / "sandman").exists()
    driver.remove("sandman")


# --- V1Driver on a fake tree -------------------------------------------------------------------

UNLIMITED = str((2**63 - 1) // PAGE * PAGE)


def v1_tree(root: Path, rel: str = "sandman/web", blkio: str = "blkio.weight") -> Path:
    files = {
        "memory/memory.limit_in_bytes": f"{UNLIMITED}\n",
        "memory/memory.soft_limit_in_bytes": f"{UNLIMITED}\n",
        "cpu/cpu.cfs_quota_us": "-1\n",
        "cpu/cpu.cfs_period_us": "100000\n",
        "cpu/cpu.shares": "1024\n",
        "cpu/cpu.stat": "nr_periods 7\nnr_throttled 2\nthrottled_time 99\n",
        "cpuacct/cpuacct.usage": "123456789\n",
        "pids/pids.max": "max\n",
        "pids/pids.current": "3\n",
        "blkio/" + blkio: "500\n" if blkio == "blkio.weight" else "100\n",
        "freezer/freezer.state": "THAWED\n",
        "devices/devices.list": "a *:* rwm\n",
        "memory/memory.usage_in_bytes": "4096\n",
        "memory/memory.max_usage_in_bytes": "8192\n",
        "memory/memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 4\n",
    }
    return tree(root, {f"{p.split('/')[0]}/{rel}/{p.split('/')[1]}": v for p, v in files.items()})


def test_v1_set_limits_writes_the_kernel_strings(tmp_path: Path) -> None:
    v1_tree(tmp_path)
    driver = cg.V1Driver(str(tmp_path))
    assert driver.set_limits("sandman/web", LIMITS) == []
    web = "sandman/web"
    assert text(tmp_path / "memory" / web / "memory.limit_in_bytes") == str(256 * MiB)
    assert text(tmp_path / "memory" / web / "memory.soft_limit_in_bytes") == str(200 * MiB)
    assert text(tmp_path / "cpu" / web / "cpu.cfs_quota_us") == "50000"
    assert text(tmp_path / "cpu" / web / "cpu.shares") == "2048"
    assert text(tmp_path / "pids" / web / "pids.max") == "64"
    assert text(tmp_path / "blkio" / web / "blkio.weight") == "510"  # CFQ scale
    read = driver.read_limits(web)
    assert read == {
        "memory_max": 256 * MiB,
        "memory_high": 200 * MiB,
        "cpu_max": 50.0,
        "cpu_weight": 200,
        "pids_max": 64,
        "io_weight": 298,  # 289..307 all land on CFQ's 510; their middle reads back
    }
    assert read == driver.expected_limits(web, LIMITS)


def test_v1_no_limits_reset_every_file(tmp_path: Path) -> None:
    v1_tree(tmp_path)
    driver = cg.V1Driver(str(tmp_path))
    driver.set_limits("sandman/web", LIMITS)
    assert driver.set_limits("sandman/web", make_limits()) == []
    web = "sandman/web"
    assert text(tmp_path / "memory" / web / "memory.limit_in_bytes") == "-1"
    assert text(tmp_path / "cpu" / web / "cpu.cfs_quota_us") == "-1"
    assert text(tmp_path / "cpu" / web / "cpu.shares") == "1024"
    assert text(tmp_path / "pids" / web / "pids.max") == "max"
    assert text(tmp_path / "blkio" / web / "blkio.weight") == "500"
    # the fake keeps "-1"; the kernel shows LONG_MAX in pages, read as none too (root test)
    assert driver.read_limits(web) == driver.expected_limits(web, make_limits())


def test_v1_reads_the_kernels_unlimited_as_none(tmp_path: Path) -> None:
    v1_tree(tmp_path)
    assert cg.V1Driver(str(tmp_path)).read_limits("sandman/web") == {
        "memory_max": None,
        "memory_high": None,
        "cpu_max": None,
        "cpu_weight": 100,
        "pids_max": None,
        "io_weight": 100,
    }


def test_v1_uses_bfq_weight_when_cfq_is_gone(tmp_path: Path) -> None:
    v1_tree(tmp_path, blkio="blkio.bfq.weight")
    driver = cg.V1Driver(str(tmp_path))
    assert driver.set_limits("sandman/web", LIMITS) == []
    assert text(tmp_path / "blkio/sandman/web/blkio.bfq.weight") == "118"
    assert driver.read_limits("sandman/web")["io_weight"] == 298
    assert driver.read_limits("sandman/web") == driver.expected_limits("sandman/web", LIMITS)


def test_v1_warns_without_a_blkio_weight(tmp_path: Path) -> None:
    v1_tree(tmp_path)
    os.remove(tmp_path / "blkio/sandman/web/blkio.weight")
    driver = cg.V1Driver(str(tmp_path))
    assert driver.set_limits("sandman/web", LIMITS) == [
        f"io_weight = 300 not applied: {tmp_path}/blkio/sandman/web has neither blkio.weight "
        "(CFQ) nor blkio.bfq.weight (BFQ): this kernel has no proportional I/O weight"
    ]
    assert "io_weight" not in driver.read_limits("sandman/web")
    assert "io_weight" not in driver.expected_limits("sandman/web", LIMITS)


def test_v1_warns_for_controllers_not_mounted(tmp_path: Path) -> None:
    v1_tree(tmp_path)
    (tmp_path / "pids").rename(tmp_path / "not-pids")
    driver = cg.V1Driver(str(tmp_path))
    assert driver.create("sandman/web") == [
        f"the pids controller is not mounted at {tmp_path}/pids"
    ]
    assert driver.set_limits("sandman/web", LIMITS) == [
        f"pids_max = 64 not applied: the pids controller is not mounted at {tmp_path}/pids"
    ]


def test_v1_sets_the_period_before_the_quota(tmp_path: Path) -> None:
    v1_tree(tmp_path)
    (tmp_path / "cpu/sandman/web/cpu.cfs_period_us").write_text("50000\n")
    (tmp_path / "cpu/sandman/web/cpu.cfs_quota_us").write_text("25000\n")
    driver = cg.V1Driver(str(tmp_path))
    assert driver.read_limits("sandman/web")["cpu_max"] == 50.0
    driver.set_limits("sandman/web", make_limits(cpu_max="150%"))
    assert text(tmp_path / "cpu/sandman/web/cpu.cfs_period_us") == "100000"
    assert text(tmp_path / "cpu/sandman/web/cpu.cfs_quota_us") == "150000"


def test_v1_usage_parses_sample_files(tmp_path: Path) -> None:
    v1_tree(tmp_path)
    assert cg.V1Driver(str(tmp_path)).usage("sandman/web") == {
        "memory_current": 4096,
        "memory_peak": 8192,
        "cpu_usec": 123456,  # cpuacct.usage is in nanoseconds
        "pids_current": 3,
        "oom_kills": 4,
        "nr_throttled": 2,
    }


def test_v1_counts_comounted_controllers_once(tmp_path: Path) -> None:
    (tmp_path / "cpu,cpuacct").mkdir()
    (tmp_path / "cpu").symlink_to("cpu,cpuacct")
    (tmp_path / "cpuacct").symlink_to("cpu,cpuacct")
    (tmp_path / "memory").mkdir()
    driver = cg.V1Driver(str(tmp_path))
    assert sorted(driver.hierarchies) == ["cpu", "cpuacct", "memory"]
    driver.create("sandman/web")
    assert driver.exists("sandman/web")
    assert sorted(os.listdir(tmp_path / "cpu,cpuacct/sandman")) == ["web"]
    driver.remove("sandman")
    assert not driver.exists("sandman/web")
    assert os.listdir(tmp_path / "cpu,cpuacct") == []


def test_v1_cpuset_copies_cpus_and_mems_from_the_parent(tmp_path: Path) -> None:
    empty = {"cpuset.cpus": "\n", "cpuset.mems": "\n"}
    files = {"cpuset/cpuset.cpus": "0-3\n", "cpuset/cpuset.mems": "0\n"}
    for rel in ("sandman", "sandman/web"):
        files.update({f"cpuset/{rel}/{name}": value for name, value in empty.items()})
    files["cpuset/sandman/cpuset.cpus"] = "1\n"  # set by hand: kept
    tree(tmp_path, files)
    cg.V1Driver(str(tmp_path), controllers=("cpuset",)).create("sandman/web")
    assert text(tmp_path / "cpuset/sandman/cpuset.cpus") == "1\n"
    assert text(tmp_path / "cpuset/sandman/cpuset.mems") == "0"
    assert text(tmp_path / "cpuset/sandman/web/cpuset.cpus") == "1"
    assert text(tmp_path / "cpuset/sandman/web/cpuset.mems") == "0"


def test_v1_kill_freezes_kills_and_thaws(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    v1_tree(tmp_path)
    files = {
        "freezer/sandman/freezer.state": "FROZEN\n",  # the fake is frozen at once
        "pids/sandman/web/cgroup.procs": f"{sleeper.pid}\n",  # in a child: the subtree counts
    }
    tree(tmp_path, files)
    driver = cg.V1Driver(str(tmp_path))
    assert driver.pids("sandman") == [sleeper.pid]
    assert driver.kill("sandman", timeout=0.1) is False  # the fake still lists the pid
    assert sleeper.wait() == -signal.SIGKILL
    assert text(tmp_path / "freezer/sandman/freezer.state") == "THAWED"


@pytest.mark.parametrize("method", ["read_limits", "expected_limits", "set_limits", "usage"])
@pytest.mark.parametrize("version", [1, 2])
def test_limits_and_usage_of_a_missing_cgroup_are_an_error(
    tmp_path: Path, method: str, version: int
) -> None:
    """An empty answer would read as "no drift" for a cgroup someone deleted."""
    driver: cg.CgroupDriver
    if version == 2:
        driver, missing = cg.V2Driver(str(v2_tree(tmp_path))), tmp_path / "sandman/gone"
    else:
        driver, missing = cg.V1Driver(str(v1_tree(tmp_path))), tmp_path / "memory/sandman/gone"
    takes_limits = method in ("expected_limits", "set_limits")
    args: tuple[object, ...] = ("sandman/gone", LIMITS) if takes_limits else ("sandman/gone",)
    with pytest.raises(FileNotFoundError) as caught:
        getattr(driver, method)(*args)
    assert caught.value.filename == str(missing)


def test_v1_restricts_devices_to_the_allowed_ones(tmp_path: Path) -> None:
    v1_tree(tmp_path)
    driver = cg.V1Driver(str(tmp_path))
    directory = tmp_path / "devices/sandman/web"
    (directory / "devices.deny").write_text("")
    (directory / "devices.allow").write_text("")
    assert driver.restrict_devices("sandman/web", ["c 1:3 rwm", "c 136:* rwm"]) == []
    assert (directory / "devices.deny").read_text() == "a"
    assert (
        directory / "devices.allow"
    ).read_text() == "c 136:* rwm"  # the file keeps the last write


def test_v2_refuses_a_memory_limit_below_what_the_cgroup_keeps_using(tmp_path: Path) -> None:
    """v1's EBUSY rule on v2 (which would take the limit and OOM-kill): the excess is asked of
    memory.reclaim first, and only what is still in use above the limit refuses it."""
    v2_tree(tmp_path)
    leaf = tmp_path / "sandman/web"
    (leaf / "memory.current").write_text(str(300 * MiB))
    (leaf / "memory.reclaim").write_text("")
    driver = cg.V2Driver(str(tmp_path))
    with pytest.raises(LimitError, match="the kernel refused memory_max") as refused:
        driver.set_limits("sandman/web", LIMITS)  # 256M asked, 300M in use
    assert refused.value.errno == errno.EBUSY and refused.value.key == "memory_max"
    assert text(leaf / "memory.reclaim") == str(44 * MiB)  # the excess was asked for first
    assert text(leaf / "memory.max") != str(256 * MiB)
    (leaf / "memory.current").write_text(str(100 * MiB))
    assert driver.set_limits("sandman/web", LIMITS) == []
    assert text(leaf / "memory.max") == str(256 * MiB)


def test_v1_the_named_hierarchies_hold_the_cgroup_and_are_what_is_delegated(
    tmp_path: Path,
) -> None:
    """name=systemd and unified get the sandbox's cgroup too; delegate chowns there alone, the
    controllers' cgroups (with the limits) staying root's. Unprivileged: chown to one's own ids."""
    v1_tree(tmp_path)
    for name, files in cg_v1.DELEGATED_FILES.items():
        tree(tmp_path, {f"{name}/sandman/web/{file}": "" for file in files})
    driver = cg.V1Driver(str(tmp_path))
    assert driver.named == ("systemd", "unified")
    assert str(tmp_path / "systemd" / "sandman/web") in driver.locations("sandman/web")
    assert str(tmp_path / "unified" / "sandman/web") in driver.locations("sandman/web")
    assert driver.delegate("sandman/web", os.getuid(), os.getgid()) == []


def test_v1_without_name_systemd_nothing_is_delegated_and_apply_is_told(tmp_path: Path) -> None:
    v1_tree(tmp_path)
    driver = cg.V1Driver(str(tmp_path))
    assert driver.named == ()
    (warning,) = driver.delegate("sandman/web", os.getuid(), os.getgid())
    assert "no name=systemd hierarchy" in warning


# --- An OCI config's CPU settings (sandman-oci) ------------------------------------------------

OCI_CPU = cg.CpuSettings(shares=2048, quota_us=50000, period_us=500000, cpus="0", mems="0")


def test_oci_shares_map_onto_weight_as_runc_maps_them() -> None:
    assert cg.oci_shares_to_weight(2) == 1
    assert cg.oci_shares_to_weight(1024) == 39
    assert cg.oci_shares_to_weight(262144) == 10000
    assert cg.oci_shares_to_weight(1) == 1  # out of range: clamped, never an invalid weight
    assert cg.oci_shares_to_weight(10**9) == 10000


def test_v1_set_cpu_writes_shares_cfs_and_cpuset(tmp_path: Path) -> None:
    v1_tree(tmp_path)
    tree(
        tmp_path,
        {"cpuset/sandman/web/cpuset.cpus": "0-1\n", "cpuset/sandman/web/cpuset.mems": "0\n"},
    )
    web = tmp_path / "cpu/sandman/web"
    (web / "cpu.cfs_quota_us").write_text("20000\n")
    driver = cg.V1Driver(str(tmp_path), controllers=(*cg.V1_CONTROLLERS, "cpuset"))
    assert driver.set_cpu("sandman/web", OCI_CPU) == []
    assert text(web / "cpu.shares") == "2048"
    assert text(web / "cpu.cfs_period_us") == "500000"
    assert text(web / "cpu.cfs_quota_us") == "50000"
    assert text(tmp_path / "cpuset/sandman/web/cpuset.cpus") == "0"
    assert text(tmp_path / "cpuset/sandman/web/cpuset.mems") == "0"


def test_v1_set_cpu_leaves_what_is_not_given(tmp_path: Path) -> None:
    v1_tree(tmp_path)
    web = tmp_path / "cpu/sandman/web"
    driver = cg.V1Driver(str(tmp_path))
    assert driver.set_cpu("sandman/web", cg.CpuSettings(period_us=250000)) == []
    assert text(web / "cpu.cfs_period_us") == "250000"
    assert text(web / "cpu.cfs_quota_us") == "-1\n"  # untouched
    assert text(web / "cpu.shares") == "1024\n"
    # A driver made without cpuset says so rather than dropping the cpus asked for.
    warnings = driver.set_cpu("sandman/web", cg.CpuSettings(cpus="0"))
    assert warnings == [
        "cpus and mems not applied: this driver was made without the cpuset controller"
    ]


def test_v2_set_cpu_writes_weight_max_and_enables_cpuset(tmp_path: Path) -> None:
    v2_tree(tmp_path, leaf={**V2_LEAF, "cpuset.cpus": "", "cpuset.mems": ""})
    tree(
        tmp_path,
        {
            "sandman/cgroup.controllers": ALL,
            "sandman/cgroup.subtree_control": "cpu io memory pids\n",
        },
    )
    driver = cg.V2Driver(str(tmp_path))
    assert driver.set_cpu("sandman/web", OCI_CPU) == []
    leaf = tmp_path / "sandman/web"
    assert text(leaf / "cpu.weight") == "79"  # 1 + (2048 - 2) * 9999 // 262142
    assert text(leaf / "cpu.max") == "50000 500000"
    assert text(leaf / "cpuset.cpus") == "0"
    assert text(leaf / "cpuset.mems") == "0"
    assert text(tmp_path / "cgroup.subtree_control") == "+cpuset"
    assert text(tmp_path / "sandman/cgroup.subtree_control") == "+cpuset"


def test_v2_set_cpu_writes_cpu_max_as_runc_does(tmp_path: Path) -> None:
    v2_tree(tmp_path)
    driver = cg.V2Driver(str(tmp_path))
    leaf = tmp_path / "sandman/web"
    driver.set_cpu("sandman/web", cg.CpuSettings(quota_us=30000))
    assert text(leaf / "cpu.max") == "30000"  # the kernel keeps its period
    driver.set_cpu("sandman/web", cg.CpuSettings(quota_us=-1, period_us=200000))
    assert text(leaf / "cpu.max") == "max 200000"
    assert driver.set_cpu("sandman/web", cg.CpuSettings(cpus="0")) == [
        f"0 not written: {leaf}/cpuset.cpus is missing (the cpuset controller is not available "
        "to this cgroup)"
    ]


def test_v1_set_swap_writes_memsw_first_only_when_it_rises(tmp_path: Path) -> None:
    v1_tree(tmp_path)
    memory = tmp_path / "memory/sandman/web"
    (memory / "memory.memsw.limit_in_bytes").write_text(f"{UNLIMITED}\n")
    written: list[str] = []
    real_write = cg_common.write

    def record(path: str, value: str) -> None:
        written.append(f"{Path(path).name}={value}")
        real_write(path, value)

    driver = cg.V1Driver(str(tmp_path))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cg_common, "write", record)
        assert driver.set_swap("sandman/web", 64 * MiB, 128 * MiB) == []  # memsw lowered
        assert driver.set_swap("sandman/web", 256 * MiB, 512 * MiB) == []  # memsw raised
    assert written == [
        f"memory.limit_in_bytes={64 * MiB}",
        f"memory.memsw.limit_in_bytes={128 * MiB}",
        f"memory.memsw.limit_in_bytes={512 * MiB}",
        f"memory.limit_in_bytes={256 * MiB}",
    ]


def test_v2_set_swap_keeps_the_swap_alone(tmp_path: Path) -> None:
    v2_tree(tmp_path, leaf={**V2_LEAF, "memory.current": "0\n", "memory.swap.max": "max\n"})
    driver = cg.V2Driver(str(tmp_path))
    leaf = tmp_path / "sandman/web"
    assert driver.set_swap("sandman/web", 64 * MiB, 128 * MiB) == []
    assert text(leaf / "memory.max") == str(64 * MiB)
    assert text(leaf / "memory.swap.max") == str(64 * MiB)
    assert driver.set_swap("sandman/web", 64 * MiB, None) == []
    assert text(leaf / "memory.swap.max") == "max"
