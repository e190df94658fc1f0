"""sandman-oci's pure parts: the command line, the OCI seccomp translation, signals, cgroup
paths and device rules, the bundle's mounts, the ids it accepts, the JSON log line."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from sandman.kernel.cgroup import CpuSettings
from sandman.kernel.seccomp_policy import Case, Check, Verdict
from sandman.oci import bundle, cgroups, logs, verbs
from sandman.oci.args import parser
from sandman.oci.errors import OciError
from sandman.oci.seccomp import translate
from sandman.oci.state import Store, check_id


def test_global_options_before_the_verb_in_both_forms() -> None:
    options = parser().parse_args(
        ["--root", "/r", "--log=/l", "--log-format=json", "--systemd-cgroup", "delete", "-f", "x"]
    )
    assert (options.root, options.log, options.log_format) == ("/r", "/l", "json")
    assert (options.verb, options.force, options.id) == ("delete", True, "x")


def test_exec_and_kill_options_clients_pass() -> None:
    options = parser().parse_args(
        [
            "exec",
            "--process",
            "p.json",
            "--detach",
            "--tty",
            "--console-socket",
            "s",
            "-p",
            "q",
            "c",
        ]
    )
    assert options.process == "q" and options.detach and options.tty and options.id == "c"
    kill = parser().parse_args(["kill", "--all", "c", "KILL"])
    assert kill.all and kill.signal == "KILL"
    assert parser().parse_args(["kill", "c"]).signal == "SIGTERM"


@pytest.mark.parametrize(("text", "number"), [("9", 9), ("KILL", 9), ("SIGTERM", 15), ("term", 15)])
def test_signals_by_number_or_name(text: str, number: int) -> None:
    assert verbs.parse_signal(text) == number


def test_an_unknown_signal_is_refused() -> None:
    with pytest.raises(OciError, match="unknown signal"):
        verbs.parse_signal("NOPE")


def test_an_allowlist_profile_denies_every_other_call() -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [{"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"}],
    }
    verdicts = translate(profile, "x86_64")
    assert verdicts["read"] == Verdict() and verdicts["write"] == Verdict()
    assert verdicts["mount"] == Verdict(otherwise=errno.EPERM)


def test_argument_tests_become_cases() -> None:
    clone_flags = 0x7E020000  # the namespace flags Docker's profile refuses without a capability
    profile = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": errno.ENOSYS,
        "syscalls": [
            {
                "names": ["clone"],
                "action": "SCMP_ACT_ALLOW",
                "args": [
                    {"index": 0, "value": clone_flags, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}
                ],
            },
            {
                "names": ["personality"],
                "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}],
            },
        ],
    }
    verdicts = translate(profile, "x86_64")
    # Any of the masked bits: what the call gets without the rule (ENOSYS); none: allowed.
    assert verdicts["clone"] == Verdict((Case((Check(0, clone_flags, True),), errno.ENOSYS),), None)
    assert verdicts["personality"] == Verdict((Case((Check(0, 8),), None),), errno.ENOSYS)


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"names": ["read"], "action": "SCMP_ACT_TRAP"}, "SCMP_ACT_TRAP is not supported"),
        (
            {
                "names": ["read"],
                "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_GT"}],
            },
            "SCMP_CMP_GT of argument 0 is not supported",
        ),
    ],
)
def test_what_cannot_be_translated_is_refused(rule: dict[str, object], message: str) -> None:
    with pytest.raises(OciError, match=message):
        translate({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [rule]}, "x86_64")


def test_cgroup_paths() -> None:
    assert cgroups.path_of({}, "c1") == "sandman-oci/c1"
    assert cgroups.path_of({"linux": {"cgroupsPath": "/default/c1"}}, "c1") == "default/c1"
    systemd = {"linux": {"cgroupsPath": "system.slice:cri:c1"}}
    assert cgroups.path_of(systemd, "c1") == "system.slice/cri-c1.scope"


def test_device_rules_keep_the_defaults_after_a_deny_all() -> None:
    resources = {
        "devices": [
            {"allow": False, "access": "rwm"},
            {"allow": True, "type": "c", "major": 10, "minor": 200, "access": "rwm"},
        ]
    }
    made = [{"type": "c", "major": 10, "minor": 666}, {"type": "p", "major": 0, "minor": 0}]
    rules = cgroups.device_rules(resources, made)
    assert rules is not None
    defaults = cgroups.default_devices()
    assert rules[: len(defaults)] == list(defaults)
    assert rules[len(defaults) :] == ["c 10:200 rwm", "c 10:666 rwm"]
    assert cgroups.device_rules({}) is None


def test_bundle_mounts_leave_the_kernel_made_ones(tmp_path: Path) -> None:
    config = {
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm"},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup"},
            {
                "destination": "/data",
                "type": "bind",
                "source": "/srv/data",
                "options": ["rbind", "ro"],
            },
            {
                "destination": "/run",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["mode=755", "size=1m"],
            },
        ]
    }
    mounts = bundle._mounts(config, str(tmp_path))
    assert [(m.type, m.target) for m in mounts] == [("bind", "/data"), ("tmpfs", "/run")]
    assert mounts[0].read_only and mounts[0].source == "/srv/data"
    assert (mounts[1].mode, mounts[1].size) == (0o755, 1024**2)


def test_an_unknown_mount_type_is_refused(tmp_path: Path) -> None:
    config = {"mounts": [{"destination": "/x", "type": "nfs", "source": "h:/x"}]}
    with pytest.raises(OciError, match=r"mounts\[0\]: mount type 'nfs'"):
        bundle._mounts(config, str(tmp_path))


@pytest.mark.parametrize("bad", ["", "../x", "a/b", "-x", "x" * 1025])
def test_container_ids_that_are_refused(bad: str) -> None:
    with pytest.raises(OciError, match="invalid container id"):
        check_id(bad)


def test_the_json_log_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "log"
    logs.write_error('container "x" does not exist', str(log), "json")
    line = json.loads(log.read_text())
    assert line["level"] == "error" and line["msg"] == 'container "x" does not exist'
    assert "does not exist" in capsys.readouterr().err


def test_cpu_settings_read_as_runc_reads_them() -> None:
    assert cgroups.cpu_settings({}) is None
    assert cgroups.cpu_settings({"cpu": {"shares": 0, "quota": 0, "cpus": ""}}) is None
    resources = {
        "cpu": {"shares": 1024, "quota": 50000, "period": 100000, "cpus": "0-1", "mems": "0"}
    }
    assert cgroups.cpu_settings(resources) == CpuSettings(1024, 50000, 100000, "0-1", "0")
    assert cgroups.cpu_settings({"cpu": {"quota": -1}}) == CpuSettings(quota_us=-1)


def test_update_reads_flags_over_the_file_and_refuses_what_it_cannot_change() -> None:
    from sandman.oci import update

    args = parser().parse_args(["update", "--memory", "1000", "--cpuset-cpus", "0", "c1"])
    merged = update._with_flags({"memory": {"limit": 5}, "pids": {"limit": 3}}, vars(args))
    assert merged == {"memory": {"limit": 1000}, "pids": {"limit": 3}, "cpu": {"cpus": "0"}}
    update._refuse_unknown({"memory": {"limit": 1, "swap": 2}, "blockIO": {}, "cpu": {"shares": 0}})
    with pytest.raises(OciError, match=r"resources\.hugepageLimits cannot be updated"):
        update._refuse_unknown({"hugepageLimits": [{"pageSize": "2MB", "limit": 1}]})
    with pytest.raises(OciError, match=r"resources\.memory\.kernel cannot be updated"):
        update._refuse_unknown({"memory": {"kernel": 5}})


def test_update_takes_swap_only_with_a_memory_limit_below_it() -> None:
    from sandman.oci import update

    assert update._swap({"memory": {"limit": 10}}) is None
    assert update._swap({"memory": {"limit": 10, "swap": 30}}) == (10, 30)
    assert update._swap({"memory": {"limit": 10, "swap": -1}}) == (10, None)
    with pytest.raises(OciError, match=r"needs resources\.memory\.limit"):
        update._swap({"memory": {"swap": 30}})
    with pytest.raises(OciError, match=r"below resources\.memory\.limit"):
        update._swap({"memory": {"limit": 30, "swap": 10}})
    limits, keys = cgroups.updated_limits({"memory": {"limit": -1}, "pids": {"limit": 7}})
    assert (limits.memory_max, limits.pids_max, keys) == (None, 7, {"memory_max", "pids_max"})


CLIENT_LINES = [
    ["--root", "/run/x", "--log", "/l", "--log-format", "json", "create", "--bundle", "b", "c1"],
    ["--root=/run/x", "start", "c1"],
    ["--systemd-cgroup", "--root", "/run/x", "kill", "--all", "c1", "9"],
    ["delete", "--force", "c1"],
    ["exec", "--process", "p.json", "--detach", "--pid-file", "f", "c1"],
    ["update", "--resources", "-", "c1"],
    ["--debug", "state", "c1"],
]


@pytest.mark.parametrize("argv", CLIENT_LINES)
def test_a_known_verb_builds_its_parser_alone_and_parses_the_same(argv: list[str]) -> None:
    from sandman.oci.args import verb_of

    verb = verb_of(argv)
    assert verb is not None and verb in argv
    assert vars(parser(verb).parse_args(argv)) == vars(parser().parse_args(argv))


def test_without_a_known_verb_the_whole_parser_is_built() -> None:
    from sandman.oci.args import verb_of

    assert verb_of(["--help"]) is None
    assert verb_of(["--root", "state"]) is None  # `state` is the root's value here
    assert verb_of(["stat", "c1"]) is None


def test_a_stage_that_still_holds_files_is_never_walked_into(tmp_path: Path) -> None:
    """delete's removal of a container's directory stops at a stage it cannot empty by
    unmounting (a root that stayed mounted): removing the directory would go down into the
    bundle's own files and delete them."""
    store = Store(str(tmp_path / "root"))
    directory = Path(store.make("c1"))
    (directory / "rootfs" / "bin").mkdir(parents=True)
    (directory / "rootfs" / "bin" / "sh").write_text("the bundle's file")
    with pytest.raises(OciError, match="root"):
        store.remove("c1")
    assert (directory / "rootfs" / "bin" / "sh").read_text() == "the bundle's file"


def test_an_empty_stage_goes_with_the_container(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "root"))
    directory = Path(store.make("c1"))
    (directory / "rootfs").mkdir()
    (directory / "state.json").write_text("{}")
    store.remove("c1")
    assert not directory.exists()
