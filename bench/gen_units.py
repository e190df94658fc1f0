"""Generate a valid unit directory of a given size for the benchmarks.

`python bench/gen_units.py DIR [--units 100]` writes 4 networks (one dual stack), 6 nested slices
(two chains three deep) and UNITS - 10 sandboxes spread over them, with mounts of every type,
unique host ports, limits, id maps, clock offsets and a mix of fixed and "auto" addresses, and the
mounts' sources under DIR/sources. The output depends only on DIR and UNITS.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

NETWORKS = 4
SLICES = ("apps", "apps-web", "apps-web-edge", "jobs", "jobs-batch", "jobs-batch-low")
SLICE_PARENTS = {"apps-web": "apps", "apps-web-edge": "apps-web", "jobs-batch": "jobs"}
SLICE_PARENTS["jobs-batch-low"] = "jobs-batch"
FIXED_UNITS = NETWORKS + len(SLICES)
# Each network is a /20; fixed addresses sit from host 2058 up, "auto" ones fill from the bottom.
FIXED_BASE = 2058
MAX_UNITS = FIXED_UNITS + 2000
PORT_BASE = 20000
ID_BASE = 1_000_000


@dataclass(frozen=True)
class Counts:
    sandboxes: int
    networks: int
    slices: int

    @property
    def total(self) -> int:
        return self.sandboxes + self.networks + self.slices


def _q(text: str) -> str:
    """A TOML basic string (JSON's escapes are a subset of TOML's for the text written here)."""
    return json.dumps(text)


def _subnet(index: int) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(f"10.90.{16 * index}.0/20")


def network_unit(index: int) -> str:
    lines = [f"# network {index}: a bridge for about a quarter of the sandboxes", "[network]"]
    lines.append(f"subnet = {_q(str(_subnet(index)))}")
    if index == 0:
        lines.append('subnet6 = "fd00:90::/64"   # dual stack: its sandboxes get both families')
    if index == 1:
        lines.append(f"gateway = {_q(str(_subnet(index)[1]))}")
    if index == 2:
        lines.append(f'bridge = "bench-br{index}"')
    lines.append(f"nat = {'true' if index % 2 == 0 else 'false'}")
    return "\n".join(lines) + "\n"


def slice_unit(name: str, index: int) -> str:
    lines = [f"# slice {name}", "[slice]"]
    if name in SLICE_PARENTS:
        lines.append(f"parent = {_q(SLICE_PARENTS[name])}")
    lines += [
        f'memory_max = "{4 - index % 3}G"',
        f"cpu_weight = {100 * (index + 1)}",
        f"pids_max = {4096 // (index + 1)}",
    ]
    if index % 2 == 0:
        lines.append("io_weight = 200")
    return "\n".join(lines) + "\n"


def _sandbox_section(i: int, name: str) -> list[str]:
    restart = ("no", "on-failure", "always")[i % 3]
    lines = [
        f"# {name}: generated sandbox {i}",
        "[sandbox]",
        f"description = {_q(f'benchmark sandbox number {i}')}",
        f'command = ["/bin/sh", "-c", {_q(f"echo {name}; exec sleep infinity")}]',
        f"slice = {_q(SLICES[i % len(SLICES)])}",
        f"restart = {_q(restart)}",
        f'environment = {{ LANG = "C.UTF-8", SANDBOX_INDEX = "{i}", ROLE = "bench" }}',
    ]
    if i % 4 == 1:
        lines.append(f'hostname = "host-{i}.bench.example"')
    if i % 6 == 5:
        lines.append('stop_timeout = "1500ms"')
    if i % 7 == 3:
        lines.append('working_directory = "/srv"')
    lines.append("")
    if i % 3 == 0:
        lines += ["[rootfs]", 'image = "busybox"', 'mode = "read-only"']
    else:
        persistent = "true" if i % 3 == 1 else "false"
        lines += ["[rootfs]", 'image = "busybox"', 'mode = "overlay"', f"persistent = {persistent}"]
    return [*lines, ""]


def _clocks_and_ids(i: int) -> list[str]:
    lines: list[str] = []
    if i % 10 == 3:
        lines += ["[namespaces]", "time = true", "", "[time]"]
        lines += ['monotonic_offset = "1h"', 'boottime_offset = "-30s"', ""]
    if i % 5 == 2:
        outside = ID_BASE + i * 65536
        ranges = f"[{{ inside = 0, outside = {outside}, count = 65536 }}]"
        lines += ["[idmap]", f"uid = {ranges}", f"gid = {ranges}", ""]
    return lines


def _mounts(i: int, name: str, sources: str) -> list[str]:
    lines = ["[[mount]]", 'type = "tmpfs"', 'target = "/tmp"', 'size = "64M"', 'mode = "1777"', ""]
    if i % 3 == 1:
        lines += ["[[mount]]", 'type = "bind"', f'source = "{sources}/{name}"']
        lines += ['target = "/data"', "read_only = true", ""]
    if i % 5 == 0:
        lines += ["[[mount]]", 'type = "overlay"', 'target = "/opt"']
        lines += [f'lower = ["{sources}/layers/base", "{sources}/layers/tools"]', ""]
    if i % 9 == 4:
        lines += ["[[mount]]", 'type = "proc"', 'target = "/run/host-proc"', ""]
    return lines


def _network(i: int, on: int, slot: int) -> list[str]:
    lines = ["[network]", f'attach = "net-{on}"']
    if i % 3 == 0:
        address = _subnet(on)[FIXED_BASE + slot]
        # Half of the fixed addresses carry their prefix, half take the network's.
        written = f"{address}/20" if slot % 2 == 0 else str(address)
        lines.append(f"address = {_q(written)}")
    elif i % 3 == 1:
        lines.append('address = "auto"')
    if on == 0 and i % 2 == 1:
        lines.append('address6 = "auto"')
    if i % 2 == 0:
        ports = [f"{{ host = {PORT_BASE + 2 * i}, sandbox = 80 }}"]
        if i % 4 == 0:
            ports.append(
                f'{{ host = {PORT_BASE + 2 * i + 1}, sandbox = 53, protocol = "udp", '
                'host_address = "127.0.0.1" }'
            )
        lines.append(f"ports = [{', '.join(ports)}]")
    return [*lines, ""]


def _resources(i: int) -> list[str]:
    memory = 64 + (i % 8) * 32
    lines = ["[resources]", f'memory_max = "{memory}M"', f'memory_high = "{memory * 3 // 4}M"']
    lines += [f'cpu_max = "{25 * (1 + i % 8)}%"', f"pids_max = {32 + i % 64}"]
    if i % 2 == 0:
        lines += [f"cpu_weight = {50 + i % 200}", "io_weight = 100"]
    return [*lines, ""]


def _security(i: int) -> list[str]:
    if i % 4 == 2:
        caps = '["CAP_NET_BIND_SERVICE", "CAP_CHOWN", "CAP_SETUID", "CAP_SETGID"]'
        return ["[security]", f"capabilities = {caps}", 'seccomp = "default"', ""]
    if i % 11 == 7:
        return ["[security]", 'capabilities = "os"', "no_new_privileges = false", ""]
    return []


def sandbox_unit(i: int, slots: dict[int, int], sources: str) -> str:
    """Sandbox `i`; every eighth has no network, the others go round the networks."""
    name = sandbox_name(i)
    lines = _sandbox_section(i, name) + _clocks_and_ids(i) + _mounts(i, name, sources)
    if i % 8 != 7:
        on = i % NETWORKS
        lines += _network(i, on, slots.get(on, 0))
        slots[on] = slots.get(on, 0) + 1
    lines += _resources(i) + _security(i)
    return "\n".join(lines).rstrip("\n") + "\n"


def sandbox_name(i: int) -> str:
    return f"sb-{i:04d}"


def generate(directory: str, units: int) -> Counts:
    """Write `units` unit files into `directory` (made if missing; it must hold no units)."""
    if not FIXED_UNITS < units <= MAX_UNITS:
        raise ValueError(f"units must be between {FIXED_UNITS + 1} and {MAX_UNITS}")
    os.makedirs(directory, exist_ok=True)
    if any(entry.endswith(".toml") for entry in os.listdir(directory)):
        raise ValueError(f"{directory} already holds unit files")
    files: dict[str, str] = {}
    for index in range(NETWORKS):
        files[f"net-{index}.network.toml"] = network_unit(index)
    for index, name in enumerate(SLICES):
        files[f"{name}.slice.toml"] = slice_unit(name, index)
    slots: dict[int, int] = {}
    sandboxes = units - FIXED_UNITS
    # The bind and overlay sources, beside the units (the loader reads only *.toml): plan and
    # apply check that they exist on the host.
    sources = os.path.join(os.path.abspath(directory), "sources")
    for sub in ("layers/base", "layers/tools", *map(sandbox_name, range(1, sandboxes, 3))):
        os.makedirs(os.path.join(sources, sub))
    for i in range(sandboxes):
        files[f"{sandbox_name(i)}.sandbox.toml"] = sandbox_unit(i, slots, sources)
    for filename, text in files.items():
        with open(os.path.join(directory, filename), "w", encoding="utf-8") as handle:
            handle.write(text)
    return Counts(sandboxes, NETWORKS, len(SLICES))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a valid unit directory for benchmarks.")
    parser.add_argument("directory", metavar="DIR", help="where to write (made if missing)")
    parser.add_argument("--units", type=int, default=100, help="how many units (default 100)")
    args = parser.parse_args(argv)
    try:
        counts = generate(args.directory, args.units)
    except (ValueError, OSError) as exc:
        print(f"gen_units: {exc}", file=sys.stderr)
        return 2
    print(
        f"{args.directory}: {counts.sandboxes} sandboxes, {counts.networks} networks, "
        f"{counts.slices} slices"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
