"""Sandboxes that run: apply, exec, status, logs and destroy against the real kernel, as root.

sandman is driven as a user drives it, through `python -m sandman` in a subprocess, each test with
a private tree under tmp_path (state, image, log and unit dirs), so that its instance tag, and
with it every cgroup it makes, is its own. The busybox image is built once per session and
hard-linked into each test's image dir.

The `sm` fixture leaves the host clean: at teardown it runs `sandman destroy` on every unit dir
the test wrote, then fails the test if a process it saw recorded still runs, if any process sits
in the instance's cgroups, if a cgroup named `sandman-<tag>` is left in any cgroup hierarchy, or
if a record or runtime dir is left under the state dir; whatever it finds it also scrubs by hand,
so the host stays clean even then.

The fixtures live here rather than in tests/root/conftest.py: the test directories are not
packages, and a second module named `conftest` would collide with tests/conftest.py under mypy.

No assertion is about time; the waits below are guards against hanging, nothing more.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from sandman.units.names import instance_tag

pytestmark = pytest.mark.root

T = TypeVar("T")
# Seconds: a guard against hanging, never an assertion about speed. An emulated guest (the VM
# tests under TCG) runs a first apply ten times slower: it sets SANDMAN_TEST_WAIT.
WAIT = float(os.environ.get("SANDMAN_TEST_WAIT", "15"))
# A hang guard for one `sandman` run: 2 min on a host, more where SANDMAN_TEST_WAIT says every
# step is slow (an emulated guest sharing its cores ran an apply of several sandboxes past 2 min).
RUN_LIMIT = max(120.0, 8 * WAIT)
SLEEP = ("sleep", "1000")
NAMESPACES = ("cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts")
UNIT_NAMESPACES = ("pid", "uts", "ipc", "net", "user", "cgroup", "time")  # `mount` is always on
KINDS = ("sandboxes", "networks", "slices")

# linux/capability.h, written out here so the tests do not check sandman against itself.
CAP_NUMBERS = {
    "CAP_CHOWN": 0,
    "CAP_DAC_OVERRIDE": 1,
    "CAP_FOWNER": 3,
    "CAP_FSETID": 4,
    "CAP_KILL": 5,
    "CAP_SETGID": 6,
    "CAP_SETUID": 7,
    "CAP_SETPCAP": 8,
    "CAP_NET_BIND_SERVICE": 10,
    "CAP_NET_RAW": 13,
    "CAP_SYS_CHROOT": 18,
    "CAP_SYS_ADMIN": 21,
    "CAP_MKNOD": 27,
    "CAP_AUDIT_WRITE": 29,
    "CAP_SETFCAP": 31,
}
# The OCI runtimes' application set, the "default" of `security.capabilities`.
DEFAULT_CAPS = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)


def cap_mask(names: Sequence[str]) -> int:
    mask = 0
    for name in names:
        mask |= 1 << CAP_NUMBERS[name]
    return mask


# ---------------------------------------------------------------------------------------------
# The host, read without sandman


def unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), field)


def mount_points(mountinfo: str) -> dict[str, tuple[str, str]]:
    """Mount point -> (mount options, file system type), from /proc/PID/mountinfo text."""
    found = {}
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields = left.split()
        found[unescape(fields[4])] = (fields[5], right.split()[0])
    return found


def cgroup_mounts() -> list[str]:
    """Every cgroup and cgroup2 mount point of the host."""
    return [
        point
        for point, (_, fstype) in mount_points(Path("/proc/self/mountinfo").read_text()).items()
        if fstype in ("cgroup", "cgroup2")
    ]


def stat_of(pid: int) -> tuple[str, int] | None:
    """State and start time (clock ticks since boot) of a process, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[19])


def alive(pid: int, start: int | None = None) -> bool:
    """The process runs (a zombie waiting to be reaped does not), and is the one that started at
    `start` when given, not a reuse of its PID."""
    found = stat_of(pid)
    if found is None or found[0] in ("Z", "X"):
        return False
    return start is None or found[1] == start


def instance_processes(base: str) -> dict[int, set[str]]:
    """Every live process in the instance's cgroups, in one pass over /proc: PID -> the cgroup
    paths it has in the hierarchies where it is /BASE or below."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            lines = Path(f"/proc/{entry}/cgroup").read_text().splitlines()
        except OSError:
            continue
        paths = {line.split(":", 2)[2] for line in lines}
        mine = {p for p in paths if p.strip("/").split("/")[0] == base}
        if mine and alive(int(entry)):
            found[int(entry)] = mine
    return found


def processes_in_cgroup(base: str, name: str | None = None) -> list[int]:
    """Live processes whose cgroup, in any hierarchy, is /BASE or below (/BASE/.../NAME)."""
    return sorted(
        pid
        for pid, paths in instance_processes(base).items()
        if name is None or any(name in p.strip("/").split("/")[1:] for p in paths)
    )


def cgroup_dirs(base: str, *below: str) -> list[str]:
    """The directories `base/below...` that exist in any cgroup hierarchy of the host."""
    return [
        os.path.join(mount, base, *below)
        for mount in cgroup_mounts()
        if os.path.isdir(os.path.join(mount, base, *below))
    ]


def ns_link(pid: int | str, name: str) -> str:
    return os.readlink(f"/proc/{pid}/ns/{name}")


def status_fields(text: str) -> dict[str, str]:
    """/proc/PID/status as a mapping: `CapEff` -> `00000000a80425fb`."""
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def id_map(text: str) -> list[tuple[int, int, int]]:
    return [(int(a), int(b), int(c)) for a, b, c in (line.split() for line in text.splitlines())]


def wait_for(predicate: Callable[[], T | None], what: str, timeout: float = WAIT) -> T:
    """Poll until the predicate gives something true; a guard against hanging, not a timing."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.02)


def tree_snapshot(root: Path) -> dict[str, tuple[int, int, int, bytes | str | None]]:
    """Every entry below root: mode, owner, group and content (a symlink's target)."""
    snapshot: dict[str, tuple[int, int, int, bytes | str | None]] = {}
    for directory, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            content: bytes | str | None = None
            if os.path.islink(path):
                content = os.readlink(path)
            elif os.path.isfile(path):
                content = Path(path).read_bytes()
            snapshot[os.path.relpath(path, root)] = (st.st_mode, st.st_uid, st.st_gid, content)
    return snapshot


# ---------------------------------------------------------------------------------------------
# Unit files


def unit(
    *,
    command: Sequence[str] = SLEEP,
    sandbox: str = "",
    rest: str = "",
) -> str:
    """A sandbox unit: `sandbox` adds keys to the [sandbox] table, `rest` adds tables after it."""
    lines = [
        "[sandbox]",
        f"command = {json.dumps(list(command))}",
        'stop_timeout = "1s"',
        *(line.strip() for line in sandbox.strip().splitlines()),
        "",
        *(line.strip() for line in rest.strip().splitlines()),
        "",
    ]
    return "\n".join(lines)


def probe_unit(
    probes: Path,
    *,
    command: Sequence[str] = SLEEP,
    sandbox: str = "",
    rest: str = "",
    **security: object,
) -> str:
    """A sandbox with the tests' static probes bind-mounted read-only at /opt/probes; `security`
    are its [security] keys, `rest` more tables."""
    keys = "".join(f"{key} = {json.dumps(value)}\n" for key, value in security.items())
    probes_mount = f"""
        [[mount]]
        type = "bind"
        source = "{probes}"
        target = "/opt/probes"
        read_only = true
        [security]
    """
    return unit(command=command, sandbox=sandbox, rest=rest + probes_mount + keys)


def namespaces_table(flags: dict[str, bool]) -> str:
    return "[namespaces]\n" + "".join(f"{k} = {str(v).lower()}\n" for k, v in flags.items())


def idmap_table(uid: Sequence[tuple[int, int, int]], gid: Sequence[tuple[int, int, int]]) -> str:
    def ranges(items: Sequence[tuple[int, int, int]]) -> str:
        return ", ".join(f"{{ inside = {a}, outside = {b}, count = {c} }}" for a, b, c in items)

    return f"[idmap]\nuid = [{ranges(uid)}]\ngid = [{ranges(gid)}]\n"


# ---------------------------------------------------------------------------------------------
# One sandman instance per test


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    code: int
    out: str
    err: str

    def __str__(self) -> str:
        command = " ".join(self.argv)
        return f"$ {command}\nexit {self.code}\n--- stdout\n{self.out}--- stderr\n{self.err}"


class Sandman:
    """A private sandman instance: its own state, image, log and unit dirs under `root`."""

    def __init__(self, root: Path, image: Path) -> None:
        self.root = root
        self.state_dir = _state_dir_with_a_free_tag(root)
        self.tag = instance_tag(str(self.state_dir))
        self.base = f"sandman-{self.tag}"
        self.image_dir = root / "images"
        self.log_dir = root / "logs"
        self.units = root / "units"
        self.units.mkdir()
        self.unit_dirs = [self.units]
        # A hard-linked copy: cheap, and this instance's image dir is its own.
        shutil.copytree(image, self.image_dir / "busybox", symlinks=True, copy_function=os.link)
        self.seen: set[tuple[int, int]] = set()

    # -- running sandman

    def run(
        self, verb: str, *args: str, expect: int | None = 0, env: dict[str, str] | None = None
    ) -> Result:
        """`python -m sandman VERB --state-dir ... ARGS...`; the exit code is checked unless
        `expect` is None. The caller's SANDMAN_* variables are dropped, `env` is added."""
        argv = tuple(self.argv(verb, *args))
        environment = {k: v for k, v in os.environ.items() if not k.startswith("SANDMAN_")}
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env={**environment, **(env or {})},
            timeout=RUN_LIMIT,
            check=False,
        )
        result = Result(argv[3:], done.returncode, done.stdout, done.stderr)
        if expect is not None:
            assert result.code == expect, f"expected exit {expect}\n{result}"
        return result

    def argv(self, verb: str, *args: str) -> list[str]:
        """`python -m sandman VERB` with this instance's paths, then ARGS."""
        paths = ("--state-dir", str(self.state_dir), "--image-dir", str(self.image_dir))
        return [
            sys.executable,
            "-m",
            "sandman",
            verb,
            *paths,
            "--log-dir",
            str(self.log_dir),
            *args,
        ]

    def apply(self, units: Path | None = None, expect: int | None = 0) -> Result:
        result = self.run("apply", str(units or self.units), expect=expect)
        self.note_records()
        return result

    def exec(self, name: str, *command: str, expect: int | None = 0) -> Result:
        return self.run("exec", name, "--", *command, expect=expect)

    def sh(self, name: str, script: str, expect: int | None = 0) -> Result:
        return self.exec(name, "sh", "-c", script, expect=expect)

    def destroy(self, *targets: str) -> Result:
        return self.run("destroy", *targets)

    def status(self) -> dict[str, Any]:
        report: dict[str, Any] = json.loads(self.run("status", "--json").out)
        return report

    def status_of(self, name: str) -> dict[str, Any]:
        found: list[dict[str, Any]] = [s for s in self.status()["sandboxes"] if s["name"] == name]
        assert len(found) == 1, f"status --json lists sandbox {name!r} {len(found)} times"
        return found[0]

    # -- unit files

    def write(self, name: str, text: str, kind: str = "sandbox", units: Path | None = None) -> Path:
        directory = units or self.units
        if directory not in self.unit_dirs:
            self.unit_dirs.append(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{name}.{kind}.toml"
        path.write_text(text)
        return path

    def remove(self, name: str, kind: str = "sandbox") -> None:
        (self.units / f"{name}.{kind}.toml").unlink()

    # -- what sandman recorded

    def record_path(self, name: str, kind: str = "sandboxes") -> Path:
        return self.state_dir / kind / f"{name}.json"

    def record(self, name: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.record_path(name).read_text())
        return data

    def runtime(self, name: str) -> dict[str, Any]:
        runtime: dict[str, Any] = self.record(name)["runtime"]
        return runtime

    def init(self, name: str) -> tuple[int, int]:
        """The recorded init: PID and start time."""
        runtime = self.runtime(name)
        return int(runtime["pid"]), int(runtime["start_time"])

    def running_init(self, name: str) -> int:
        pid, start = self.init(name)
        assert alive(pid, start), f"the init of {name} (pid {pid}) does not run"
        return pid

    def note_records(self) -> None:
        """Remember every init recorded, so that teardown can tell whether one outlived destroy."""
        for path in self.state_dir.glob("sandboxes/*.json"):
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                runtime = json.loads(path.read_text())["runtime"]
                self.seen.add((int(runtime["pid"]), int(runtime["start_time"])))

    def gone(self, name: str) -> list[str]:
        """What is left of sandbox NAME: empty when there is no process, record, cgroup or
        runtime dir of it."""
        left = [f"process {pid} in its cgroup" for pid in processes_in_cgroup(self.base, name)]
        left += [f"cgroup {d}" for d in self.sandbox_cgroups(name)]
        if self.record_path(name).exists():
            left.append(f"record {self.record_path(name)}")
        if (self.state_dir / "sandboxes" / name).exists():
            left.append(f"runtime dir {self.state_dir / 'sandboxes' / name}")
        return left

    def sandbox_cgroups(self, name: str) -> list[str]:
        found = []
        for top in cgroup_dirs(self.base):
            found += [d for d, _, _ in os.walk(top) if os.path.basename(d) == name]
        return found

    # -- teardown

    def leftovers(self) -> list[str]:
        left = [f"process {p}, recorded as an init" for p, s in sorted(self.seen) if alive(p, s)]
        left += [f"process {p} in the instance's cgroups" for p in processes_in_cgroup(self.base)]
        left += [f"cgroup {d}" for d in cgroup_dirs(self.base)]
        for kind in KINDS:
            directory = self.state_dir / kind
            if directory.is_dir():
                left += [
                    f"{'record' if entry.is_file() else 'runtime dir'} {entry}"
                    for entry in sorted(directory.iterdir())
                ]
        return left

    def scrub(self) -> None:
        """Remove what destroy left, without sandman: processes, cgroups, records, runtime dirs."""
        for pid, start in self.seen:
            if alive(pid, start):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for top in cgroup_dirs(self.base):
            _scrub_cgroup(top)
        for kind in KINDS:
            shutil.rmtree(self.state_dir / kind, ignore_errors=True)


def _state_dir_with_a_free_tag(root: Path) -> Path:
    """A state dir whose instance tag no cgroup on the host carries yet: tags are short hashes,
    and a test must never take (or scrub) another instance's objects for its own."""
    for attempt in range(100):
        candidate = root / ("state" if attempt == 0 else f"state-{attempt}")
        if not cgroup_dirs(f"sandman-{instance_tag(str(candidate))}"):
            return candidate
    pytest.fail("no state dir under tmp_path has an instance tag free on this host")


def _scrub_cgroup(top: str) -> None:
    deadline = time.monotonic() + WAIT
    for directory, _, _ in os.walk(top, topdown=False):
        while os.path.isdir(directory):
            for name, value in (("freezer.state", "THAWED"), ("cgroup.freeze", "0")):
                with contextlib.suppress(OSError):
                    Path(directory, name).write_text(value)
            with contextlib.suppress(OSError):
                for pid in Path(directory, "cgroup.procs").read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
            with contextlib.suppress(OSError):
                os.rmdir(directory)
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)


@pytest.fixture(scope="session")
def busybox_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in image, built once per session with `sandman image busybox`."""
    if not os.path.exists("/bin/busybox"):
        pytest.skip("needs busybox-static (/bin/busybox): apt-get install busybox-static")
    image_dir = tmp_path_factory.mktemp("images")
    done = subprocess.run(
        [sys.executable, "-m", "sandman", "image", "busybox", "--image-dir", str(image_dir)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return image_dir / "busybox"


@pytest.fixture
def sm(tmp_path: Path, busybox_image: Path) -> Iterator[Sandman]:
    instance = Sandman(tmp_path, busybox_image)
    yield instance
    instance.note_records()
    problems = []
    for directory in instance.unit_dirs:
        result = instance.run("destroy", str(directory), expect=None)
        if result.code != 0:
            problems.append(f"destroy failed:\n{result}")
    left = instance.leftovers()
    if left:
        instance.scrub()
        problems.append(
            f"left on the host after `sandman destroy` (instance {instance.base}, now scrubbed): "
            + "; ".join(left)
        )
        still = instance.leftovers()
        if still:
            problems.append("could not scrub: " + "; ".join(still))
    if problems:
        pytest.fail("\n".join(problems))


# ---------------------------------------------------------------------------------------------
# From outside: namespaces, id maps, ownership


ALL_ON = dict.fromkeys(UNIT_NAMESPACES, True)
ALL_OFF = dict.fromkeys(UNIT_NAMESPACES, False)
MIXED = {
    "pid": True,
    "uts": False,
    "ipc": True,
    "net": False,
    "user": False,
    "cgroup": True,
    "time": True,
}


@pytest.mark.parametrize("declared", [ALL_ON, ALL_OFF, MIXED], ids=["all-on", "all-off", "mixed"])
def test_declared_namespaces_are_new_and_the_others_the_hosts(
    sm: Sandman, declared: dict[str, bool]
) -> None:
    sm.write("ns", unit(rest=namespaces_table(declared)))
    sm.apply()
    pid = sm.running_init("ns")
    expected_new = {"mnt": True, **declared}
    for name in NAMESPACES:
        theirs, ours = ns_link(pid, name), ns_link("self", name)
        if expected_new[name]:
            assert theirs != ours, f"namespaces.{name} is on, yet the init shares the host's"
        else:
            assert theirs == ours, f"namespaces.{name} is off, yet the init has its own"
    # The record names the namespaces the init is in.
    recorded = sm.runtime("ns")["namespaces"]
    for name in NAMESPACES:
        assert recorded[name] == os.stat(f"/proc/{pid}/ns/{name}").st_ino


def test_uid_and_gid_maps_hold_the_declared_ranges(sm: Sandman) -> None:
    uid = [(0, 400000, 1000), (1000, 410000, 64536)]
    gid = [(0, 500000, 65536)]
    sm.write("maps", unit(rest=idmap_table(uid, gid)))
    sm.apply()
    pid = sm.running_init("maps")
    assert id_map(Path(f"/proc/{pid}/uid_map").read_text()) == uid
    assert id_map(Path(f"/proc/{pid}/gid_map").read_text()) == gid
    # The init is the sandbox's root, which is host uid 400000 / gid 500000.
    fields = status_fields(Path(f"/proc/{pid}/status").read_text())
    assert fields["Uid"].split() == ["400000"] * 4
    assert fields["Gid"].split() == ["500000"] * 4
    # The same maps seen from inside.
    assert id_map(sm.exec("maps", "cat", "/proc/self/uid_map").out) == uid
    assert id_map(sm.exec("maps", "cat", "/proc/self/gid_map").out) == gid


def test_files_made_inside_on_a_bind_mount_are_owned_outside_by_the_mapped_ids(
    sm: Sandman, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chown(shared, 400000, 500000)  # the sandbox's root owns it
    uid = [(0, 400000, 1000), (1000, 410000, 64536)]
    gid = [(0, 500000, 65536)]
    bind = f'[[mount]]\ntype = "bind"\nsource = "{shared}"\ntarget = "/shared"\n'
    sm.write("owner", unit(rest=idmap_table(uid, gid) + bind))
    sm.apply()
    sm.sh("owner", "touch /shared/by-root /shared/by-user && chown 1234:77 /shared/by-user")
    by_root, by_user = os.stat(shared / "by-root"), os.stat(shared / "by-user")
    assert (by_root.st_uid, by_root.st_gid) == (400000, 500000)
    assert (by_user.st_uid, by_user.st_gid) == (410000 + 234, 500000 + 77)
    # And inside, the host's view maps back.
    listing = sm.exec("owner", "ls", "-ln", "/shared").out
    assert re.search(r"\s0\s+0\s.*by-root", listing), listing
    assert re.search(r"\s1234\s+77\s.*by-user", listing), listing


# ---------------------------------------------------------------------------------------------
# From inside


def test_ps_inside_shows_only_the_sandbox_and_pid_1_is_the_command(sm: Sandman) -> None:
    sm.write("solo", unit(command=("sleep", "1000")))
    sm.apply()
    lines = sm.exec("solo", "ps", "-o", "pid,args").out.splitlines()
    assert lines[0].split() == ["PID", "COMMAND"], lines
    processes = {int(pid): args for pid, args in (line.split(None, 1) for line in lines[1:])}
    assert processes.pop(1) == "sleep 1000", processes
    # Nothing else but ps itself: none of the host's processes is visible.
    assert [args for args in processes.values()] == ["ps -o pid,args"], processes


def test_hostname_inside_is_the_declared_one_or_the_name(sm: Sandman) -> None:
    sm.write("named", unit(sandbox='hostname = "inner.example"'))
    sm.write("plain", unit())
    sm.apply()
    assert sm.exec("named", "hostname").out.strip() == "inner.example"
    assert sm.exec("plain", "hostname").out.strip() == "plain"
    assert os.uname().nodename not in ("inner.example", "plain")


def own_cgroup_view(sm: Sandman, name: str) -> bool:
    """Whether the init's /sys/fs/cgroup is its own cgroup2, read-only and rooted (mountinfo's
    field 4) at the sandbox's cgroup: what a pure v2 host gives a sandbox with a cgroup namespace.
    False when nothing is mounted there (v1 and hybrid hosts); anything else fails."""
    lines = Path(f"/proc/{sm.running_init(name)}/mountinfo").read_text().splitlines()
    at = [line.split() for line in lines if line.split()[4] == "/sys/fs/cgroup"]
    if not at:
        return False
    fields = at[-1]  # the one on top, which the sandbox sees
    assert fields[fields.index("-") + 1] == "cgroup2", fields
    assert "ro" in fields[5].split(","), fields
    (own,) = sm.sandbox_cgroups(name)
    assert fields[3] == "/" + os.path.relpath(own, "/sys/fs/cgroup"), fields
    return True


def test_mountinfo_inside_shows_the_declared_mounts_and_no_host_mount(
    sm: Sandman, tmp_path: Path
) -> None:
    data, ro = tmp_path / "data", tmp_path / "ro"
    data.mkdir()
    ro.mkdir()
    mounts = f"""
        [[mount]]
        type = "bind"
        source = "{data}"
        target = "/srv/data"
        [[mount]]
        type = "bind"
        source = "{ro}"
        target = "/srv/ro"
        read_only = true
        [[mount]]
        type = "tmpfs"
        target = "/scratch"
        size = "8M"
    """
    sm.write("mounts", unit(rest=mounts))
    sm.apply()
    inside = mount_points(sm.exec("mounts", "cat", "/proc/self/mountinfo").out)
    declared = {"/srv/data", "/srv/ro", "/scratch"}
    assert declared <= inside.keys(), inside
    assert inside["/srv/ro"][0].split(",")[0] == "ro"
    assert inside["/srv/data"][0].split(",")[0] == "rw"
    assert inside["/scratch"][1] == "tmpfs"
    assert inside["/"][1] == "overlay"
    # Everything else is the sandbox's own: its root, /proc, /sys and /dev with what is in them.
    others = {
        point
        for point in inside
        if point not in declared
        and point != "/"
        and not any(point == top or point.startswith(top + "/") for top in ("/proc", "/dev"))
    }
    # /sys/firmware, when the host has one, is covered by an empty read-only tmpfs of sandman's.
    if "/sys/firmware" in inside:
        assert inside["/sys/firmware"][1] == "tmpfs", inside["/sys/firmware"]
        assert inside["/sys/firmware"][0].split(",")[0] == "ro"
    others.discard("/sys/firmware")
    # On cgroup v2 the sandbox's cgroup namespace is mounted over /sys/fs/cgroup: its own cgroup,
    # read-only (tests/root/test_cgroup_view.py has the rest); the host's tree is not seen.
    own_cgroup = own_cgroup_view(sm, "mounts")
    if own_cgroup:
        others.discard("/sys/fs/cgroup")
    assert others == {"/sys"}, f"host mounts seen inside: {sorted(others - {'/sys'})}"
    host = mount_points(Path("/proc/self/mountinfo").read_text())
    leaked = {p for p in host if p.startswith("/sys/") or p.startswith(str(tmp_path))}
    assert not leaked & inside.keys() - ({"/sys/fs/cgroup"} if own_cgroup else set())
    # Targets missing from the image were made in the sandbox's root, never on the host.
    assert not (sm.image_dir / "busybox" / "srv").exists()
    assert not (sm.image_dir / "busybox" / "scratch").exists()
    assert not Path("/scratch").exists()


def test_read_only_bind_rejects_writes_and_a_writable_one_takes_them(
    sm: Sandman, tmp_path: Path
) -> None:
    rw, ro = tmp_path / "rw", tmp_path / "ro"
    for directory in (rw, ro):
        directory.mkdir()
        os.chown(directory, 400000, 400000)  # the sandbox's root may write, unless read-only
    mounts = f"""
        [[mount]]
        type = "bind"
        source = "{rw}"
        target = "/rw"
        [[mount]]
        type = "bind"
        source = "{ro}"
        target = "/ro"
        read_only = true
    """
    sm.write("binds", unit(rest=idmap_table([(0, 400000, 65536)], [(0, 400000, 65536)]) + mounts))
    sm.apply()
    sm.sh("binds", "echo written > /rw/file")
    assert (rw / "file").read_text() == "written\n"
    refused = sm.sh("binds", "echo written > /ro/file", expect=None)
    assert refused.code != 0
    assert "Read-only file system" in refused.err, refused
    assert not (ro / "file").exists()


def test_read_only_rootfs_rejects_writes(sm: Sandman) -> None:
    before = tree_snapshot(sm.image_dir / "busybox")
    sm.write("frozen", unit(rest='[rootfs]\nimage = "busybox"\nmode = "read-only"\n'))
    sm.apply()
    for path in ("/newfile", "/etc/passwd", "/tmp/x"):
        refused = sm.sh("frozen", f"echo x >> {path}", expect=None)
        assert refused.code != 0, f"{path} was writable"
        assert "Read-only file system" in refused.err, refused
    assert tree_snapshot(sm.image_dir / "busybox") == before


def test_overlay_writes_land_in_the_upper_dir_and_the_image_is_untouched(sm: Sandman) -> None:
    image = sm.image_dir / "busybox"
    before = tree_snapshot(image)
    sm.write("layered", unit(rest='[rootfs]\nimage = "busybox"\nmode = "overlay"\n'))
    sm.apply()
    sm.sh("layered", "echo new > /newfile && echo extra >> /etc/passwd && rm /etc/group")
    upper = Path(sm.runtime("layered")["upper"])
    assert (upper / "newfile").read_text() == "new\n"
    assert (upper / "etc" / "passwd").read_text().endswith("extra\n")
    assert (upper / "etc" / "group").is_char_device()  # overlayfs' whiteout
    assert sm.exec("layered", "cat", "/newfile").out == "new\n"
    assert sm.sh("layered", "test -e /etc/group", expect=None).code == 1
    assert tree_snapshot(image) == before
    # Not persistent: the upper layer lives in the runtime dir and goes with the sandbox.
    assert upper.is_relative_to(sm.state_dir)
    sm.destroy("layered")
    assert not upper.exists()


def test_persistent_upper_dir_survives_destroy_and_apply(sm: Sandman) -> None:
    sm.write("keeper", unit(rest='[rootfs]\nimage = "busybox"\npersistent = true\n'))
    sm.apply()
    sm.sh("keeper", "echo kept > /root/note")
    upper = Path(sm.runtime("keeper")["upper"])
    # Kept outside the state dir, yet inside this instance's own tree, not the host's /var/lib.
    assert not upper.is_relative_to(sm.state_dir)
    assert upper.is_relative_to(sm.root)
    assert (upper / "root" / "note").read_text() == "kept\n"
    first = sm.running_init("keeper")
    sm.destroy("keeper")
    assert sm.gone("keeper") == []
    assert not alive(first)
    assert (upper / "root" / "note").read_text() == "kept\n"
    sm.apply()
    assert sm.runtime("keeper")["upper"] == str(upper)
    assert sm.exec("keeper", "cat", "/root/note").out == "kept\n"


# ---------------------------------------------------------------------------------------------
# Idempotence and drift


def test_second_apply_changes_nothing_and_keeps_the_init(sm: Sandman) -> None:
    sm.write("steady", unit())
    sm.apply()
    init = sm.init("steady")
    record = sm.record_path("steady")
    before = (record.stat().st_ino, record.stat().st_mtime_ns, record.read_bytes())
    second = sm.apply()
    assert "No changes" in second.out, second
    assert sm.init("steady") == init
    assert alive(*init)
    after = (record.stat().st_ino, record.stat().st_mtime_ns, record.read_bytes())
    assert after == before, "a no-op apply rewrote the record"
    sm.run("plan", "--detailed-exitcode", str(sm.units))


@pytest.mark.parametrize("restart", ["always", "on-failure"])
def test_a_killed_init_is_started_again(sm: Sandman, restart: str) -> None:
    sm.write("phoenix", unit(sandbox=f'restart = "{restart}"'))
    sm.apply()
    old_pid, old_start = sm.init("phoenix")
    os.kill(old_pid, signal.SIGKILL)
    wait_for(lambda: not alive(old_pid, old_start), "the killed init to die")
    drift = sm.status_of("phoenix")
    assert drift["state"] == "exited"
    assert drift["drift"], drift
    repaired = sm.apply()
    assert "1 recreated" in repaired.out, repaired  # a new init: the plan says recreate
    new_pid, new_start = sm.init("phoenix")
    assert (new_pid, new_start) != (old_pid, old_start)
    assert alive(new_pid, new_start)
    assert sm.status_of("phoenix")["state"] == "running"
    assert sm.exec("phoenix", "hostname").out.strip() == "phoenix"
    assert "No changes" in sm.apply().out


def test_a_declared_mount_gone_is_drift_repaired_by_a_recreate(sm: Sandman) -> None:
    """Unmounted from the host (nsenter into the init's mount namespace and root): status and
    plan name the missing mount, apply makes the sandbox anew with it."""
    sm.write("mounted", unit(rest='[[mount]]\ntype = "tmpfs"\ntarget = "/scratch"\n'))
    sm.apply()
    old = sm.init("mounted")
    done = subprocess.run(
        ["nsenter", "-t", str(old[0]), "-m", "-r", "umount", "/scratch"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    missing = "mount /scratch: expected mounted, found missing"
    assert sm.status_of("mounted")["drift"] == [missing]
    planned = sm.run("plan", str(sm.units)).out
    assert f"-/+ sandbox/mounted: recreate (drift: {missing})" in planned, planned
    assert "1 recreated" in sm.apply().out
    new = sm.init("mounted")
    assert new != old and alive(*new)
    assert "/scratch" in mount_points(Path(f"/proc/{new[0]}/mountinfo").read_text())
    assert "No changes" in sm.apply().out


def test_a_killed_init_stays_exited_with_restart_no(sm: Sandman) -> None:
    sm.write("once", unit(sandbox='restart = "no"'))
    sm.apply()
    pid, start = sm.init("once")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not alive(pid, start), "the killed init to die")
    again = sm.apply()
    assert "No changes" in again.out, again
    assert sm.init("once") == (pid, start)
    assert not alive(pid, start)
    state = sm.status_of("once")
    assert state["state"] == "exited"
    assert state["pid"] is None
    assert state["drift"], state
    assert processes_in_cgroup(sm.base, "once") == []


# ---------------------------------------------------------------------------------------------
# Recreate, update in place, prune

BIND_SOURCE = "@BIND@"
RECREATING_CHANGES = {
    "command": (unit(command=("sleep", "1000")), unit(command=("sleep", "999"))),
    "rootfs": (
        unit(rest='[rootfs]\nimage = "busybox"\nmode = "overlay"\n'),
        unit(rest='[rootfs]\nimage = "busybox"\nmode = "read-only"\n'),
    ),
    "namespaces": (unit(), unit(rest=namespaces_table({"ipc": False}))),
    "idmap": (
        unit(rest=idmap_table([(0, 600000, 65536)], [(0, 600000, 65536)])),
        unit(rest=idmap_table([(0, 700000, 65536)], [(0, 700000, 65536)])),
    ),
    "mount": (
        unit(),
        unit(rest=f'[[mount]]\ntype = "bind"\nsource = "{BIND_SOURCE}"\ntarget = "/m"\n'),
    ),
}


@pytest.mark.parametrize("changed", sorted(RECREATING_CHANGES))
def test_changing_a_recreate_key_starts_a_new_init(
    sm: Sandman, tmp_path: Path, changed: str
) -> None:
    source = tmp_path / "bind-source"
    source.mkdir()
    before, after = (text.replace(BIND_SOURCE, str(source)) for text in RECREATING_CHANGES[changed])
    sm.write("changing", before)
    sm.apply()
    old = sm.init("changing")
    sm.write("changing", after)
    planned = json.loads(sm.run("plan", "--json", str(sm.units)).out)
    assert [(a["object"], a["action"]) for a in planned["actions"]] == [
        ("sandbox/changing", "recreate")
    ]
    recreated = sm.apply()
    assert "recreated" in recreated.out, recreated
    new = sm.init("changing")
    assert new != old
    assert not alive(*old), "the old init outlived the recreate"
    assert alive(*new)
    # The new init is what the changed unit says.
    pid = new[0]
    if changed == "command":
        assert Path(f"/proc/{pid}/cmdline").read_bytes() == b"sleep\x00999\x00"
    elif changed == "rootfs":
        assert sm.sh("changing", "touch /x", expect=None).code != 0
    elif changed == "namespaces":
        assert ns_link(pid, "ipc") == ns_link("self", "ipc")
    elif changed == "idmap":
        assert id_map(Path(f"/proc/{pid}/uid_map").read_text()) == [(0, 700000, 65536)]
    else:
        assert "/m" in mount_points(sm.exec("changing", "cat", "/proc/self/mountinfo").out)


def test_changing_the_description_updates_in_place(sm: Sandman) -> None:
    sm.write("described", unit(sandbox='description = "first"'))
    sm.apply()
    init = sm.init("described")
    sm.write("described", unit(sandbox='description = "second"'))
    updated = sm.apply()
    assert "updated" in updated.out, updated
    assert sm.init("described") == init
    assert alive(*init)
    assert sm.record("described")["unit"]["sandbox"]["description"] == "second"
    assert "No changes" in sm.apply().out


def test_a_removed_unit_file_is_destroyed_and_the_others_stay(sm: Sandman) -> None:
    sm.write("stays", unit())
    sm.write("goes", unit())
    sm.apply()
    stays, goes = sm.init("stays"), sm.init("goes")
    assert sm.sandbox_cgroups("goes")
    sm.remove("goes")
    pruned = sm.apply()
    assert "destroyed" in pruned.out, pruned
    assert not alive(*goes)
    assert sm.gone("goes") == []
    assert sm.init("stays") == stays
    assert alive(*stays)
    assert [s["name"] for s in sm.status()["sandboxes"]] == ["stays"]


# ---------------------------------------------------------------------------------------------
# Failures


def _assert_failed_cleanly(sm: Sandman, result: Result, name: str, key: str) -> None:
    assert result.code == 1, result
    message = result.err
    assert f"sandbox/{name}" in message, result
    assert f"{name}.sandbox.toml" in message, result
    assert key in message, result
    assert sm.gone(name) == [], f"left of the failed sandbox: {sm.gone(name)}"
    assert name not in [s["name"] for s in sm.status()["sandboxes"]]


def _assert_refused(sm: Sandman, result: Result, name: str, key: str) -> None:
    """Found before anything changed (#17, observe/preflight.py): a unit error, exit 2."""
    assert result.code == 2, result
    assert f"{name}.sandbox.toml: {key}:" in result.err, result
    assert "nothing was changed" in result.err, result
    assert sm.gone(name) == [], f"left of the refused sandbox: {sm.gone(name)}"
    assert name not in [s["name"] for s in sm.status()["sandboxes"]]


def test_a_missing_image_is_refused_naming_unit_and_key_before_anything(sm: Sandman) -> None:
    sm.write("imageless", unit(rest='[rootfs]\nimage = "no-such-image"\n'))
    failed = sm.apply(expect=None)
    _assert_refused(sm, failed, "imageless", "rootfs.image")
    assert "no-such-image" in failed.err


def test_a_missing_mount_source_is_refused_naming_unit_and_key_before_anything(
    sm: Sandman, tmp_path: Path
) -> None:
    missing = tmp_path / "not-there"
    sm.write(
        "sourceless",
        unit(
            rest=f"""
                [[mount]]
                type = "tmpfs"
                target = "/t"
                [[mount]]
                type = "bind"
                source = "{missing}"
                target = "/m"
            """
        ),
    )
    failed = sm.apply(expect=None)
    _assert_refused(sm, failed, "sourceless", "mount[1].source")
    assert str(missing) in failed.err
    assert not missing.exists()


def test_a_command_missing_from_the_image_is_refused_before_anything(sm: Sandman) -> None:
    sm.write("cmdless", unit(command=("/no/such/command",)))
    _assert_refused(sm, sm.apply(expect=None), "cmdless", "sandbox.command")
    sm.write("pathless", unit(command=("no-such-applet",)))
    _assert_refused(sm, sm.apply(expect=None), "pathless", "sandbox.command")


def test_a_command_that_cannot_be_executed_fails_late_and_leaves_nothing(sm: Sandman) -> None:
    """The failure comes late here, in the init itself (an executable file that is no program:
    no check before can tell), after the runtime dir and cgroup were made: the undo stack must
    take them down again."""
    garbage = sm.image_dir / "busybox" / "bin" / "garbage"
    garbage.write_bytes(b"neither ELF nor #!\n")
    garbage.chmod(0o755)
    sm.write("cmdless", unit(command=("/bin/garbage",)))
    failed = sm.apply(expect=None)
    _assert_failed_cleanly(sm, failed, "cmdless", "sandbox.command")


def test_a_failing_sandbox_leaves_the_others_of_the_apply_alone(sm: Sandman) -> None:
    """A failed sandbox does not stop the apply: `a-first` and `c-after` (which sorts after it)
    are made, `b-broken` leaves nothing and the apply exits 1. Once the unit is fixed, the next
    apply makes it and keeps the others."""
    sm.write("a-first", unit())
    sm.write("b-broken", unit(command=("/bin/garbage",)))  # executable, but no program
    garbage = sm.image_dir / "busybox" / "bin" / "garbage"
    garbage.write_bytes(b"neither ELF nor #!\n")
    garbage.chmod(0o755)
    sm.write("c-after", unit())
    failed = sm.apply(expect=None)
    _assert_failed_cleanly(sm, failed, "b-broken", "sandbox.command")
    first, after = sm.init("a-first"), sm.init("c-after")
    assert alive(*first)
    assert alive(*after)
    sm.write("b-broken", unit())
    fixed = sm.apply()
    assert "1 created" in fixed.out, fixed
    assert sm.init("a-first") == first
    assert sm.init("c-after") == after
    sm.running_init("b-broken")


# ---------------------------------------------------------------------------------------------
# Time, id allocation, logs, exec, status


def test_time_namespace_offsets_are_visible_inside(sm: Sandman) -> None:
    offset = 3600.0
    sm.write(
        "clock",
        unit(
            rest="""
                [namespaces]
                time = true
                [time]
                monotonic_offset = "1h"
                boottime_offset = "1h"
            """
        ),
    )
    sm.apply()
    host = float(Path("/proc/uptime").read_text().split()[0])
    inside = float(sm.exec("clock", "cat", "/proc/uptime").out.split()[0])
    assert inside > host + offset - 1.0, (host, inside)


def test_idmap_auto_takes_a_65536_range_and_keeps_it_across_applies(sm: Sandman) -> None:
    sm.write("auto-one", unit(rest="[idmap]\nauto = true\n"))
    sm.write("auto-two", unit(rest="[idmap]\nauto = true\n"))
    sm.apply()
    ranges = {}
    for name in ("auto-one", "auto-two"):
        runtime = sm.runtime(name)
        uid, gid = runtime["idmap"]["uid"], runtime["idmap"]["gid"]
        assert len(uid) == 1 and uid[0][0] == 0 and uid[0][2] == 65536, uid
        assert gid == uid
        pid = sm.running_init(name)
        assert id_map(Path(f"/proc/{pid}/uid_map").read_text()) == [tuple(uid[0])]
        assert id_map(Path(f"/proc/{pid}/gid_map").read_text()) == [tuple(gid[0])]
        ranges[name] = uid[0][1]
    one, two = sorted(ranges.values())
    assert one + 65536 <= two, f"auto ranges overlap: {ranges}"
    # A no-op apply and a recreate keep the range.
    assert "No changes" in sm.apply().out
    old = sm.init("auto-one")
    sm.write("auto-one", unit(command=("sleep", "999"), rest="[idmap]\nauto = true\n"))
    sm.apply()
    assert sm.init("auto-one") != old
    assert sm.runtime("auto-one")["idmap"]["uid"][0][1] == ranges["auto-one"]
    pid = sm.running_init("auto-one")
    assert id_map(Path(f"/proc/{pid}/uid_map").read_text()) == [(0, ranges["auto-one"], 65536)]


def test_logs_show_the_init_output(sm: Sandman) -> None:
    script = "echo out-$GREETING; echo err-$GREETING >&2; exec sleep 1000"
    sm.write(
        "talker", unit(command=("sh", "-c", script), sandbox='environment = { GREETING = "hi" }')
    )
    sm.apply()

    def logged() -> str | None:
        text = sm.run("logs", "talker").out
        return text if "out-hi" in text and "err-hi" in text else None

    text = wait_for(logged, "the init's output in `sandman logs`")
    assert text.splitlines()[:2] in (["out-hi", "err-hi"], ["err-hi", "out-hi"]), text


def test_exec_passes_output_and_exit_code_through(sm: Sandman) -> None:
    sm.write("runner", unit(sandbox='environment = { COLOUR = "blue" }'))
    sm.apply()
    ok = sm.sh("runner", "echo to-out $COLOUR; echo to-err >&2")
    assert ok.out == "to-out blue\n"
    assert ok.err == "to-err\n"
    for code in (1, 3, 7, 42):
        assert sm.sh("runner", f"exit {code}", expect=None).code == code
    assert sm.exec("runner", "false", expect=None).code == 1
    # Runs in the init's cgroups (in every hierarchy), beside it.
    assert sm.exec("runner", "cat", "/proc/self/cgroup").out == (
        sm.exec("runner", "cat", "/proc/1/cgroup").out
    )


def test_status_json_reports_every_contract_field(sm: Sandman) -> None:
    sm.write("watched", unit())
    sm.apply()
    report = sm.status()
    assert {"sandboxes", "networks", "slices"} <= report.keys()
    (entry,) = report["sandboxes"]
    assert {"name", "state", "pid", "started_at", "slice", "network", "usage", "drift"} <= (
        entry.keys()
    )
    runtime = sm.runtime("watched")
    assert entry["name"] == "watched"
    assert entry["state"] == "running"
    assert entry["pid"] == runtime["pid"]
    assert isinstance(entry["started_at"], float | int)
    assert entry["started_at"] == runtime["started_at"]
    assert 0 < entry["started_at"] <= time.time()
    assert entry["slice"] == "sandman"
    assert {"address", "ports"} <= entry["network"].keys()
    assert entry["network"]["address"] is None
    assert entry["network"]["ports"] == []
    assert isinstance(entry["usage"], dict) and entry["usage"], entry["usage"]
    assert entry["drift"] == []
    # `status NAME` is the same entry.
    named = json.loads(sm.run("status", "--json", "watched").out)
    assert [s["name"] for s in named["sandboxes"]] == ["watched"]


# ---------------------------------------------------------------------------------------------
# Privileges


def test_without_a_user_namespace_the_init_is_real_root_with_the_default_caps(
    sm: Sandman,
) -> None:
    sm.write("rootful", unit(rest="[namespaces]\nuser = false\n"))
    sm.apply()
    pid = sm.running_init("rootful")
    assert ns_link(pid, "user") == ns_link("self", "user")
    mask = cap_mask(DEFAULT_CAPS)
    for text in (
        Path(f"/proc/{pid}/status").read_text(),
        sm.exec("rootful", "cat", "/proc/self/status").out,
    ):
        fields = status_fields(text)
        assert fields["Uid"].split() == ["0"] * 4
        assert fields["Gid"].split() == ["0"] * 4
        assert int(fields["CapEff"], 16) == mask, fields["CapEff"]
        assert int(fields["CapPrm"], 16) == mask, fields["CapPrm"]
        assert int(fields["CapBnd"], 16) == mask, fields["CapBnd"]
        assert int(fields["CapAmb"], 16) == 0
    assert id_map(sm.exec("rootful", "cat", "/proc/self/uid_map").out) == [(0, 0, 4294967295)]
    # CAP_SYS_ADMIN is not among them: mounting is refused.
    refused = sm.exec("rootful", "mount", "-t", "tmpfs", "none", "/mnt", expect=None)
    assert refused.code != 0, refused


def test_a_capability_list_is_what_the_sandbox_has(sm: Sandman) -> None:
    kept = ("CAP_NET_BIND_SERVICE", "CAP_KILL", "CAP_CHOWN")
    caps = ", ".join(f'"{c}"' for c in kept)
    sm.write("narrow", unit(rest=f"[security]\ncapabilities = [{caps}]\n"))
    sm.apply()
    pid = sm.running_init("narrow")
    for text in (
        Path(f"/proc/{pid}/status").read_text(),
        sm.exec("narrow", "cat", "/proc/self/status").out,
    ):
        fields = status_fields(text)
        for key in ("CapEff", "CapPrm", "CapBnd"):
            assert int(fields[key], 16) == cap_mask(kept), (key, fields[key])


def test_no_new_privileges_shows_in_proc_status(sm: Sandman) -> None:
    sm.write("nnp-default", unit())
    sm.write("nnp-off", unit(rest="[security]\nno_new_privileges = false\n"))
    sm.apply()
    for name, expected in (("nnp-default", "1"), ("nnp-off", "0")):
        pid = sm.running_init(name)
        assert status_fields(Path(f"/proc/{pid}/status").read_text())["NoNewPrivs"] == expected
        inside = status_fields(sm.exec(name, "cat", "/proc/self/status").out)
        assert inside["NoNewPrivs"] == expected, name


# ---------------------------------------------------------------------------------------------
# The harness itself


def test_the_leak_check_sees_and_scrubs_what_destroy_cannot(sm: Sandman) -> None:
    """With its record deleted by hand, a sandbox is no object of sandman's (an orphan, which
    the next apply or destroy would remove: see test_crash.py): the leak check must report its
    init, cgroup and runtime dir, and the scrub must remove them."""
    sm.write("orphan", unit())
    sm.apply()
    pid, start = sm.init("orphan")
    sm.record_path("orphan").unlink()
    left = sm.leftovers()
    assert f"process {pid}, recorded as an init" in left
    assert any(item.startswith("cgroup ") and sm.base in item for item in left)
    assert f"runtime dir {sm.state_dir / 'sandboxes' / 'orphan'}" in left
    sm.scrub()
    assert sm.leftovers() == []
    assert not alive(pid, start)
