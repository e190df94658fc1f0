"""The peers' common ground: bwrap's and crun's runs on the busybox rootfs, and the bash script a
user would write by hand for sandboxes on one network, which netscale.py and scale.py time.

The script's network part, in both: a bridge with the gateway address, `ip_forward` and the
bridge's `route_localnet` on, one `nft -f` for a table with the guard, the NAT chains and
masquerade (as sandman makes them); per sandbox, once its veth's host end is on the bridge, the
address, eth0 up and the default route inside, a DNAT rule in prerouting and one in output for
its port forward; at the end, the bridge and the table deleted. Each benchmark adds its own steps
(a named netns; a crun container and its cgroups). A script runs as `bash FILE N` (N sandboxes)
below a header that sets PREFIX, BRIDGE, TABLE, NET (the subnet's first three octets), PORTS (the
first host port minus one) and the benchmark's own variables.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import json
import os
import random
import secrets
import shutil
import subprocess
import textwrap
from collections.abc import Iterator

from harness import SLEEP, BenchError, Session, clean_env, links, nft_tables, wait_links_gone

UNIFIED = "/sys/fs/cgroup/unified"


def bwrap_true(rootfs: str, *flags: str) -> tuple[str, ...]:
    """bwrap's run of /bin/true on the rootfs, with /proc and /dev, after `flags`."""
    return ("bwrap", *flags, "--bind", rootfs, "/", "--proc", "/proc", "--dev", "/dev", "/bin/true")


def cgroup_layout() -> str:
    """unified (cgroup2 at /sys/fs/cgroup), hybrid (v1 and a cgroup2 at .../unified) or legacy."""
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        return "unified"
    return "hybrid" if os.path.exists(f"{UNIFIED}/cgroup.controllers") else "legacy"


def crun_bundle(session: Session, rootfs: str) -> str:
    """`crun spec`'s config.json with `sleep 1000`, no terminal, the rootfs writable (namespaces
    pid, network, ipc, uts, mount; no user namespace)."""
    bundle = os.path.join(session.workdir, "bundle")
    os.mkdir(bundle)
    session.output(("crun", "spec", "--bundle", bundle))
    with open(os.path.join(bundle, "config.json"), "r+", encoding="utf-8") as handle:
        config = json.load(handle)
        config["process"].update(args=list(SLEEP), terminal=False)
        config["root"] = {"path": rootfs, "readonly": False}
        handle.seek(0)
        handle.truncate()
        json.dump(config, handle, indent=1)
    return bundle


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, 0x00020000) != 0:  # CLONE_NEWNS
        raise OSError(ctypes.get_errno(), f"setns: {os.strerror(ctypes.get_errno())}")


class CrunMounts:
    """Where crun runs: on a v1/v2 hybrid host, which crun 1.8 refuses (even with
    --cgroup-manager=disabled), a mount namespace like the host's without /sys/fs/cgroup/unified,
    held by an fd and entered with setns around crun's runs, untimed, so that crun starts as a
    plain child with no wrapper timed with it, while sandman keeps the host's namespace.
    Elsewhere the host's namespace."""

    def __init__(self, session: Session) -> None:
        self.fd: int | None = None
        if cgroup_layout() != "hybrid":
            return
        script = f"umount {UNIFIED} && echo ready && exec sleep 600"
        argv = ("unshare", "--mount", "--propagation", "private", "sh", "-c", script)
        pipe = subprocess.PIPE
        holder = subprocess.Popen(argv, stdout=pipe, stderr=pipe, text=True, env=clean_env())
        try:
            assert holder.stdout is not None and holder.stderr is not None
            if holder.stdout.readline().strip() != "ready":
                holder.wait()
                raise BenchError(f"cannot unmount {UNIFIED}: {holder.stderr.read().strip()}")
            self.fd = os.open(f"/proc/{holder.pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        finally:
            holder.kill()
            holder.communicate()
        session.cleanup.add("the private mount namespace", lambda: os.close(self.fd or -1))

    def where(self) -> str:
        if self.fd is None:
            return "in the host's mount namespace"
        return f"in a private mount namespace without {UNIFIED} (a hybrid host: crun refuses it)"

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        if self.fd is None:
            yield
            return
        cwd, host = os.getcwd(), os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        _setns(self.fd)
        try:
            os.chdir(cwd)
            yield
        finally:
            _setns(host)
            os.close(host)
            os.chdir(cwd)


# --- the hand-written network script -------------------------------------------------------------

NETWORK_SETUP = r"""
ip link add "$BRIDGE" type bridge
ip addr add "$NET.1/24" dev "$BRIDGE"
ip link set "$BRIDGE" up
echo 1 > /proc/sys/net/ipv4/ip_forward
echo 1 > "/proc/sys/net/ipv4/conf/$BRIDGE/route_localnet"
nft -f - <<EOF
table inet $TABLE {
    chain guard { type filter hook prerouting priority raw; iif != "lo" ip daddr 127.0.0.0/8 drop; }
    chain prerouting { type nat hook prerouting priority dstnat; }
    chain output { type nat hook output priority -100; }
    chain postrouting {
        type nat hook postrouting priority srcnat;
        ip saddr 127.0.0.0/8 oif != "lo" masquerade
        ip saddr $NET.0/24 ip daddr != $NET.0/24 masquerade
    }
}
EOF
"""
# Sandbox i's names: its netns (in scale.py its container too) is $name.
SANDBOX_NAMES = 'name="$PREFIX-$i" veth="${PREFIX}v$i" addr="$NET.$((i + 1))" port=$((PORTS + i))'
# Once eth0 is in the netns $name: the address, the route, the two DNAT rules.
SANDBOX_NETWORK = r"""
ip -n "$name" addr add "$addr/24" dev eth0
ip -n "$name" link set eth0 up
ip -n "$name" route add default via "$NET.1"
nft add rule inet "$TABLE" prerouting ip daddr 127.0.0.1 tcp dport "$port" dnat ip to "$addr:80"
nft add rule inet "$TABLE" output ip daddr 127.0.0.1 tcp dport "$port" dnat ip to "$addr:80"
"""
NETWORK_TEARDOWN = 'ip link del "$BRIDGE"\nnft delete table inet "$TABLE"'


def per_sandbox(*steps: str, before: str = "", after: str = "") -> str:
    """A script's text: `before`, then `steps` for each sandbox i in 1..$1, then `after`."""
    body = "\n".join(textwrap.indent(textwrap.dedent(step).strip("\n"), "    ") for step in steps)
    loop = f'for i in $(seq 1 "$1"); do\n{body}\ndone\n'
    return before.lstrip("\n") + loop + (after + "\n" if after else "")


def network_setup(*steps: str) -> str:
    """The script's setup: the network, then per sandbox its names, `steps` and its network."""
    return per_sandbox(SANDBOX_NAMES, *steps, SANDBOX_NETWORK, before=NETWORK_SETUP)


def network_teardown(*steps: str) -> str:
    return per_sandbox(*steps, after=NETWORK_TEARDOWN)


class Names:
    """The script's objects, all under one random prefix (netns PREFIX-I, veths PREFIXvI, bridge
    PREFIXbr, table PREFIX), and two free subnets, sandman's and the script's; whatever the
    script leaves and ip_forward are put back at the end."""

    def __init__(self, session: Session) -> None:
        for tool in ("ip", "nft"):
            if shutil.which(tool) is None:
                raise BenchError(f"{tool} is missing: bench/run installs it")
        session.cleanup.restore_at_end("/proc/sys/net/ipv4/ip_forward")
        self.session, self.prefix = session, f"nsb{secrets.token_hex(2)}"
        self.sandman_net, self.script_net = free_subnets(2)
        session.cleanup.add(f"the script's objects ({self.prefix}*)", self.remove_leftovers)

    def write(self, ports: int, bodies: dict[str, str], **more: str) -> dict[str, str]:
        """WORKDIR/WHAT.sh for each body, below the header; their paths by WHAT."""
        net = str(self.script_net.network_address).rsplit(".", 1)[0]
        variables = {"PREFIX": self.prefix, "BRIDGE": f"{self.prefix}br", "TABLE": self.prefix}
        variables |= {"NET": net, "PORTS": str(ports), **more}
        head = "#!/bin/bash\nset -euo pipefail\n"
        head += " ".join(f"{k}={v}" for k, v in variables.items())
        paths = {what: os.path.join(self.session.workdir, f"{what}.sh") for what in bodies}
        for what, body in bodies.items():
            with open(paths[what], "w", encoding="utf-8") as handle:
                handle.write(f"{head}\n{body}")
        return paths

    def settle(self) -> None:
        wait_links_gone(self.prefix)

    def remove_leftovers(self) -> None:
        """An interrupted script's netns, links and table (crun's containers are scale.py's)."""
        for netns in entries("/run/netns", f"{self.prefix}-"):
            _quiet("ip", "netns", "del", os.path.basename(netns))
        for link in (n for n in links() if n.startswith(self.prefix)):
            _quiet("ip", "link", "del", link)
        if self.prefix in nft_tables():
            _quiet("nft", "delete", "table", "inet", self.prefix)
        with contextlib.suppress(BenchError):
            self.settle()
        left = [f"link {n}" for n in links() if n.startswith(self.prefix)]
        left += [f"table inet {self.prefix}"] if self.prefix in nft_tables() else []
        if left:
            raise BenchError(f"the script's objects are still there: {', '.join(left[:5])}")


def entries(directory: str, prefix: str) -> list[str]:
    """The paths in `directory` whose names start with `prefix` (none if it is not there)."""
    if not os.path.isdir(directory) or os.path.islink(directory):
        return []
    return [os.path.join(directory, e) for e in os.listdir(directory) if e.startswith(prefix)]


def _quiet(*argv: str) -> None:
    subprocess.run(argv, env=clean_env(), capture_output=True, check=False)


def free_subnets(count: int, prefixlen: int = 24) -> list[ipaddress.IPv4Network]:
    """Random 10.2xx.X.0/PREFIXLEN (24 or shorter) that overlap no IPv4 address or route of the
    host, in any table."""
    used = []
    for argv in (("ip", "-4", "-o", "addr", "show"), ("ip", "-4", "route", "show", "table", "all")):
        output = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
        for token in (t for t in output.split() if t.count(".") == 3):
            with contextlib.suppress(ValueError):
                used.append(ipaddress.IPv4Network(token, strict=False))
    picked: list[ipaddress.IPv4Network] = []
    rng = random.SystemRandom()
    step = 1 << (24 - prefixlen)
    for _ in range(1000):
        third = rng.randrange(0, 256, step)
        net = ipaddress.IPv4Network(f"10.{rng.randint(201, 254)}.{third}.0/{prefixlen}")
        if not any(net.overlaps(other) for other in (*used, *picked)):
            picked.append(net)
            if len(picked) == count:
                return picked
    raise BenchError(f"no free 10.2xx.X.0/{prefixlen} subnet on this host")
