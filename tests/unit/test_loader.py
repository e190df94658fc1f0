"""The loader's good path: defaults, value syntaxes, address assignment and derived names."""

from __future__ import annotations

import json
import pathlib
from ipaddress import IPv4Interface, IPv6Interface

import pytest

from sandman.cli import main
from sandman.digest import digest
from sandman.errors import UnitError
from sandman.units import names
from sandman.units.addresses import Sticky
from sandman.units.constants import CPU_MAX_MIN, MEMORY_MIN, PIDS_MIN
from sandman.units.desired import Desired
from sandman.units.plain import BindMount, Namespaces, TmpfsMount
from sandman.units.read import read_units

REPO = pathlib.Path(__file__).resolve().parents[2]
TAG = "sm"
LAN = '[network]\nsubnet = "10.88.0.0/24"\n'
LAN6 = '[network]\nsubnet = "10.88.0.0/24"\nsubnet6 = "fd00:88::/64"\n'


def sandbox(extra: str = "", section: str = "") -> str:
    return f'[sandbox]\ncommand = ["/bin/true"]\n{section}{extra}'


def on_lan(address: str = "auto", network: str = "lan") -> str:
    return sandbox(f'\n[network]\nattach = "{network}"\naddress = "{address}"\n')


def load(
    tmp_path: pathlib.Path,
    files: dict[str, str],
    tag: str = TAG,
    sticky: Sticky | None = None,
) -> Desired:
    directory = tmp_path / "units"
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return read_units(str(directory), tag, sticky)


# Defaults


def test_sandbox_defaults(tmp_path: pathlib.Path) -> None:
    desired = load(tmp_path, {"web.sandbox.toml": sandbox()})
    web = desired.sandboxes["web"]
    unit = web.unit
    assert unit.sandbox.command == ("/bin/true",)
    assert unit.sandbox.description == ""
    assert unit.sandbox.hostname is None
    assert web.hostname == "web"
    assert unit.sandbox.slice == "sandman"
    assert web.slice_path == ("sandman",)
    assert unit.sandbox.environment == {}
    assert unit.sandbox.user == "0:0"
    assert unit.sandbox.working_directory == "/"
    assert unit.sandbox.restart == "no"
    assert unit.sandbox.stop_timeout == 5 * 10**9
    assert unit.rootfs.image == "busybox"
    assert unit.rootfs.path is None
    assert unit.rootfs.mode == "overlay"
    assert unit.rootfs.persistent is False
    assert unit.namespaces == Namespaces(
        pid=True, mount=True, uts=True, ipc=True, net=True, user=True, cgroup=True, time=False
    )
    assert unit.time is None
    assert unit.idmap is None
    assert unit.mount == ()
    assert unit.network is None
    assert web.veth is None
    assert web.address is None
    assert web.address6 is None
    # Bounded by default (README): 4096 PIDs, a 64M /dev/shm; no memory limit.
    limits = unit.resources.model_dump()
    assert limits.pop("pids_max") == 4096
    assert limits.pop("shm_size") is None
    assert unit.resources.shm_bytes() == 64 * 1024**2
    assert all(value is None for value in limits.values())
    assert unit.security.capabilities == "default"
    assert unit.security.no_new_privileges is True
    assert unit.security.seccomp == "default"


def test_sandbox_canonical_form(tmp_path: pathlib.Path) -> None:
    web = load(tmp_path, {"web.sandbox.toml": sandbox()}).sandboxes["web"]
    canonical = web.canonical()
    assert canonical["sandbox"]["stop_timeout"] == "5s"
    assert canonical["sandbox"]["command"] == ["/bin/true"]
    assert canonical["rootfs"] == {
        "image": "busybox",
        "path": None,
        "mode": "overlay",
        "persistent": False,
    }
    assert canonical["resolved"] == {
        "hostname": "web",
        "slice_path": "sandman",
        "veth": None,
        "address": None,
        "address6": None,
    }
    json.dumps(canonical)
    assert digest(canonical) == digest(json.loads(json.dumps(canonical)))


def test_network_defaults(tmp_path: pathlib.Path) -> None:
    lan = load(tmp_path, {"lan.network.toml": LAN}).networks["lan"]
    assert lan.unit.network.nat is False
    assert lan.unit.network.subnet6 is None
    assert lan.gateway == IPv4Interface("10.88.0.1/24")
    assert lan.gateway6 is None
    assert lan.bridge == names.bridge_name(TAG, "lan") == "smb-lan"


def test_network_gateways(tmp_path: pathlib.Path) -> None:
    text = LAN6 + 'gateway = "10.88.0.254"\ngateway6 = "fd00:88::fe"\nbridge = "br-lan"\n'
    lan = load(tmp_path, {"lan.network.toml": text}).networks["lan"]
    assert lan.gateway == IPv4Interface("10.88.0.254/24")
    assert lan.gateway6 == IPv6Interface("fd00:88::fe/64")
    assert lan.bridge == "br-lan"


def test_slice_defaults_and_paths(tmp_path: pathlib.Path) -> None:
    desired = load(
        tmp_path,
        {
            "services.slice.toml": "[slice]\n",
            "web.slice.toml": '[slice]\nparent = "services"\n',
            "api.sandbox.toml": sandbox(section='slice = "web"\n'),
        },
    )
    services = desired.slices["services"]
    assert services.unit.slice.parent == "sandman"
    assert services.path == ("sandman", "services")
    assert all(
        value is None for key, value in services.unit.slice.model_dump().items() if key != "parent"
    )
    assert desired.slices["web"].path == ("sandman", "services", "web")
    assert desired.sandboxes["api"].slice_path == ("sandman", "services", "web")
    assert desired.slices["web"].canonical()["resolved"] == {"path": "sandman/services/web"}


def test_a_sandbox_may_share_a_slices_name_under_another_parent(tmp_path: pathlib.Path) -> None:
    """Only the same name *and* parent make one cgroup (bad_units/slice-and-sandbox-same-cgroup*):
    sandbox `web` in slice `services` is sandman/services/web, slice `web` sandman/web."""
    desired = load(
        tmp_path,
        {
            "services.slice.toml": "[slice]\n",
            "web.slice.toml": "[slice]\n",
            "web.sandbox.toml": sandbox(section='slice = "services"\n'),
        },
    )
    assert (*desired.sandboxes["web"].slice_path, "web") != desired.slices["web"].path


# Value syntaxes


@pytest.mark.parametrize(
    ("written", "size"),
    [
        ('"64M"', 64 * 1024**2),
        ('"64m"', 64 * 1024**2),
        ('"1G"', 1024**3),
        ('"2T"', 2 * 1024**4),
        ('"8192K"', 8192 * 1024),  # sizes, not limits: above the floor of memory limits
        ('"8388608"', 8388608),
        ("67108864", 67108864),
        ('" 16 M "', 16 * 1024**2),
    ],
)
def test_sizes(tmp_path: pathlib.Path, written: str, size: int) -> None:
    text = f"[slice]\nmemory_max = {written}\n"
    assert load(tmp_path, {"s.slice.toml": text}).slices["s"].unit.slice.memory_max == size


@pytest.mark.parametrize(
    ("written", "nanoseconds", "canonical"),
    [
        ("5s", 5 * 10**9, "5s"),
        ("250ms", 250 * 10**6, "250ms"),
        ("2min", 120 * 10**9, "2min"),
        ("1h", 3600 * 10**9, "1h"),
        ("1.5s", 1500 * 10**6, "1500ms"),
        ("90s", 90 * 10**9, "90s"),
        ("0.5ms", 500_000, "0.5ms"),
        ("0s", 0, "0s"),
    ],
)
def test_durations(tmp_path: pathlib.Path, written: str, nanoseconds: int, canonical: str) -> None:
    text = sandbox(section=f'stop_timeout = "{written}"\n')
    web = load(tmp_path, {"web.sandbox.toml": text}).sandboxes["web"]
    assert web.unit.sandbox.stop_timeout == nanoseconds
    assert web.canonical()["sandbox"]["stop_timeout"] == canonical


def test_signed_time_offsets(tmp_path: pathlib.Path) -> None:
    text = sandbox('\n[namespaces]\ntime = true\n\n[time]\nmonotonic_offset = "-10s"\n')
    web = load(tmp_path, {"web.sandbox.toml": text}).sandboxes["web"]
    assert web.unit.time is not None
    assert web.unit.time.monotonic_offset == -10 * 10**9
    assert web.unit.time.boottime_offset == 0
    assert web.canonical()["time"] == {"monotonic_offset": "-10s", "boottime_offset": "0s"}


@pytest.mark.parametrize(
    ("written", "percent", "canonical"),
    [("50%", 50.0, "50%"), ("200%", 200.0, "200%"), ("12.5%", 12.5, "12.5%"), ("1%", 1.0, "1%")],
)
def test_cpu_percent(tmp_path: pathlib.Path, written: str, percent: float, canonical: str) -> None:
    text = sandbox(f'\n[resources]\ncpu_max = "{written}"\n')
    web = load(tmp_path, {"web.sandbox.toml": text}).sandboxes["web"]
    assert web.unit.resources.cpu_max == percent
    assert web.canonical()["resources"]["cpu_max"] == canonical


def test_mounts(tmp_path: pathlib.Path) -> None:
    text = sandbox(
        '\n[[mount]]\ntype = "tmpfs"\ntarget = "/tmp/"\nsize = "64M"\nmode = "1777"\n'
        '\n[[mount]]\ntype = "bind"\nsource = "/srv//www/."\ntarget = "/www"\nread_only = true\n'
    )
    web = load(tmp_path, {"web.sandbox.toml": text}).sandboxes["web"]
    tmpfs, bind = web.unit.mount
    assert isinstance(tmpfs, TmpfsMount)
    assert (tmpfs.target, tmpfs.size, tmpfs.mode) == ("/tmp", 64 * 1024**2, 0o1777)
    assert isinstance(bind, BindMount)
    assert (bind.source, bind.target, bind.read_only) == ("/srv/www", "/www", True)
    assert web.canonical()["mount"][0]["mode"] == "1777"


def test_user_capabilities_environment(tmp_path: pathlib.Path) -> None:
    text = sandbox(
        '\n[security]\ncapabilities = ["CAP_SETUID", "CAP_CHOWN", "CAP_SETUID"]\n',
        'user = "1000"\nenvironment = { LANG = "C.UTF-8", _X1 = "" }\nhostname = "web.local"\n',
    )
    web = load(tmp_path, {"web.sandbox.toml": text}).sandboxes["web"]
    assert web.unit.sandbox.user == "1000:1000"
    assert web.unit.security.capabilities == ("CAP_CHOWN", "CAP_SETUID")
    assert web.unit.sandbox.environment == {"LANG": "C.UTF-8", "_X1": ""}
    assert web.hostname == "web.local"


def test_idmap_gid_may_be_left_out(tmp_path: pathlib.Path) -> None:
    text = sandbox(
        "\n[idmap]\nuid = [{ inside = 0, outside = 200000, count = 65536 }]\n",
        'user = "1000:1000"\n',
    )
    idmap = load(tmp_path, {"web.sandbox.toml": text}).sandboxes["web"].unit.idmap
    assert idmap is not None
    assert idmap.gid == ()
    assert idmap.uid[0].outside == 200000


# Addresses


def test_auto_addresses_follow_name_order_after_fixed_ones(tmp_path: pathlib.Path) -> None:
    files = {
        "lan.network.toml": LAN,
        "web.sandbox.toml": on_lan("10.88.0.2"),
        "zeta.sandbox.toml": on_lan(),
        "api.sandbox.toml": on_lan(),
        "client.sandbox.toml": on_lan(),
    }
    desired = load(tmp_path, files)
    addresses = {name: str(sb.address) for name, sb in desired.sandboxes.items()}
    assert addresses == {
        "web": "10.88.0.2/24",
        "api": "10.88.0.3/24",
        "client": "10.88.0.4/24",
        "zeta": "10.88.0.5/24",
    }


def test_auto_addresses_are_deterministic(tmp_path: pathlib.Path) -> None:
    files = {"lan.network.toml": LAN6, **{f"s{i}.sandbox.toml": on_lan() for i in range(12)}}
    first = load(tmp_path / "a", files)
    second = load(tmp_path / "b", dict(reversed(files.items())))
    for name, sb in first.sandboxes.items():
        assert sb.address == second.sandboxes[name].address
        assert sb.address6 == second.sandboxes[name].address6
    assert len({sb.address for sb in first.sandboxes.values()}) == 12


def test_fixed_address_without_prefix_takes_the_subnets(tmp_path: pathlib.Path) -> None:
    desired = load(tmp_path, {"lan.network.toml": LAN, "web.sandbox.toml": on_lan("10.88.0.10")})
    assert desired.sandboxes["web"].address == IPv4Interface("10.88.0.10/24")


def test_dual_stack_gets_an_address_in_each_subnet(tmp_path: pathlib.Path) -> None:
    desired = load(tmp_path, {"lan.network.toml": LAN6, "web.sandbox.toml": on_lan()})
    web = desired.sandboxes["web"]
    assert web.address == IPv4Interface("10.88.0.2/24")
    assert web.address6 == IPv6Interface("fd00:88::2/64")
    assert desired.networks["lan"].gateway6 == IPv6Interface("fd00:88::1/64")


def test_sticky_addresses_survive_a_new_sandbox_that_sorts_first(tmp_path: pathlib.Path) -> None:
    files = {"lan.network.toml": LAN, "web.sandbox.toml": on_lan(), "worker.sandbox.toml": on_lan()}
    before = load(tmp_path / "before", files)
    assert str(before.sandboxes["web"].address) == "10.88.0.2/24"
    assert str(before.sandboxes["worker"].address) == "10.88.0.3/24"
    sticky: Sticky = {name: (str(sb.address), None) for name, sb in before.sandboxes.items()}
    files["api.sandbox.toml"] = on_lan()
    after = load(tmp_path / "after", files, sticky=sticky)
    assert str(after.sandboxes["web"].address) == "10.88.0.2/24"
    assert str(after.sandboxes["worker"].address) == "10.88.0.3/24"
    assert str(after.sandboxes["api"].address) == "10.88.0.4/24"
    # Without the record the new sandbox would have taken the first address.
    fresh = load(tmp_path / "fresh", files)
    assert str(fresh.sandboxes["api"].address) == "10.88.0.2/24"


def test_sticky_address_gives_way_to_a_fixed_one(tmp_path: pathlib.Path) -> None:
    files = {
        "lan.network.toml": LAN,
        "web.sandbox.toml": on_lan(),
        "api.sandbox.toml": on_lan("10.88.0.2/24"),
    }
    sticky: Sticky = {"web": ("10.88.0.2/24", None), "gone": ("10.88.0.9/24", None)}
    desired = load(tmp_path, files, sticky=sticky)
    assert str(desired.sandboxes["api"].address) == "10.88.0.2/24"
    assert str(desired.sandboxes["web"].address) == "10.88.0.3/24"


def test_sticky_address_outside_a_changed_subnet_is_dropped(tmp_path: pathlib.Path) -> None:
    files = {"lan.network.toml": LAN, "web.sandbox.toml": on_lan()}
    sticky: Sticky = {"web": ("10.99.0.7/24", "not an address")}
    desired = load(tmp_path, files, sticky=sticky)
    assert str(desired.sandboxes["web"].address) == "10.88.0.2/24"


# Names


def test_derived_interface_names_fit_the_kernel(tmp_path: pathlib.Path) -> None:
    long_a = "a-sandbox-with-a-long-name-one"
    long_b = "a-sandbox-with-a-long-name-two"
    files = {
        "a-network-with-a-long-name.network.toml": LAN,
        f"{long_a}.sandbox.toml": on_lan(network="a-network-with-a-long-name"),
        f"{long_b}.sandbox.toml": on_lan(network="a-network-with-a-long-name"),
        "web.sandbox.toml": on_lan(network="a-network-with-a-long-name"),
    }
    desired = load(tmp_path, files)
    veths = {name: sb.veth for name, sb in desired.sandboxes.items()}
    assert veths["web"] == "sm-web"
    assert all(v is not None and len(v) <= names.IFNAME_MAX for v in veths.values())
    assert len(set(veths.values())) == len(veths)
    bridge = desired.networks["a-network-with-a-long-name"].bridge
    assert len(bridge) <= names.IFNAME_MAX
    assert bridge.startswith("smb-a-netw")
    # The hash suffix is stable: the same name always gives the same interface.
    assert veths[long_a] == names.veth_name(TAG, long_a)
    assert veths[long_a] == load(tmp_path / "again", files).sandboxes[long_a].veth


def test_shorten_keeps_short_names_and_hashes_long_ones() -> None:
    assert names.shorten("sm-web") == "sm-web"
    assert names.shorten("x" * 15) == "x" * 15
    long = names.shorten("sm-" + "x" * 30)
    assert len(long) == names.IFNAME_MAX
    assert long.startswith("sm-xxxxxxxx")
    assert long != names.shorten("sm-" + "x" * 31)


def test_names_differ_per_instance(tmp_path: pathlib.Path) -> None:
    assert names.instance_tag("/run/sandman") == "sm"
    assert names.instance_tag("/run/sandman/") == "sm"
    test_tag = names.instance_tag(str(tmp_path / "state"))
    assert test_tag != "sm"
    assert len(test_tag) == 4
    assert test_tag.startswith("s")
    assert test_tag != names.instance_tag(str(tmp_path / "other"))
    assert names.cgroup_root("sm") == "sandman"
    assert names.cgroup_root(test_tag) == f"sandman-{test_tag}"
    sandbox_name = "a-sandbox-with-a-long-name"
    veths = {names.veth_name(tag, sandbox_name) for tag in ("sm", test_tag)}
    bridges = {names.bridge_name(tag, "lan") for tag in ("sm", test_tag)}
    assert len(veths) == 2
    assert len(bridges) == 2
    files = {"lan.network.toml": LAN, "web.sandbox.toml": on_lan()}
    desired = load(tmp_path, files, tag=test_tag)
    assert desired.sandboxes["web"].veth == f"{test_tag}-web"
    assert desired.networks["lan"].bridge == f"{test_tag}b-lan"


# The shipped units


def test_shipped_units_validate() -> None:
    desired = read_units(str(REPO / "units"), TAG)
    assert set(desired.sandboxes) == {"client", "web", "worker"}
    assert set(desired.networks) == {"lan"}
    assert set(desired.slices) == {"services"}
    assert str(desired.sandboxes["web"].address) == "10.88.0.10/24"
    assert str(desired.sandboxes["client"].address) == "10.88.0.2/24"
    assert desired.sandboxes["worker"].veth is None
    assert desired.sandboxes["web"].slice_path == ("sandman", "services")
    for sb in desired.sandboxes.values():
        json.dumps(sb.canonical())


def test_problems_of_every_file_come_together(tmp_path: pathlib.Path) -> None:
    files = {
        "lan.network.toml": '[network]\nsubnet = "10.88.0.0/24"\nnat = "yes"\n',
        "web.sandbox.toml": "[sandbox]\ncommand = []\n",
    }
    with pytest.raises(UnitError) as error:
        load(tmp_path, files)
    assert [(p.key, p.line) for p in error.value.problems] == [
        ("network.nat", 3),
        ("sandbox.command", 2),
    ]


def test_a_file_that_looks_like_a_unit_in_another_case_is_warned_of(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`web.sandbox.TOML` is not read (unit files end in `.toml`), but never silently (#17)."""
    (tmp_path / "a.sandbox.toml").write_text('[sandbox]\ncommand = ["true"]\n')
    (tmp_path / "web.sandbox.TOML").write_text('[sandbox]\ncommand = ["true"]\n')
    (tmp_path / "notes.txt").write_text("not a unit\n")
    desired = read_units(str(tmp_path), "smt")
    assert set(desired.sandboxes) == {"a"}
    (warning,) = desired.warnings
    assert "web.sandbox.TOML: ignored" in warning and "web.sandbox.toml" in warning
    assert main(["validate", str(tmp_path)]) == 0
    assert "sandman: warning: " in capsys.readouterr().err


def test_the_floors_of_limits_are_themselves_allowed(tmp_path: pathlib.Path) -> None:
    """The least memory, tasks and CPU a unit may declare (below them: bad_units/
    limits-below-floor) load, in a sandbox and in a slice."""
    limits = f'memory_max = {MEMORY_MIN}\nmemory_high = "6M"\npids_max = 2\ncpu_max = "1%"\n'
    files = {
        "web.sandbox.toml": sandbox(f"\n[resources]\n{limits}"),
        "s.slice.toml": f"[slice]\n{limits}",
    }
    desired = load(tmp_path, files)
    assert desired.sandboxes["web"].unit.resources.pids_max == PIDS_MIN
    assert desired.slices["s"].unit.slice.cpu_max == CPU_MAX_MIN


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ('"SIGTERM"', "SIGTERM"),
        ('"term"', "SIGTERM"),
        ("15", "SIGTERM"),
        ('"SIGRTMIN+3"', "SIGRTMIN+3"),
        ('"RTMIN+3"', "SIGRTMIN+3"),
        ("37", "SIGRTMIN+3"),
        ('"SIGINT"', "SIGINT"),
        ('"SIGKILL"', "SIGKILL"),
    ],
)
def test_stop_signals_are_held_by_their_canonical_name(
    tmp_path: pathlib.Path, written: str, canonical: str
) -> None:
    """Two spellings of one signal are one value: writing TERM for SIGTERM changes nothing."""
    text = sandbox(section=f"stop_signal = {written}\n")
    web = load(tmp_path, {"web.sandbox.toml": text}).sandboxes["web"]
    assert web.canonical()["sandbox"]["stop_signal"] == canonical


@pytest.mark.parametrize(
    ("written", "problem"),
    [
        ("0", "0 is not a signal"),
        ("65", "65 is not a signal"),
        ("32", "32 is not a signal"),  # glibc's own real-time signal
        ('"SIGFOO"', "'SIGFOO' is not a signal"),
        ('"SIGRTMIN+40"', "'SIGRTMIN+40' is not a signal"),
        ('"SIGSTOP"', "SIGSTOP does not ask a process to end"),
        ('"SIGCHLD"', "SIGCHLD does not ask a process to end"),
        ("true", "a boolean is not a signal"),
    ],
)
def test_bad_stop_signals_name_the_key(tmp_path: pathlib.Path, written: str, problem: str) -> None:
    text = sandbox(section=f"stop_signal = {written}\n")
    with pytest.raises(UnitError) as caught:
        load(tmp_path, {"web.sandbox.toml": text})
    assert "web.sandbox.toml:" in str(caught.value)
    assert f"sandbox.stop_signal: {problem}" in str(caught.value)


def test_boot_takes_the_os_defaults_where_the_unit_says_nothing(tmp_path: pathlib.Path) -> None:
    """A booted sandbox gets nspawn's capabilities, the "os" seccomp profile and systemd's halt
    request as its stop signal, shown in its canonical unit (and so in plan and record)."""
    text = "[sandbox]\nboot = true\n\n[security]\nno_new_privileges = false\n"
    web = load(tmp_path, {"web.sandbox.toml": text}).sandboxes["web"]
    canonical = web.canonical()
    assert canonical["sandbox"]["command"] is None
    assert canonical["sandbox"]["stop_signal"] == "SIGRTMIN+3"
    assert canonical["security"]["capabilities"] == "os"
    assert canonical["security"]["seccomp"] == "os"
    assert canonical["security"]["no_new_privileges"] is False
    assert canonical["resolved"]["machine_id"] == web.machine_id


def test_boot_defaults_yield_to_what_the_unit_says(tmp_path: pathlib.Path) -> None:
    text = (
        '[sandbox]\nboot = true\nstop_signal = "SIGTERM"\n\n'
        '[security]\ncapabilities = ["CAP_SYS_ADMIN"]\nseccomp = "unconfined"\n'
    )
    web = load(tmp_path, {"web.sandbox.toml": text}).sandboxes["web"]
    assert web.unit.sandbox.stop_signal == "SIGTERM"
    assert web.unit.security.capabilities == ("CAP_SYS_ADMIN",)
    assert web.unit.security.seccomp == "unconfined"


def test_a_sandbox_that_does_not_boot_has_no_machine_id(tmp_path: pathlib.Path) -> None:
    """Nor any resolved key for it: records made before booting existed see no change."""
    web = load(tmp_path, {"web.sandbox.toml": sandbox()}).sandboxes["web"]
    assert web.machine_id is None
    assert "machine_id" not in web.canonical()["resolved"]
    assert web.canonical()["sandbox"]["boot"] is None
