"""A recorded unit read back is the unit that was applied: `sandman start` and a failed
recreate's comeback run a sandbox from its record, and its canonical form (what the record's
digest hashes) must come back unchanged, or the next apply would see a change nobody made."""

from __future__ import annotations

import pathlib

import pytest

from sandman.units.desired import (
    network_from_canonical,
    sandbox_from_canonical,
    slice_from_canonical,
)
from sandman.units.read import read_units

TESTS = pathlib.Path(__file__).resolve().parents[1]
TAG = "smt"

# Every key a sandbox unit may hold with a value other than its default, and the values whose
# canonical form is JSON's null though they are no default: pids_max and memory "max".
EVERYTHING = """
[sandbox]
command = ["/bin/sleep", "1000"]
description = "every key"
hostname = "every.example"
slice = "tier"
environment = { A = "1", B = "two" }
user = "1000:1000"
working_directory = "/srv"
restart = "on-failure"
stop_timeout = "250ms"

[rootfs]
image = "busybox"
mode = "read-only"
persistent = false

[namespaces]
time = true
ipc = false

[time]
monotonic_offset = "-1h"
boottime_offset = "30s"

[idmap]
uid = [{ inside = 0, outside = 200000, count = 65536 }]
gid = [{ inside = 0, outside = 300000, count = 65536 }]

[[mount]]
type = "bind"
source = "/srv"
target = "/srv"
read_only = true

[[mount]]
type = "tmpfs"
target = "/scratch"
size = "16M"
mode = "1777"

[[mount]]
type = "proc"
target = "/proc2"

[[mount]]
type = "overlay"
target = "/layered"
lower = ["/usr", "/opt"]
upper = "/var/tmp/upper"

[network]
attach = "lan"
address = "10.88.0.9"
address6 = "auto"

[[network.ports]]
host = 8080
sandbox = 80

[[network.ports]]
host = 5353
sandbox = 53
protocol = "udp"
host_address = "127.0.0.1"

[resources]
memory_max = "64M"
memory_high = "48M"
cpu_max = "50%"
cpu_weight = 200
pids_max = "max"
io_weight = 300
shm_size = "max"

[security]
capabilities = ["CAP_NET_BIND_SERVICE", "CAP_CHOWN"]
no_new_privileges = false
seccomp = "unconfined"
"""


def _everything(directory: pathlib.Path) -> pathlib.Path:
    directory.mkdir()
    (directory / "every.sandbox.toml").write_text(EVERYTHING)
    (directory / "lan.network.toml").write_text(
        '[network]\nsubnet = "10.88.0.0/24"\nsubnet6 = "fd00:88::/64"\nnat = true\n'
        'bridge = "br-every"\ngateway6 = "fd00:88::1"\n'
    )
    (directory / "tier.slice.toml").write_text('[slice]\npids_max = "max"\ncpu_max = "150%"\n')
    (directory / "plain.sandbox.toml").write_text('[sandbox]\ncommand = ["/bin/true"]\n')
    return directory


def _unit_dirs() -> list[pathlib.Path]:
    found = {p.parent for p in TESTS.rglob("*.toml") if "bad_units" not in p.parts}
    return sorted(found | {TESTS.parent / "units"})


def _round_trips(directory: pathlib.Path) -> int:
    desired = read_units(str(directory), TAG)
    for name, sandbox in desired.sandboxes.items():
        canonical = sandbox.canonical()
        again = sandbox_from_canonical(name, sandbox.file, canonical)
        assert again.canonical() == canonical, f"{directory}: sandbox/{name}"
        assert again == sandbox
    for name, network in desired.networks.items():
        canonical = network.canonical()
        assert network_from_canonical(name, network.file, canonical) == network
    for name, item in desired.slices.items():
        assert slice_from_canonical(name, item.file, item.canonical()) == item
    return len(desired.sandboxes)


def test_a_unit_with_every_key_comes_back_the_same(tmp_path: pathlib.Path) -> None:
    assert _round_trips(_everything(tmp_path / "units")) == 2


@pytest.mark.parametrize("directory", _unit_dirs(), ids=lambda p: str(p.relative_to(TESTS.parent)))
def test_the_units_of_the_tests_come_back_the_same(directory: pathlib.Path) -> None:
    try:
        read_units(str(directory), TAG)
    except Exception:  # a directory that holds pieces of units, not a valid whole
        pytest.skip("not a valid unit directory")
    _round_trips(directory)
