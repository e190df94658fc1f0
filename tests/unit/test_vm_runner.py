"""The VM runner's pure logic (tests/vm): cache keys, apt sources, the checkout's files, the
accelerator, the guest's command lines, the arguments, exit codes, the pure-v2 check."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import tomllib
from pathlib import Path

import pytest
import vm_boot
import vm_build
import vm_cli
import vm_guest
import vm_recipe as recipe

REPO = Path(__file__).resolve().parents[2]

ONE_LINE = """\
# the host's
deb http://mirror.example/debian bookworm main contrib
deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm-updates main
deb-src http://mirror.example/debian bookworm main
deb http://other.example/ trixie main
"""

DEB822 = """\
Types: deb
# a comment
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main

Types: deb
Enabled: no
URIs: http://off.example/debian
Suites: bookworm
Components: main

Types: deb
URIs: https://deb.nodesource.example/node_20.x
Suites: nodistro
Components: main
"""


def test_one_line_sources_read_deb_entries_with_their_options_dropped() -> None:
    found = recipe.parse_one_line_sources(ONE_LINE)
    assert [s.line() for s in found] == [
        "deb http://mirror.example/debian bookworm main contrib",
        "deb http://mirror.example/debian bookworm-updates main",
        "deb http://other.example/ trixie main",
    ]


def test_deb822_sources_read_one_entry_per_uri_and_suite_of_enabled_deb_stanzas() -> None:
    found = recipe.parse_deb822_sources(DEB822)
    assert [(s.uri, s.suite) for s in found] == [
        ("http://mirror.example/debian", "bookworm"),
        ("http://mirror.example/debian", "bookworm-updates"),
        ("http://mirror.example/debian-security", "bookworm-security"),
        ("https://deb.nodesource.example/node_20.x", "nodistro"),
    ]


def test_the_guest_takes_the_hosts_entries_of_its_suite_family_once_each() -> None:
    host = recipe.parse_deb822_sources(DEB822) + recipe.parse_deb822_sources(DEB822)
    chosen = recipe.guest_sources(host, "bookworm")
    assert [s.suite for s in chosen] == ["bookworm", "bookworm-updates", "bookworm-security"]
    assert recipe.guest_sources(recipe.parse_one_line_sources(ONE_LINE), "trixie")[0].suite == (
        "trixie"
    )


def test_the_rootfs_key_is_what_mmdebstrap_is_given() -> None:
    sources = recipe.parse_deb822_sources(DEB822)[:3]
    key = recipe.rootfs_key(sources, ["b", "a"])
    assert key == recipe.rootfs_key(sources, ["a", "b", "a"])  # a set of packages
    assert key != recipe.rootfs_key(sources, ["a", "b", "c"])
    assert key != recipe.rootfs_key(sources[:2], ["a", "b"])
    assert key != recipe.rootfs_key(sources, ["a", "b"], suite="trixie")


def test_the_setup_hooks_write_the_initrds_configuration_into_the_tree(tmp_path: Path) -> None:
    files = {**recipe.INITRAMFS_FILES, "/etc/odd name": "it's\n$HOME `x`\n"}
    for hook in recipe.setup_hooks(files):
        subprocess.run(["sh", "-c", hook, "hook", str(tmp_path)], check=True)
    for path, text in files.items():
        assert (tmp_path / path.lstrip("/")).read_text() == text
    assert "MODULES=list" in recipe.INITRAMFS_CONF.split()


def test_a_new_runner_version_remakes_every_key(monkeypatch: pytest.MonkeyPatch) -> None:
    before = recipe.rootfs_key([], ["a"]), recipe.wheels_key(["x"], "3.11")
    monkeypatch.setattr(recipe, "RUNNER_VERSION", "next")
    after = recipe.rootfs_key([], ["a"]), recipe.wheels_key(["x"], "3.11")
    assert before[0] != after[0]
    assert before[1] != after[1]


def test_the_image_key_follows_the_tree_the_wheels_and_the_runners_files_in_it() -> None:
    files = {"vm_guest.py": b"one", "vm_recipe.py": b"two"}
    key = recipe.image_key("tree", "wheels", files)
    assert key == recipe.image_key("tree", "wheels", dict(reversed(files.items())))
    assert key != recipe.image_key("tree", "wheels", {**files, "vm_guest.py": b"changed"})
    assert key != recipe.image_key("other tree", "wheels", files)
    assert key != recipe.image_key("tree", "other wheels", files)


def test_the_wheelhouse_holds_the_build_backend_the_dependencies_and_the_test_extras() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    wanted = recipe.wheel_requirements(pyproject)
    assert wanted == sorted(set(wanted))
    assert set(pyproject["build-system"]["requires"]) <= set(wanted)
    assert set(pyproject["project"]["dependencies"]) <= set(wanted)
    assert set(pyproject["project"]["optional-dependencies"]["test"]) <= set(wanted)
    extra = {"project": {"optional-dependencies": {"docs": ["sphinx"], "test": ["pytest"]}}}
    assert recipe.wheel_requirements(extra) == ["pytest"]
    assert recipe.wheels_key(wanted, "3.11") != recipe.wheels_key(wanted, "3.12")
    assert recipe.wheels_key(wanted, "3.11") != recipe.wheels_key([*wanted, "x"], "3.11")


def test_ls_files_output_is_read_once_each_sorted() -> None:
    listed = b"b.py\0a.py\0conflicted.py\0conflicted.py\0"
    assert recipe.checkout_files(listed) == ["a.py", "b.py", "conflicted.py"]
    assert recipe.checkout_files(b"") == []


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_the_checkout_is_tracked_and_untracked_files_not_ignored_ones(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q")
    (tmp_path / ".gitignore").write_text(".venv/\n*.log\n")
    for name in ("kept.py", "gone.py", "new.py", "run.log", ".venv/bin/python"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    _git(tmp_path, "add", ".gitignore", "kept.py", "gone.py")
    (tmp_path / "gone.py").unlink()  # tracked, deleted in the work tree
    assert vm_cli.checkout_listing(tmp_path) == [".gitignore", "kept.py", "new.py"]


def test_the_input_disk_holds_the_checkout_and_the_job_owned_by_root(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "pkg").mkdir()
    (repo / "pkg" / "mod.py").write_text("x = 1\n")
    (repo / "link").symlink_to("pkg/mod.py")
    job = recipe.Job("make test", {"SANDMAN_CI": "1"})
    vm_cli.write_input(tmp_path / "input.tar", repo, job)
    with tarfile.open(tmp_path / "input.tar") as archive:
        members = {m.name: m for m in archive.getmembers()}
        assert set(members) == {
            "src/sandman/pkg/mod.py",
            "src/sandman/link",
            "var/lib/sandman-vm/job.json",
        }
        assert members["src/sandman/link"].issym()
        assert all(m.uid == 0 and m.gname == "root" for m in members.values())
        stored = archive.extractfile("var/lib/sandman-vm/job.json")
        assert stored is not None
        assert recipe.Job.from_json(stored.read().decode()) == job
    assert (tmp_path / "input.tar").stat().st_size % 512 == 0  # a raw disk for qemu


@pytest.mark.parametrize(
    ("requested", "usable", "flags", "accel"),
    [
        ("auto", True, {"vmx", "sse"}, "kvm"),
        ("auto", True, {"svm"}, "kvm"),
        ("auto", True, {"sse"}, "tcg"),  # kvm_pvm: a /dev/kvm that cannot boot a stock kernel
        ("auto", False, {"vmx"}, "tcg"),
        ("tcg", True, {"vmx"}, "tcg"),
        ("kvm", False, set(), "kvm"),  # asked for: qemu then says why it cannot
    ],
)
def test_kvm_only_where_a_stock_kernel_boots_on_it(
    requested: str, usable: bool, flags: set[str], accel: str
) -> None:
    assert recipe.choose_accel(requested, usable, flags)[0] == accel


def test_every_boot_is_pure_cgroup_v2_and_numbered() -> None:
    for mode in ("init", "systemd"):
        words = recipe.kernel_cmdline(mode, 2).split()
        assert "systemd.unified_cgroup_hierarchy=1" in words
        assert "cgroup_no_v1=all" in words
        assert "sandman_vm.boot=2" in words
        assert f"root=LABEL={recipe.ROOT_LABEL}" in words
    assert f"init={recipe.GUEST_SCRIPT}" in recipe.kernel_cmdline("init", 1).split()
    systemd = recipe.kernel_cmdline("systemd", 1).split()
    assert f"systemd.wants={recipe.SERVICE}" in systemd
    assert not [w for w in systemd if w.startswith("init=")]


def test_qemu_gets_the_accelerator_the_kernel_and_each_disk_with_its_serial() -> None:
    disks = (
        recipe.Disk("/run/1/overlay.qcow2", "sandman-root", "qcow2"),
        recipe.Disk("/run/1/input.tar", recipe.SERIAL_INPUT, readonly=True),
    )
    machine = recipe.Machine("tcg", 2, 4096, "/k", "/i", "quiet", disks)
    argv = recipe.qemu_argv(machine)
    assert argv[argv.index("-accel") + 1] == "tcg,thread=multi"
    assert argv[argv.index("-append") + 1] == "quiet"
    drives = [argv[i + 1] for i, word in enumerate(argv) if word == "-drive"]
    assert drives[0].startswith("file=/run/1/overlay.qcow2,format=qcow2,")
    assert drives[1].endswith(",readonly=on")
    assert f"virtio-blk-pci,drive=disk1,serial={recipe.SERIAL_INPUT}" in argv
    kvm = recipe.qemu_argv(recipe.Machine("kvm", 2, 4096, "/k", "/i", "quiet", disks))
    assert kvm[kvm.index("-accel") + 1] == "kvm"
    assert "-no-reboot" in argv  # a panic (panic=-1 reboots) ends the run


def test_an_emulated_guest_tells_the_tests_to_wait_longer_unless_told_otherwise() -> None:
    assert recipe.job_env("tcg", {"A": "1"}) == {"SANDMAN_TEST_WAIT": "150", "A": "1"}
    assert recipe.job_env("tcg", {"SANDMAN_TEST_WAIT": "60"}) == {"SANDMAN_TEST_WAIT": "60"}
    assert recipe.job_env("kvm", {"A": "1"}) == {"A": "1"}


def test_one_word_is_a_command_line_several_are_one_commands_words() -> None:
    assert recipe.command_script(["make && pytest -x"]) == "make && pytest -x"
    assert recipe.command_script(["pytest", "-k", "a and b"]) == "pytest -k 'a and b'"


def test_the_guest_test_list_names_existing_files_each_with_why() -> None:
    listing = vm_cli.GUEST_TESTS.read_text()
    files = recipe.guest_test_files(listing)
    assert files[0] == "tests/root/test_cgroup.py"
    for entry in files:
        path, _, test = entry.partition("::")
        assert (REPO / path).is_file(), entry
        assert not test or f"def {test}(" in (REPO / path).read_text(), entry
    entries = [line for line in listing.splitlines() if line and not line.startswith("#")]
    assert all("  # " in line for line in entries)
    script = recipe.guest_tests_script(files)
    assert script.startswith(
        "sh contrib/setup.sh --test && SANDMAN_CI=1 .venv/bin/python -m pytest"
    )
    assert '--junitxml="$VM_RESULTS/junit.xml"' in script


def test_the_arguments_name_one_thing_to_do() -> None:
    options = vm_cli.parse_args(["--systemd", "--env", "A=b=c", "--", "pytest", "-x"])
    assert options.command == ("pytest", "-x")
    assert options.systemd
    assert options.env == {"A": "b=c"}
    assert vm_cli.parse_args(["--tests"]).tests == vm_cli.GUEST_TESTS
    assert vm_cli.parse_args(["--tests", "mine.txt"]).tests == Path("mine.txt")
    assert vm_cli.parse_args(["--build-only"]).build_only
    for wrong in (
        [],
        ["--tests", "--", "ls"],
        ["--build-only", "--", "ls"],
        ["--env", "1=x", "--", "ls"],
    ):
        with pytest.raises(SystemExit) as exited:
            vm_cli.parse_args(wrong)
        assert exited.value.code == 2


def _outcome(state: vm_boot.State, **status: object) -> vm_boot.Outcome:
    return vm_boot.Outcome(state, 1.0, 0.5, status or None)


def test_the_exit_code_is_the_commands_or_says_what_the_vm_did() -> None:
    assert vm_cli.exit_code(_outcome("done", rc=3, reboot=False)) == 3
    assert vm_cli.exit_code(_outcome("done", rc=0, reboot=False)) == 0
    assert vm_cli.exit_code(_outcome("done", rc=0, reboot=True)) is None  # boot again
    assert vm_cli.exit_code(_outcome("done", rc=1, reboot=True)) == 1  # failed: no reboot
    assert vm_cli.exit_code(_outcome("done", error="not pure v2")) == recipe.EXIT_GUEST_FAILED
    assert vm_cli.exit_code(_outcome("hung")) == recipe.EXIT_GUEST_FAILED
    assert vm_cli.exit_code(_outcome("no-result")) == recipe.EXIT_GUEST_FAILED
    assert vm_cli.exit_code(_outcome("timeout")) == recipe.EXIT_TIMEOUT


def test_a_guest_that_never_started_the_command_is_booted_once_more() -> None:
    hung = vm_boot.Outcome("hung", 300.0, None, None)
    crashed = vm_boot.Outcome("no-result", 3.0, None, None)
    assert vm_cli.retry_accel(hung, "auto", "kvm", retried=False) == "tcg"
    assert vm_cli.retry_accel(crashed, "auto", "kvm", retried=False) == "tcg"
    assert vm_cli.retry_accel(hung, "auto", "tcg", retried=False) == "tcg"
    assert vm_cli.retry_accel(hung, "kvm", "kvm", retried=False) == "kvm"  # as asked
    assert vm_cli.retry_accel(crashed, "tcg", "tcg", retried=False) is None
    assert vm_cli.retry_accel(hung, "auto", "tcg", retried=True) is None  # once a run
    started = vm_boot.Outcome("no-result", 90.0, 40.0, None)  # the command's own doing
    assert vm_cli.retry_accel(started, "auto", "kvm", retried=False) is None
    assert vm_cli.retry_accel(_outcome("timeout"), "auto", "tcg", retried=False) is None


def _facts(**changes: object) -> vm_guest.Facts:
    pure = {
        "kernel": "6.1.0-40-amd64",
        "cmdline": "cgroup_no_v1=all",
        "pid1": "systemd",
        "cgroup_mounts": [("/sys/fs/cgroup", "cgroup2")],
        "v1_hierarchies": 0,
        "root_controllers": ["cpuset", "cpu", "io", "memory", "hugetlb", "pids", "rdma"],
    }
    return vm_guest.Facts(**{**pure, **changes})  # type: ignore[arg-type]


def test_a_pure_v2_guest_passes_and_a_hybrid_fails_loudly() -> None:
    assert vm_guest.pure_v2_problems(_facts(), "systemd") == []
    assert vm_guest.pure_v2_problems(_facts(pid1="vm_guest.py"), "init") == []
    hybrid = _facts(
        cmdline="quiet",
        cgroup_mounts=[("/sys/fs/cgroup/unified", "cgroup2"), ("/sys/fs/cgroup/memory", "cgroup")],
        v1_hierarchies=11,
        root_controllers=None,
        pid1="vm_guest.py",
    )
    assert vm_guest.pure_v2_problems(hybrid, "systemd") == [
        "a v1 hierarchy is mounted at /sys/fs/cgroup/memory",
        "cgroup2 is not mounted at /sys/fs/cgroup",
        "the kernel lets v1 hierarchies be mounted (no cgroup_no_v1=all)",
        "/proc/cgroups lists 11 v1 hierarchies",
        "there is no /sys/fs/cgroup/cgroup.controllers",
        "PID 1 is vm_guest.py, not systemd",
    ]
    lacking = _facts(root_controllers=["cpu", "pids"])
    assert vm_guest.pure_v2_problems(lacking, "init") == [
        "the root cgroup lacks the io memory controllers"
    ]


def test_the_boot_number_comes_from_the_kernel_command_line() -> None:
    assert vm_guest.boot_number(recipe.kernel_cmdline("systemd", 3)) == 3
    assert vm_guest.boot_number("quiet") == 1


def _archive(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for info, data in members:
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue() + bytes(1 << 16)  # the rest of the disk: zeros


def test_results_come_back_plain_files_below_the_run_dir_only(tmp_path: Path) -> None:
    status = json.dumps({"rc": 0}).encode()
    escape = tarfile.TarInfo("../escaped")
    link = tarfile.TarInfo("./files/link")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/shadow"
    disk = tmp_path / "results.img"
    disk.write_bytes(
        _archive([(tarfile.TarInfo("./status.json"), status), (escape, b"x"), (link, b"")])
    )
    assert vm_boot.unpack_results(disk, tmp_path / "boot-1") == {"rc": 0}
    assert not (tmp_path / "escaped").exists()
    assert not (tmp_path / "boot-1" / "files" / "link").exists()
    vm_boot.fresh_results_disk(disk, 1)  # a guest that wrote nothing
    assert vm_boot.unpack_results(disk, tmp_path / "boot-2") is None


def test_a_test_list_may_name_a_node_id_but_not_a_missing_file(tmp_path: Path) -> None:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests/test_a.py").write_text("def test_x() -> None: ...\n")
    listing = tmp_path / "list.txt"
    listing.write_text("tests/test_a.py::test_x  # why\n")
    options = vm_cli.parse_args(["--tests", str(listing)])
    job = vm_cli.job_of(options, tmp_path)
    assert "tests/test_a.py::test_x" in job.script
    listing.write_text("tests/test_b.py::test_x  # why\n")
    with pytest.raises(vm_build.HostNotReadyError, match=r"test_b\.py"):
        vm_cli.job_of(vm_cli.parse_args(["--tests", str(listing)]), tmp_path)


def test_copies_go_in_at_their_own_paths_and_the_tests_take_the_test_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    cache = tmp_path / "cache"
    (cache / "images" / "deb").mkdir(parents=True)
    (cache / "images" / "deb" / "hostname").write_text("deb\n")
    monkeypatch.setattr(vm_cli, "TEST_CACHE", cache)
    assert vm_cli.copies_of([], with_test_cache=True) == (cache,)
    assert vm_cli.copies_of([], with_test_cache=False) == ()
    assert vm_cli.copies_of([cache], with_test_cache=True) == (cache,)
    vm_cli.write_input(tmp_path / "input.tar", repo, recipe.Job("true", {}), (cache,))
    with tarfile.open(tmp_path / "input.tar") as archive:
        names = set(archive.getnames())
    inside = str(cache).lstrip("/")
    assert {f"{inside}/images/deb/hostname", "var/lib/sandman-vm/job.json"} <= names
