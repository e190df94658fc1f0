"""Records: typed, versioned, made and read by observe/records.py alone."""

from __future__ import annotations

import json
import pathlib
import re

import pytest

from sandman.errors import StateError
from sandman.observe.facts import IdRanges, PortDeclared, Runtime
from sandman.observe.records import read_records, record_of, write_record

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "sandman"

# A sandbox record as version 1 of sandman wrote it (before the typed model), trimmed.
VERSION_1 = {
    "version": 1,
    "kind": "sandbox",
    "name": "web",
    "digest": "0123456789abcdef",
    "tainted": False,
    "unit": {
        "sandbox": {
            "description": "serves",
            "command": ["/bin/httpd", "-f"],
            "user": "1000:1000",
            "restart": "always",
            "stop_timeout": "250ms",
            "slice": "services",
            "environment": {"A": "1"},
            "working_directory": "/www",
        },
        "rootfs": {"image": "busybox", "path": None, "mode": "overlay", "persistent": False},
        "namespaces": {"pid": True, "net": True, "time": False},
        "mount": [{"source": "/srv", "target": "/www", "read_only": True}],
        "network": {
            "attach": "lan",
            "ports": [{"host": 8080, "sandbox": 80, "protocol": "tcp", "host_address": None}],
        },
        "resources": {"memory_max": 33554432, "cpu_max": "20%"},
        "security": {"capabilities": ["CAP_NET_BIND_SERVICE"], "seccomp": "default"},
        "resolved": {
            "slice_path": "sandman/services",
            "veth": "s1-web",
            "address": "10.88.0.2/24",
            "address6": None,
        },
    },
    "runtime": {
        "pid": 4242,
        "start_time": 777,
        "started_at": 1700000000.5,
        "cgroup": "sandman-s1/services/web",
        "namespaces": {"net": 4026532000},
        "runtime_dir": "/run/sandman/runtime/web",
        "rootfs": "/var/lib/sandman/images/busybox",
        "upper": None,
        "log": "/var/log/sandman/web.log",
        "idmap": {"uid": [[0, 100000, 65536]], "gid": [[0, 100000, 65536]]},
        "environment": {"A": "1"},
        "user": "1000:1000",
        "bridge": "s1b-lan",
        "auto_ids": 100000,
    },
}


def write(state: pathlib.Path, data: dict[str, object], kind_dir: str = "sandboxes") -> None:
    (state / kind_dir).mkdir(parents=True, exist_ok=True)
    (state / kind_dir / f"{data['name']}.json").write_text(json.dumps(data))


def test_a_version_1_record_reads_typed(tmp_path: pathlib.Path) -> None:
    write(tmp_path, VERSION_1)
    (record,) = read_records(str(tmp_path))
    runtime, declared = record.runtime, record.sandbox
    assert (runtime.pid, runtime.start_time, runtime.cgroup) == (
        4242,
        777,
        "sandman-s1/services/web",
    )
    assert runtime.idmap == IdRanges(((0, 100000, 65536),), ((0, 100000, 65536),))
    assert (runtime.auto_ids, runtime.user, runtime.bridge) == (100000, "1000:1000", "s1b-lan")
    assert declared.stop_seconds() == 0.25 and declared.restart == "always"
    assert declared.mount_targets == ("/www",) and declared.namespaces == ("net", "pid")
    assert declared.ports == (PortDeclared(8080, 80, "tcp", None),)
    assert declared.capabilities == ("CAP_NET_BIND_SERVICE",)
    assert (declared.network, declared.veth, declared.slice_path) == (
        "lan",
        "s1-web",
        "sandman/services",
    )


def test_what_a_unit_leaves_out_takes_the_format_s_defaults(tmp_path: pathlib.Path) -> None:
    bare = {**VERSION_1, "unit": {"sandbox": {"command": ["/bin/sh"]}}, "runtime": {}}
    write(tmp_path, bare)
    (record,) = read_records(str(tmp_path))
    declared = record.sandbox
    assert (declared.user, declared.working_directory, declared.restart) == ("0:0", "/", "no")
    assert declared.stop_seconds() == 5.0 and declared.no_new_privileges
    assert (declared.capabilities, declared.seccomp) == ("default", "default")
    assert record.runtime == Runtime()


def test_a_record_written_reads_back_the_same(tmp_path: pathlib.Path) -> None:
    write(tmp_path, VERSION_1)
    (record,) = read_records(str(tmp_path))
    other = tmp_path / "again"
    write_record(str(other), record)
    (again,) = read_records(str(other))
    assert again == record
    written = json.loads((other / "sandboxes" / "web.json").read_text())
    assert written["version"] == 2 and written["runtime"]["idmap"]["uid"] == [[0, 100000, 65536]]


def test_a_version_1_record_is_of_a_sandbox_not_stopped_from_no_known_file(
    tmp_path: pathlib.Path,
) -> None:
    write(tmp_path, VERSION_1)
    (record,) = read_records(str(tmp_path))
    assert (record.stopped, record.file, record.runtime.stopped_at) == (False, None, None)


def test_a_stopped_record_reads_back_stopped_with_its_file(tmp_path: pathlib.Path) -> None:
    unit = {"sandbox": {"command": ["/bin/sh"]}}
    made = record_of("sandbox", "web", unit, Runtime(auto_ids=100000), "units/web.sandbox.toml")
    stopped = made._replace(stopped=True, runtime=made.runtime._replace(stopped_at=1700000001.25))
    write_record(str(tmp_path), stopped)
    (again,) = read_records(str(tmp_path))
    assert again == stopped and again.stopped
    assert again.file == str(pathlib.Path("units/web.sandbox.toml").resolve())
    written = json.loads((tmp_path / "sandboxes" / "web.json").read_text())
    assert (written["version"], written["stopped"]) == (2, True)
    assert written["runtime"] == {"auto_ids": 100000, "stopped_at": 1700000001.25}


def test_a_booted_sandbox_s_keeper_reads_back_and_an_older_record_has_none(
    tmp_path: pathlib.Path,
) -> None:
    """The console keeper's fields are optional: a record without them (any older one, or a
    sandbox that does not boot) has no keeper, so no version step is needed for them."""
    unit = {"sandbox": {"boot": True}}
    facts = Runtime(pid=42, start_time=7, keeper_pid=41, keeper_start_time=6)
    write_record(str(tmp_path), record_of("sandbox", "os", unit, facts))
    (again,) = read_records(str(tmp_path))
    assert (again.runtime.keeper_pid, again.runtime.keeper_start_time) == (41, 6)
    write(tmp_path / "old", VERSION_1)
    (old,) = read_records(str(tmp_path / "old"))
    assert (old.runtime.keeper_pid, old.runtime.keeper_start_time) == (0, 0)


def test_a_newer_record_is_refused_with_what_to_do(tmp_path: pathlib.Path) -> None:
    write(tmp_path, {**VERSION_1, "version": 7})
    with pytest.raises(StateError, match="version 7 record, newer than this sandman reads"):
        read_records(str(tmp_path))


def test_a_damaged_record_names_its_file(tmp_path: pathlib.Path) -> None:
    write(tmp_path, {**VERSION_1, "runtime": {"pid": "many"}})
    with pytest.raises(StateError, match=r"web\.json.*damaged.*remove it and apply again"):
        read_records(str(tmp_path))


def test_network_and_slice_records_read_typed() -> None:
    network = record_of(
        "network",
        "lan",
        {"network": {"subnet": "10.1.0.0/24", "nat": True}, "resolved": {"bridge": "b"}},
    )
    assert (network.network.subnet, network.network.nat, network.network.bridge) == (
        "10.1.0.0/24",
        True,
        "b",
    )
    tier = record_of("slice", "tier", {"slice": {"pids_max": 9}, "resolved": {"path": "a/tier"}})
    assert (tier.slice.limits["pids_max"], tier.slice.path) == (9, "a/tier")


# `record.unit.get(...)`, `runtime.get(...)`, `record.runtime["pid"]`: reading a record's JSON
# by key, with a default of its own, outside the one module that knows the format.
_UNTYPED = re.compile(r"\b(?:unit|runtime|resolved)(?:\.get\(|\[\")")


def test_no_module_but_records_reads_a_record_by_key() -> None:
    allowed = {PACKAGE / "observe" / "records.py", PACKAGE / "units" / "desired.py"}
    found = [
        f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path not in allowed
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if _UNTYPED.search(line)
    ]
    assert found == []
