"""A valid unit directory of a given size, for load.py (by hand: `python bench/gen_units.py DIR
[UNITS]`): 4 networks (one dual stack), 6 nested slices (two chains three deep) and UNITS - 10
sandboxes spread over them, with mounts of every type (their sources made under DIR/sources),
unique host ports, limits, id maps, clock offsets and a mix of fixed and "auto" addresses. The
output depends only on DIR and UNITS.
"""

from __future__ import annotations

import ipaddress
import os
import sys

SLICES = {"apps": "", "apps-web": "apps", "apps-web-edge": "apps-web"}  # name: parent
SLICES |= {"jobs": "", "jobs-batch": "jobs", "jobs-batch-low": "jobs-batch"}
NETWORKS = 4
FIXED = 2058  # each network is a /20: fixed addresses from host 2058 up, "auto" ones from below
CAPABILITIES = '["CAP_NET_BIND_SERVICE", "CAP_CHOWN", "CAP_SETUID", "CAP_SETGID"]'


def when(condition: bool, *lines: str) -> list[str]:
    return list(lines) if condition else []


def subnet(index: int) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(f"10.90.{16 * index}.0/20")


def network_unit(index: int) -> list[str]:
    return [
        f"# network {index}: a bridge for about a quarter of the sandboxes",
        "[network]",
        f'subnet = "{subnet(index)}"',
        *when(
            index == 0, 'subnet6 = "fd00:90::/64"   # dual stack: its sandboxes get both families'
        ),
        *when(index == 1, f'gateway = "{subnet(index)[1]}"'),
        *when(index == 2, f'bridge = "bench-br{index}"'),
        f"nat = {str(index % 2 == 0).lower()}",
    ]


def slice_unit(index: int, name: str) -> list[str]:
    return [
        f"# slice {name}",
        "[slice]",
        *when(bool(SLICES[name]), f'parent = "{SLICES[name]}"'),
        f'memory_max = "{4 - index % 3}G"',
        f"cpu_weight = {100 * (index + 1)}",
        f"pids_max = {4096 // (index + 1)}",
        *when(index % 2 == 0, "io_weight = 200"),
    ]


def sandbox_unit(i: int, slot: int, sources: str) -> list[str]:
    """Sandbox `i`, the `slot`-th on its network; every eighth has no network."""
    name, memory, overlay = f"sb-{i:04d}", 64 + (i % 8) * 32, i % 3 != 0
    ids = f"[{{ inside = 0, outside = {1_000_000 + i * 65536}, count = 65536 }}]"
    return [
        f"# {name}: generated sandbox {i}",
        "[sandbox]",
        f'description = "benchmark sandbox number {i}"',
        f'command = ["/bin/sh", "-c", "echo {name}; exec sleep infinity"]',
        f'slice = "{list(SLICES)[i % len(SLICES)]}"',
        f'restart = "{("no", "on-failure", "always")[i % 3]}"',
        f'environment = {{ LANG = "C.UTF-8", SANDBOX_INDEX = "{i}", ROLE = "bench" }}',
        *when(i % 4 == 1, f'hostname = "host-{i}.bench.example"'),
        *when(i % 6 == 5, 'stop_timeout = "1500ms"'),
        *when(i % 7 == 3, 'working_directory = "/srv"'),
        "",
        "[rootfs]",
        'image = "busybox"',
        f'mode = "{"overlay" if overlay else "read-only"}"',
        *when(overlay, f"persistent = {str(i % 3 == 1).lower()}"),
        "",
        *when(i % 10 == 3, "[namespaces]", "time = true", "", "[time]"),
        *when(i % 10 == 3, 'monotonic_offset = "1h"', 'boottime_offset = "-30s"', ""),
        *when(i % 5 == 2, "[idmap]", f"uid = {ids}", f"gid = {ids}", ""),
        *("[[mount]]", 'type = "tmpfs"', 'target = "/tmp"', 'size = "64M"', 'mode = "1777"', ""),
        *when(i % 3 == 1, "[[mount]]", 'type = "bind"', f'source = "{sources}/{name}"'),
        *when(i % 3 == 1, 'target = "/data"', "read_only = true", ""),
        *when(i % 5 == 0, "[[mount]]", 'type = "overlay"', 'target = "/opt"'),
        *when(i % 5 == 0, f'lower = ["{sources}/layers/base", "{sources}/layers/tools"]', ""),
        *when(i % 9 == 4, "[[mount]]", 'type = "proc"', 'target = "/run/host-proc"', ""),
        *(network(i, slot) if i % 8 != 7 else []),
        "[resources]",
        f'memory_max = "{memory}M"',
        f'memory_high = "{memory * 3 // 4}M"',
        f'cpu_max = "{25 * (1 + i % 8)}%"',
        f"pids_max = {32 + i % 64}",
        *when(i % 2 == 0, f"cpu_weight = {50 + i % 200}", "io_weight = 100"),
        "",
        *when(i % 4 == 2, "[security]", f"capabilities = {CAPABILITIES}", 'seccomp = "default"'),
        *when(i % 4 != 2 and i % 11 == 7, "[security]", 'capabilities = "os"'),
        *when(i % 4 != 2 and i % 11 == 7, "no_new_privileges = false"),
    ]


def network(i: int, slot: int) -> list[str]:
    """Round the networks; a third with a fixed address (half with the prefix), a third "auto"."""
    on = i % NETWORKS
    fixed = subnet(on)[FIXED + slot]
    udp = (
        f'{{ host = {20001 + 2 * i}, sandbox = 53, protocol = "udp", host_address = "127.0.0.1" }}'
    )
    ports = [f"{{ host = {20000 + 2 * i}, sandbox = 80 }}", *when(i % 4 == 0, udp)]
    return [
        "[network]",
        f'attach = "net-{on}"',
        *when(i % 3 == 0, f'address = "{fixed}/20"' if slot % 2 == 0 else f'address = "{fixed}"'),
        *when(i % 3 == 1, 'address = "auto"'),
        *when(on == 0 and i % 2 == 1, 'address6 = "auto"'),
        *when(i % 2 == 0, f"ports = [{', '.join(ports)}]"),
        "",
    ]


def generate(directory: str, units: int) -> int:
    """Write `units` unit files into `directory` (made if missing); the sandboxes' count."""
    sandboxes, fixed = units - NETWORKS - len(SLICES), NETWORKS + len(SLICES)
    if not 0 < sandboxes <= 2000:
        raise ValueError(f"units must be between {fixed + 1} and {fixed + 2000}")
    sources = os.path.join(os.path.abspath(directory), "sources")  # plan checks they exist
    for sub in ("layers/base", "layers/tools", *(f"sb-{i:04d}" for i in range(1, sandboxes, 3))):
        os.makedirs(os.path.join(sources, sub))
    files = {f"net-{n}.network.toml": network_unit(n) for n in range(NETWORKS)}
    files |= {f"{name}.slice.toml": slice_unit(n, name) for n, name in enumerate(SLICES)}
    slots = [0] * NETWORKS
    for i in range(sandboxes):
        files[f"sb-{i:04d}.sandbox.toml"] = sandbox_unit(i, slots[i % NETWORKS], sources)
        slots[i % NETWORKS] += i % 8 != 7
    for filename, lines in files.items():
        with open(os.path.join(directory, filename), "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines).rstrip("\n") + "\n")
    return sandboxes


if __name__ == "__main__":
    directory, units = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 100
    print(f"{directory}: {generate(directory, units)} sandboxes, 4 networks, 6 slices")
