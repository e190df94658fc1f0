"""The network benchmark: per-sandbox network setup and teardown at 1 and 100 sandboxes, against a
shell script doing the same with iproute2 and nft, and the netlink dumps of a no-op apply.

`python bench/netscale.py [--runs 5] [--runs-many 3] [--warmups 1] [--python PATH] [--no-install]`

As root. In one session, interleaved (every round runs every contender once, in turn):

- `sandman apply DIR` of 1 and of 100 `/bin/sleep 1000` sandboxes attached to one network (a free
  private 10.2xx.X.0/24, `nat = true`, one port forward each from 127.0.0.1), then `sandman
  destroy DIR`, each timed; the same sandboxes without `[network]` and without the network unit,
  timed the same way. The network's cost is the difference, with and without, round by round;
- a bash script doing the same by hand, one `ip` or `nft` process per step (`ip netns add`, a
  veth born with its peer in the netns, the host end on a bridge and up, address, links up and a
  default route inside, a table with masquerade and a DNAT rule per forward), then its teardown
  (`ip netns del` each, the bridge, the table), each timed; and its netns part alone
  (`ip netns add`, `lo` up / `ip netns del`), for information.

After the rounds: 100 sandboxes are applied again, under cProfile (profile_cli.py); a no-op
`sandman apply` runs under `strace -f -e trace=sendto,sendmsg`, whose netlink requests with
NLM_F_DUMP are counted; they are destroyed under cProfile, then applied and destroyed once more
with timers around sandman's network functions (time_calls.py, no profiler); the same without
`[network]`, for the per-sandbox difference; and `python -X importtime` of the 1-sandbox apply
with and without a network. It prints one table with the issue's targets. Missing tools (nft,
ip, strace) are installed with apt-get (not with `--no-install`). Everything it makes
(sandboxes, the script's namespaces, links and table, the temporary directory) is removed at the
end, on an error and on Ctrl-C or SIGTERM too; it reports and never fails on a time.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import ipaddress
import json
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import netscript
from common import (
    BenchError,
    Peer,
    Stats,
    clean_env,
    describe_host,
    emit,
    module_version,
    ms,
    parse_rounds,
    real_python,
    require_modules,
    restore_at_end,
    round_options,
    run_main,
    table,
)
from load import ImportSummary, importtime
from netscript import (
    NETWORK_SETUP,
    NETWORK_TEARDOWN,
    SANDBOX_NAMES,
    SANDBOX_NETWORK,
    per_sandbox,
)
from spawn import (
    Label,
    Runner,
    Session,
    StepError,
    _indent,
    _short,
    build_image,
    load_profile,
    run_session,
    tool_version,
)

MANY = 100
COMMAND = ("/bin/sleep", "1000")
LIMIT = 1.0  # sandman's network time over the script's, at MANY sandboxes
DUMP_LIMIT = 3  # netlink dump requests of a no-op apply of MANY sandboxes
TARGET = (
    f"sandman at most {LIMIT:.1f}x the script's time at {MANY} sandboxes; an apply with {MANY} "
    f"sandboxes and nothing to change making no more than {DUMP_LIMIT} netlink dump requests"
)
# The tools and the Debian packages that bring them.
PACKAGES = {"ip": "iproute2", "nft": "nftables", "strace": "strace"}
SANDMAN_PORTS = 42000  # host ports BASE+1..BASE+N, on 127.0.0.1
SCRIPT_PORTS = 43000
SANDBOX_PORT = 80
SETTLE_TIMEOUT = 60.0  # seconds for the kernel to free a torn-down netns's veth
STRACE_TIMEOUT = 120.0
IMPORTTIME_RUNS = 3
NETNS_DIR = "/run/netns"
FORWARDING = "/proc/sys/net/ipv4/ip_forward"

# --- the script -------------------------------------------------------------------------------

# What a user would write by hand (netscript.py): one `ip` or `nft` command per step, a named
# netns per sandbox. `$1` is the number of sandboxes; the names, the subnet and the first port
# are set above this text.
SETUP_SCRIPT = per_sandbox(
    SANDBOX_NAMES,
    r"""
    ip netns add "$name"
    ip link add "$veth" type veth peer name eth0 netns "$name"
    ip link set "$veth" master "$BRIDGE" up
    ip -n "$name" link set lo up
    """,
    SANDBOX_NETWORK,
    before=NETWORK_SETUP,
)
TEARDOWN_SCRIPT = per_sandbox('ip netns del "$PREFIX-$i"', after=NETWORK_TEARDOWN)
NETNS_SETUP_SCRIPT = per_sandbox('ip netns add "$PREFIX-$i"\nip -n "$PREFIX-$i" link set lo up')
NETNS_TEARDOWN_SCRIPT = per_sandbox('ip netns del "$PREFIX-$i"')


@dataclass(frozen=True)
class Names:
    """The script's objects, all under one random prefix, and the two subnets."""

    prefix: str  # nsb + 4 hex: netns PREFIX-I, veths PREFIXvI, bridge PREFIXbr, table PREFIX
    sandman_net: ipaddress.IPv4Network
    script_net: ipaddress.IPv4Network

    @property
    def bridge(self) -> str:
        return f"{self.prefix}br"

    @property
    def network_unit(self) -> str:
        return self.prefix

    def script_header(self, ports: int, **more: str) -> str:
        """The lines above the script's text (netscript.py): strict mode and its variables."""
        net = ".".join(str(self.script_net.network_address).split(".")[:3])
        extra = "".join(f" {key}={value}" for key, value in more.items())
        return (
            "#!/bin/bash\nset -euo pipefail\n"
            f"PREFIX={self.prefix} BRIDGE={self.bridge} TABLE={self.prefix} NET={net} "
            f"PORTS={ports}{extra}\n"
        )


def _used_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 address and route prefix the host has, in any table."""
    found = []
    for argv in (("ip", "-4", "-o", "addr", "show"), ("ip", "-4", "route", "show", "table", "all")):
        output = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
        for token in output.split():
            if token.count(".") != 3:
                continue
            with contextlib.suppress(ValueError):
                found.append(ipaddress.IPv4Network(token, strict=False))
    return found


def pick_names() -> Names:
    """A random prefix, and two 10.2xx.X.0/24 subnets that overlap nothing on the host."""
    used = _used_networks()
    picked: list[ipaddress.IPv4Network] = []
    rng = random.SystemRandom()
    for _ in range(1000):
        candidate = ipaddress.IPv4Network(f"10.{rng.randint(201, 254)}.{rng.randint(0, 255)}.0/24")
        if not any(candidate.overlaps(other) for other in (*used, *picked)):
            picked.append(candidate)
            if len(picked) == 2:
                return Names(f"nsb{secrets.token_hex(2)}", picked[0], picked[1])
    raise BenchError("no free 10.2xx.X.0/24 subnet on this host")


def _links() -> list[str]:
    return os.listdir("/sys/class/net")


def wait_links_gone(prefixes: tuple[str, ...]) -> None:
    """Until no link name starts with a prefix: a deleted netns takes its veth with it, but the
    kernel frees it a little later, and the next run makes the same names again."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        left = [name for name in _links() if name.startswith(prefixes)]
        if not left:
            return
        if time.monotonic() > deadline:
            raise StepError(f"links still there {SETTLE_TIMEOUT:.0f} s after teardown: {left[:5]}")
        time.sleep(0.01)


def remove_script_objects(names: Names) -> list[str]:
    """Whatever the script left (an interrupted run): its netns, links and table; returns what
    is still there after."""
    env = clean_env()
    if os.path.isdir(NETNS_DIR):
        for ns in os.listdir(NETNS_DIR):
            if ns.startswith(f"{names.prefix}-"):
                subprocess.run(
                    ["ip", "netns", "del", ns], env=env, capture_output=True, check=False
                )
    for link in _links():
        if link.startswith(names.prefix):
            subprocess.run(["ip", "link", "del", link], env=env, capture_output=True, check=False)
    if shutil.which("nft"):
        table_argv = ["nft", "delete", "table", "inet", names.prefix]
        subprocess.run(table_argv, env=env, capture_output=True, check=False)
    with contextlib.suppress(StepError):
        wait_links_gone((names.prefix,))
    left = [f"link {n}" for n in _links() if n.startswith(names.prefix)]
    if os.path.isdir(NETNS_DIR):
        left += [f"netns {n}" for n in os.listdir(NETNS_DIR) if n.startswith(names.prefix)]
    if shutil.which("nft") and names.prefix in _nft_tables():
        left.append(f"table inet {names.prefix}")
    return left


def _nft_tables() -> str:
    return subprocess.run(
        ["nft", "list", "tables"], capture_output=True, text=True, env=clean_env(), check=False
    ).stdout


# --- the tools --------------------------------------------------------------------------------


def install_tools(allowed: bool) -> list[str]:
    """Install what is missing of ip, nft and strace from Debian; returns notes. ip and nft are
    required (BenchError without them); without strace the dump count is skipped."""
    missing = {tool: pkg for tool, pkg in PACKAGES.items() if shutil.which(tool) is None}
    if not missing:
        return []
    packages = sorted(set(missing.values()))
    notes = []
    if allowed and shutil.which("apt-get") is not None:
        env = {**clean_env(), "DEBIAN_FRONTEND": "noninteractive"}
        known = subprocess.run(
            ["apt-cache", "show", *packages], capture_output=True, env=env, check=False
        )
        if known.returncode != 0:
            notes.append("apt-get update (apt-cache did not know the packages)")
            _progress("apt-get update")
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, check=False)
        _progress(f"apt-get install -y {' '.join(packages)}")
        result = subprocess.run(
            ["apt-get", "install", "-y", "-q", *packages],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        tail = " ".join((result.stderr or result.stdout).strip().splitlines()[-2:])
        for tool, pkg in missing.items():
            if shutil.which(tool) is None:
                notes.append(f"{tool}: `apt-get install -y {pkg}` failed: {tail}")
            else:
                notes.append(f"installed {pkg} (apt-get install -y)")
    still = [tool for tool in ("ip", "nft") if shutil.which(tool) is None]
    if still:
        how = "--no-install given" if not allowed else "; ".join(notes) or "no apt-get"
        raise BenchError(
            f"{', '.join(still)} missing ({how}): `apt-get install "
            f"{' '.join(PACKAGES[t] for t in still)}`"
        )
    return notes


def _progress(text: str, end: str = "\n") -> None:
    if not sys.stderr.isatty():
        return
    if end:
        print(f"  {text}", file=sys.stderr, flush=True)
    else:
        print(f"\r  {text}" + " " * 10, end="", file=sys.stderr, flush=True)


# --- sandman's side ---------------------------------------------------------------------------


def instance_tag(state_dir: str) -> str:
    """sandman.units.names.instance_tag, without importing sandman into the benchmark (it may
    time another interpreter): `s` + 3 hex digits of the state dir's path."""
    path = os.path.normpath(os.path.abspath(state_dir))
    return "s" + hashlib.sha256(path.encode()).hexdigest()[:3]


def tag_in_use(tag: str) -> bool:
    """Another sandman instance (a test run) with the same tag: links, cgroups or a table."""
    if any(name.startswith((f"{tag}-", f"{tag}b-")) for name in _links()):
        return True
    for hierarchy in ("", "memory", "pids", "cpu", "unified"):
        if os.path.exists(os.path.join("/sys/fs/cgroup", hierarchy, f"sandman-{tag}")):
            return True
    return bool(shutil.which("nft")) and f"sandman_{tag}" in _nft_tables()


@dataclass
class Units:
    """A unit directory with its own state dir (its own instance tag)."""

    directory: str
    state: str
    names: tuple[str, ...]
    network: bool

    @property
    def tag(self) -> str:
        return instance_tag(self.state)


def write_units(
    session: Session, names: Names, count: int, network: bool, taken: set[str]
) -> Units:
    kind = "net" if network else "bare"
    directory = os.path.join(session.workdir, f"units-{kind}-{count}")
    suffix = 0
    while True:  # a state dir whose tag no other instance, nor another variant here, uses
        state = os.path.join(
            session.workdir, f"state-{kind}-{count}" + (f"-{suffix}" if suffix else "")
        )
        tag = instance_tag(state)
        if tag not in taken and not tag_in_use(tag):
            taken.add(tag)
            break
        suffix += 1
    os.makedirs(directory)
    sandboxes = tuple(f"n{i:03d}" for i in range(1, count + 1))
    if network:
        path = os.path.join(directory, f"{names.network_unit}.network.toml")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(f'[network]\nsubnet = "{names.sandman_net}"\nnat = true\n')
    for index, name in enumerate(sandboxes, start=1):
        text = f"[sandbox]\ncommand = {json.dumps(list(COMMAND))}\n"
        if network:
            port = SANDMAN_PORTS + index
            forward = f'host = {port}, sandbox = {SANDBOX_PORT}, host_address = "127.0.0.1"'
            text += f'\n[network]\nattach = "{names.network_unit}"\nports = [{{ {forward} }}]\n'
        with open(os.path.join(directory, f"{name}.sandbox.toml"), "w", encoding="utf-8") as f:
            f.write(text)
    return Units(directory, state, sandboxes, network)


def has_records(units: Units) -> bool:
    for kind in ("sandboxes", "networks"):
        path = os.path.join(units.state, kind)
        if os.path.isdir(path) and any(n.endswith(".json") for n in os.listdir(path)):
            return True
    return False


def sandman_leftovers(units: Units) -> list[str]:
    """What of the instance is still on the host after its destroy."""
    tag = units.tag
    left = [f"link {n}" for n in _links() if n.startswith((f"{tag}-", f"{tag}b-"))]
    for hierarchy in ("memory", "pids", "unified", ""):
        path = os.path.join("/sys/fs/cgroup", hierarchy, f"sandman-{tag}")
        if os.path.isdir(path) and any(e.is_dir() for e in os.scandir(path)):
            left.append(f"cgroup {path} with children")
    if shutil.which("nft") and f"sandman_{tag}" in _nft_tables():
        left.append(f"table inet sandman_{tag}")
    return left


# --- the contenders ---------------------------------------------------------------------------


@dataclass
class Contender:
    """One thing to set up and tear down per round, both timed; `settle` runs untimed after."""

    label: str
    side: str  # "sandman" or "script"
    count: int
    rounds: int
    setup: Callable[[], None]
    teardown: Callable[[], None]
    settle: Callable[[], None] = lambda: None
    up: list[float] = field(default_factory=list)
    down: list[float] = field(default_factory=list)


def sandman_contender(session: Session, units: Units, rounds: int) -> Contender:
    apply = session.sandman("apply", units.directory, *session.paths(units.state))
    destroy = session.sandman("destroy", units.directory, *session.paths(units.state))

    def leftovers() -> None:
        if has_records(units):
            session.runner.run(destroy, fresh=True)
        with contextlib.suppress(StepError):
            wait_links_gone((f"{units.tag}-", f"{units.tag}b-"))
        left = sandman_leftovers(units)
        if left:
            raise StepError(f"left after `sandman destroy`: {', '.join(left[:5])}")

    session.cleanup.add(f"sandman destroy {units.directory}", leftovers)
    tag = units.tag
    kind = "with [network]" if units.network else "without [network]"
    return Contender(
        f"sandman, {len(units.names)} {kind}",
        "sandman",
        len(units.names),
        rounds,
        setup=lambda: session.runner.run(apply, fresh=True),
        teardown=lambda: session.runner.run(destroy, fresh=True),
        settle=(lambda: wait_links_gone((f"{tag}-", f"{tag}b-"))) if units.network else _nothing,
    )


def _nothing() -> None:
    pass


def script_contender(
    session: Session, names: Names, label: str, scripts: tuple[str, str], *, count: int, rounds: int
) -> Contender:
    setup, teardown = scripts
    return Contender(
        label,
        "script",
        count,
        rounds,
        setup=lambda: session.runner.run(("bash", setup, str(count)), fresh=True),
        teardown=lambda: session.runner.run(("bash", teardown, str(count)), fresh=True),
        settle=lambda: wait_links_gone((names.prefix,)),
    )


def write_scripts(workdir: str, names: Names) -> dict[str, str]:
    bodies = {
        "setup": SETUP_SCRIPT,
        "teardown": TEARDOWN_SCRIPT,
        "netns-setup": NETNS_SETUP_SCRIPT,
        "netns-teardown": NETNS_TEARDOWN_SCRIPT,
    }
    return netscript.write_scripts(workdir, names.script_header(SCRIPT_PORTS), bodies)


def run_rounds(contenders: Sequence[Contender], warmups: int) -> None:
    """Warm-ups untimed, then rounds: every contender's setup and teardown timed, in turn."""
    for index in range(warmups):
        _progress(f"warm-up {index + 1}/{warmups}", end="")
        for contender in contenders:
            contender.setup()
            contender.teardown()
            contender.settle()
    rounds = max(c.rounds for c in contenders)
    for index in range(rounds):
        _progress(f"round {index + 1}/{rounds}", end="")
        for contender in contenders:
            if index >= contender.rounds:
                continue
            start = time.perf_counter()
            contender.setup()
            middle = time.perf_counter()
            contender.teardown()
            end = time.perf_counter()
            contender.settle()
            contender.up.append((middle - start) * 1000)
            contender.down.append((end - middle) * 1000)
    if sys.stderr.isatty():
        print("\r" + " " * 40 + "\r", end="", file=sys.stderr, flush=True)


# --- checks: both sides really make a working network -----------------------------------------


def _inside(runner: Runner, where: Sequence[str]) -> str:
    """eth0's IPv4 address and the default route in a netns, as `ip` shows them."""
    address = runner.output((*where, "ip", "-4", "-o", "addr", "show", "dev", "eth0")).split()
    route = runner.output((*where, "ip", "-4", "route", "show", "default")).strip()
    return f"eth0 {address[3] if len(address) > 3 else '?'}, {route or 'no default route'}"


def check_script(session: Session, names: Names, scripts: dict[str, str]) -> str:
    """Set up one sandbox with the script, look at it, tear it down."""
    runner = session.runner
    runner.run(("bash", scripts["setup"], "1"), fresh=True)
    try:
        inside = _inside(runner, ("ip", "netns", "exec", f"{names.prefix}-1"))
        rules = runner.output(("nft", "list", "table", "inet", names.prefix)).count("dnat")
    finally:
        runner.run(("bash", scripts["teardown"], "1"), fresh=True)
        wait_links_gone((names.prefix,))
    return f"script, 1 sandbox: {inside}; {rules} dnat rules"


def check_sandman(session: Session, units: Units) -> str:
    """Apply one sandbox, look inside its netns, check that a second apply changes nothing."""
    runner = session.runner
    paths = session.paths(units.state)
    runner.run(session.sandman("apply", units.directory, *paths), fresh=True)
    try:
        record = os.path.join(units.state, "sandboxes", f"{units.names[0]}.json")
        with open(record, encoding="utf-8") as handle:
            pid = int(json.load(handle)["runtime"]["pid"])
        inside = _inside(runner, ("nsenter", f"--net=/proc/{pid}/ns/net"))
        again = runner.output(session.sandman("apply", units.directory, *paths)).strip()
    finally:
        runner.run(session.sandman("destroy", units.directory, *paths), fresh=True)
        wait_links_gone((f"{units.tag}-", f"{units.tag}b-"))
    return (
        f"sandman, 1 sandbox: {inside}; a second apply: {again.splitlines()[0] if again else '?'}"
    )


# --- the dump count ---------------------------------------------------------------------------

_NLMSG = re.compile(r"nlmsg_type=([^,]+), nlmsg_flags=([^,]+),")
NLM_F_DUMP = 0x300


@dataclass(frozen=True)
class DumpCount:
    dumps: Counter[str]  # message type -> count, requests with NLM_F_DUMP
    others: Counter[str]  # message type (flags) -> count, every other netlink request
    calls: int  # sendto/sendmsg calls
    processes: int  # pids in the trace
    output: str  # the apply's first line


def _is_dump(flags: str) -> bool:
    if "NLM_F_DUMP" in flags or ("NLM_F_ROOT" in flags and "NLM_F_MATCH" in flags):
        return True
    numbers = [int(part, 0) for part in re.findall(r"0x[0-9a-fA-F]+|\b\d+\b", flags)]
    return any(n & NLM_F_DUMP == NLM_F_DUMP for n in numbers)


def parse_strace(path: str) -> tuple[Counter[str], Counter[str], int, int]:
    dumps: Counter[str] = Counter()
    others: Counter[str] = Counter()
    calls, pids = 0, set()
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            pid, _, rest = line.partition(" ")
            pids.add(pid)
            if not rest.lstrip().startswith(("sendto(", "sendmsg(")):
                continue
            calls += 1
            for kind, flags in _NLMSG.findall(rest):
                if _is_dump(flags):
                    dumps[kind] += 1
                else:
                    others[f"{kind} ({flags})"] += 1
    return dumps, others, calls, len(pids)


def count_dumps(session: Session, units: Units) -> DumpCount | str:
    """A no-op apply of the running `units` under strace: its netlink requests."""
    if shutil.which("strace") is None:
        return "skipped: strace is not installed (`apt-get install strace`)"
    out = os.path.join(session.workdir, "strace-noop.txt")
    apply = session.sandman("apply", units.directory, *session.paths(units.state))
    argv = ("strace", "-f", "-qq", "-e", "trace=sendto,sendmsg", "-e", "signal=none", "-o", out)
    tracer = subprocess.Popen(
        (*argv, *apply),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=session.runner.env,
        cwd=session.workdir,
    )
    try:
        stdout, stderr = tracer.communicate(timeout=STRACE_TIMEOUT)
    except BaseException:  # a timeout, Ctrl-C: end the traced apply, then strace
        _end_tracer(tracer)
        raise
    if tracer.returncode != 0:
        raise StepError(
            f"`{' '.join(apply)}` under strace exited with {tracer.returncode}: {stderr}"
        )
    dumps, others, calls, processes = parse_strace(out)
    first = stdout.strip().splitlines()[0] if stdout.strip() else "(no output)"
    return DumpCount(dumps, others, calls, processes, first)


def _end_tracer(tracer: subprocess.Popen[str]) -> None:
    """SIGKILL strace's tracees (the apply and anything it forked), then strace itself."""
    children = f"/proc/{tracer.pid}/task/{tracer.pid}/children"
    with contextlib.suppress(OSError), open(children, encoding="ascii") as handle:
        for child in handle.read().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(child), signal.SIGKILL)
    try:
        tracer.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        tracer.kill()
        tracer.communicate()


def dump_report(result: DumpCount | str, units: Units) -> str:
    title = (
        f"netlink requests of a no-op `sandman apply` of {MANY} running sandboxes on the network"
    )
    if isinstance(result, str):
        return f"{title}: {result}"
    table_name = f"sandman_{units.tag}"
    lines = [
        f"{title} (strace -f -e trace=sendto,sendmsg; the apply said: {result.output!r}):",
        f"  {result.calls} sendto/sendmsg calls from {result.processes} process(es); "
        f"{sum(result.dumps.values())} with NLM_F_DUMP:",
    ]
    for kind, count in result.dumps.most_common():
        what = f" (table inet {table_name})" if "GETRULE" in kind else ""
        lines.append(f"    {count} x {kind}{what}")
    if result.others:
        lines.append("  other netlink requests:")
        for kind, count in result.others.most_common():
            lines.append(f"    {count} x {kind}")
    return "\n".join(lines)


# --- the profile ------------------------------------------------------------------------------

Profile = dict[Label, tuple[float, float]]

# (row, depth, [(file suffix, function)], own time instead of cumulative) of one command.
Phase = tuple[str, int, tuple[tuple[str, str], ...], bool]
IMPORTS: Phase = (
    "imports (every import statement)",
    0,
    (("<frozen importlib._bootstrap>", "_find_and_load"),),
    False,
)
SOCKET_CLOSE: Phase = (
    "closing sockets (socket.close, anywhere)",
    1,
    (("/socket.py", "close"),),
    False,
)
APPLY_PHASES: tuple[Phase, ...] = (
    IMPORTS,
    ("observe: gather", 0, (("sandman/observe/gather.py", "gather"),), False),
    ("load the units (read_units)", 0, (("sandman/units/read.py", "read_units"),), False),
    ("plan", 0, (("sandman/plan/diff.py", "plan"),), False),
    ("apply the plan (applier.apply)", 0, (("sandman/apply/applier.py", "apply"),), False),
    ("the network: bridge, forwarding, NAT", 1, (("sandman/apply/networks.py", "create"),), False),
    ("/etc/hosts, resolv.conf", 1, (("sandman/apply/networks.py", "name_files"),), False),
    (
        "spawn (kernel/spawn.start, finish)",
        1,
        (("sandman/kernel/spawn.py", "start"), ("sandman/kernel/spawn.py", "finish")),
        False,
    ),
    ("attach (the init waits for it)", 2, (("sandman/apply/networks.py", "attach"),), False),
    ("create_veth", 3, (("sandman/kernel/net.py", "create_veth"),), False),
    ("host socket: IPRoute() and close", 4, (("sandman/kernel/net.py", "_route"),), False),
    (
        "socket in the netns (setns there and back)",
        4,
        (("sandman/kernel/net.py", "_route_in"),),
        False,
    ),
    ("RTM_NEWLINK of the pair, peer lookup", 4, (("sandman/kernel/net.py", "ensure"),), False),
    ("bridge lookup", 4, (("sandman/kernel/net.py", "_bridge_index"),), False),
    (
        "inside: links up, address, route",
        4,
        (("sandman/kernel/net.py", "_configure_inside"),),
        False,
    ),
    ("ensure_ports", 3, (("sandman/kernel/nat.py", "ensure_ports"),), False),
    ("rule dumps (rule_payloads)", 4, (("sandman/kernel/net_dump.py", "rule_payloads"),), False),
    ("decoding rules (parse_rule)", 4, (("sandman/kernel/net_facts.py", "parse_rule"),), False),
    ("the batch (netlink.batch)", 4, (("sandman/kernel/netlink.py", "batch"),), False),
    ("route_localnet (sysctl.ensure)", 4, (("sandman/kernel/sysctl.py", "ensure"),), False),
    ("fork, wait for the children", 2, (("sandman/kernel/spawn.py", "_fork_first"),), False),
    (
        "blocked reading the children's reports (own time)",
        3,
        (("sandman/kernel/spawn.py", "_parent"),),
        True,
    ),
    (
        "refresh /etc/hosts (refresh_hosts)",
        1,
        (("sandman/apply/networks.py", "refresh_hosts"),),
        False,
    ),
    ("the record (_record)", 1, (("sandman/apply/sandboxes.py", "_record"),), False),
    SOCKET_CLOSE,
)
DESTROY_PHASES: tuple[Phase, ...] = (
    IMPORTS,
    ("observe: gather", 0, (("sandman/observe/gather.py", "gather"),), False),
    ("apply the plan (applier.apply)", 0, (("sandman/apply/applier.py", "apply"),), False),
    ("sandboxes.destroy", 1, (("sandman/apply/sandboxes.py", "destroy"),), False),
    ("remove the forwards (networks.detach)", 2, (("sandman/apply/networks.py", "detach"),), False),
    ("rule dumps (rule_payloads)", 3, (("sandman/kernel/net_dump.py", "rule_payloads"),), False),
    ("decoding rules (parse_rule)", 3, (("sandman/kernel/net_facts.py", "parse_rule"),), False),
    ("the batch (netlink.batch)", 3, (("sandman/kernel/netlink.py", "batch"),), False),
    (
        "stop the init, cgroup kill and rmdir",
        2,
        (("sandman/apply/sandboxes.py", "_remove_cgroup"),),
        False,
    ),
    (
        "the network: bridge, NAT, table (networks.destroy)",
        1,
        (("sandman/apply/networks.py", "destroy"),),
        False,
    ),
    SOCKET_CLOSE,
)


def _phase_time(profile: Profile, phase: Phase) -> float | None:
    _, _, matches, own = phase
    found = [
        value[0] if own else value[1]
        for (filename, _, function), value in profile.items()
        for suffix, name in matches
        if function == name and filename.endswith(suffix)
    ]
    return sum(found) if found else None


def profile_report(
    verb: str, net: Profile, bare: Profile, phases: Sequence[Phase], count: int
) -> str:
    total_net = sum(own for own, _ in net.values())
    total_bare = sum(own for own, _ in bare.values())
    lines = [
        f"where `sandman {verb}` spends the network's time: cProfile of one {verb} of {count} "
        "sandboxes with [network] and one without (bench/profile_cli.py, in-process; the "
        "profiler slows Python code, so read the shares and the difference)",
    ]
    rows = [
        [
            "everything profiled",
            ms(total_net * 1000),
            ms(total_bare * 1000),
            ms((total_net - total_bare) * 1000 / count),
        ]
    ]
    for phase in phases:
        label, depth = phase[0], phase[1]
        mine, theirs = _phase_time(net, phase), _phase_time(bare, phase)
        if mine is None and theirs is None:
            continue
        diff = (mine or 0.0) - (theirs or 0.0)
        rows.append(
            [
                "  " * (depth + 1) + label,
                "-" if mine is None else ms(mine * 1000),
                "-" if theirs is None else ms(theirs * 1000),
                ms(diff * 1000 / count),
            ]
        )
    headers = ["phase (cumulative)", "with: ms", "without: ms", "difference per sandbox"]
    lines.append(_indent(table(headers, rows, right=(1, 2, 3))))
    lines.append("")
    lines.append(
        "  top 10 functions by own time, with [network] minus without, ms per sandbox "
        "(waits in syscalls count here):"
    )
    keys = set(net) | set(bare)
    diffs = sorted(
        ((net.get(k, (0.0, 0.0))[0] - bare.get(k, (0.0, 0.0))[0], k) for k in keys),
        key=lambda item: -item[0],
    )[:10]
    rows = [
        [ms(d * 1000 / count), ms(net.get(k, (0.0, 0.0))[0] * 1000 / count), _short(k)]
        for d, k in diffs
    ]
    lines.append(_indent(table(["diff", "with", "function"], rows, right=(0, 1))))
    return "\n".join(lines)


def importtime_report(session: Session, net: Units, bare: Units) -> str:
    """-X importtime of an apply of 1 sandbox with and without a network, by package."""
    summaries = []
    for units in (net, bare):
        args = ("-m", "sandman", "apply", units.directory, *session.paths(units.state))
        destroy = session.sandman("destroy", units.directory, *session.paths(units.state))
        runs = []
        for _ in range(IMPORTTIME_RUNS):
            try:
                runs.append(importtime(session.python, args, session.workdir))
            finally:
                session.runner.run(destroy, fresh=True)
                if units.network:
                    wait_links_gone((f"{units.tag}-", f"{units.tag}b-"))
        summaries.append(ImportSummary.of(runs))
    with_net, without = ({p: (t, n) for p, t, n in s.by_package()} for s in summaries)
    rows = []
    for package, (total, modules) in sorted(with_net.items(), key=lambda item: -item[1][0]):
        other, other_modules = without.get(package, (0.0, 0))
        if total - other >= 1.0 or modules != other_modules:
            rows.append([package, ms(total), ms(other), str(modules - other_modules)])
    lines = [
        f"imports of `sandman apply` of 1 sandbox (python -X importtime, median of "
        f"{IMPORTTIME_RUNS}): {ms(summaries[0].total())} ms with [network], "
        f"{ms(summaries[1].total())} ms without; packages that differ:"
    ]
    lines.append(
        _indent(table(["package", "with: self ms", "without", "more modules"], rows, (1, 2, 3)))
    )
    return "\n".join(lines)


# --- the report -------------------------------------------------------------------------------


def _timing(stats: Stats) -> str:
    return f"{ms(stats.median)} ({ms(stats.low)}-{ms(stats.high)})"


def _paired(a: Sequence[float], b: Sequence[float]) -> Stats:
    """Round-by-round differences: both ran in the same round, in turn."""
    return Stats(tuple(x - y for x, y in zip(a, b, strict=True)))


def _verdict(achieved: float, limit: float | None) -> str:
    if limit is None:
        return "-"
    return f"<= {limit:.2f}x: {'met' if achieved <= limit else 'MISSED'}"


@dataclass(frozen=True)
class Figures:
    """The network's cost on each side at one size, setup and teardown."""

    count: int
    sandman_up: Stats
    sandman_down: Stats
    script_up: Stats
    script_down: Stats
    netns_up: Stats
    netns_down: Stats

    @classmethod
    def of(cls, net: Contender, bare: Contender, script: Contender, netns: Contender) -> Figures:
        return cls(
            net.count,
            _paired(net.up, bare.up),
            _paired(net.down, bare.down),
            Stats(tuple(script.up)),
            Stats(tuple(script.down)),
            Stats(tuple(netns.up)),
            Stats(tuple(netns.down)),
        )


def report_table(figures: Sequence[Figures], dumps: DumpCount | str) -> tuple[str, list[str]]:
    rows, verdicts = [], []
    for fig in figures:
        limit = LIMIT if fig.count == MANY else None
        n = fig.count
        what = "1 sandbox" if n == 1 else f"{n} sandboxes"
        for step, mine, theirs in (
            ("setup", fig.sandman_up, fig.script_up),
            ("teardown", fig.sandman_down, fig.script_down),
        ):
            achieved = mine.median / theirs.median
            rows.append(
                [
                    f"network {step}, {what}",
                    _timing(mine),
                    _timing(theirs),
                    f"{ms(mine.median / n)} / {ms(theirs.median / n)}",
                    f"{achieved:.2f}x",
                    _verdict(achieved, limit),
                ]
            )
            if limit is not None:
                verdicts.append(
                    f"  network {step} of {what}: sandman {ms(mine.median)} ms / script "
                    f"{ms(theirs.median)} ms = {achieved:.2f}x, limit {limit:.2f}x: "
                    + ("met" if achieved <= limit else "MISSED")
                )
        if n == MANY:
            mine_total = fig.sandman_up.median + fig.sandman_down.median
            theirs_total = fig.script_up.median + fig.script_down.median
            achieved = mine_total / theirs_total
            rows.append(
                [
                    f"network setup + teardown, {what}",
                    ms(mine_total),
                    ms(theirs_total),
                    f"{ms(mine_total / n)} / {ms(theirs_total / n)}",
                    f"{achieved:.2f}x",
                    _verdict(achieved, LIMIT),
                ]
            )
            verdicts.append(
                f"  network setup + teardown of {what}: {ms(mine_total)} ms / {ms(theirs_total)} "
                f"ms = {achieved:.2f}x, limit {LIMIT:.2f}x: "
                + ("met" if achieved <= LIMIT else "MISSED")
            )
    if isinstance(dumps, DumpCount):
        count = sum(dumps.dumps.values())
        ok = "met" if count <= DUMP_LIMIT else "MISSED"
        rows.append(
            [
                f"netlink dump requests, no-op apply of {MANY}",
                str(count),
                "-",
                "-",
                "-",
                f"<= {DUMP_LIMIT}: {ok}",
            ]
        )
        verdicts.append(
            f"  netlink dump requests of a no-op apply of {MANY} sandboxes: {count}, "
            f"limit {DUMP_LIMIT}: {ok}"
        )
    else:
        rows.append([f"netlink dump requests, no-op apply of {MANY}", "-", "-", "-", "-", dumps])
        verdicts.append(f"  netlink dump requests: not measured ({dumps})")
    headers = [
        "figure",
        "sandman ms (min-max)",
        "script ms (min-max)",
        "per sandbox",
        "sandman/script",
        "target",
    ]
    return table(headers, rows, right=(1, 2, 3, 4)), verdicts


def emit_rows(figures: Sequence[Figures], dumps: DumpCount | str) -> None:
    """The summary rows of this benchmark (see common.emit): the network's own cost at MANY."""
    fig = next((f for f in figures if f.count == MANY), None)
    if fig is None:
        return
    n = fig.count
    for key, step, mine, theirs, netns in (
        ("net_setup", "setup", fig.sandman_up, fig.script_up, fig.netns_up),
        ("net_teardown", "teardown", fig.sandman_down, fig.script_down, fig.netns_down),
    ):
        per = Stats(tuple(x / n for x in mine.samples))
        without = (theirs.median - netns.median) / n
        emit(
            key,
            f"network {step} only, per sandbox, {n} sandboxes (with - without [network])",
            sandman=per,
            peers=[Peer("iproute2 + nft", theirs.median / n)],
            base="iproute2 + nft",
            limit=LIMIT,
            target=f"<= {LIMIT:g}x iproute2",
            note=f"the script counts `ip netns {'add' if step == 'setup' else 'del'}`; "
            f"without it {without:.1f} ms per sandbox",
        )
    if isinstance(dumps, DumpCount):
        count = sum(dumps.dumps.values())
        emit(
            "net_dumps",
            f"netlink dump requests of a no-op apply of {n} networked sandboxes",
            value=float(count),
            unit="dumps",
            limit=float(DUMP_LIMIT),
            target=f"<= {DUMP_LIMIT}",
        )


def details_report(contenders: Sequence[Contender], figures: Sequence[Figures]) -> str:
    lines = [
        "every contender, ms, median (min-max); sandman's network figures above are the "
        "differences with - without [network], round by round:"
    ]
    rows = [
        [c.label, _timing(Stats(tuple(c.up))), _timing(Stats(tuple(c.down))), str(len(c.up))]
        for c in contenders
    ]
    lines.append(_indent(table(["contender", "setup", "teardown", "rounds"], rows, (1, 2, 3))))
    lines.append("")
    lines.append(
        "for information, the script without its netns part (sandman's figures leave the netns "
        "out: the sandboxes without [network] have one too, with lo up):"
    )
    for fig in figures:
        n = fig.count
        for step, mine, script, netns in (
            ("setup", fig.sandman_up, fig.script_up, fig.netns_up),
            ("teardown", fig.sandman_down, fig.script_down, fig.netns_down),
        ):
            rest = script.median - netns.median
            ratio = f"{mine.median / rest:.2f}x" if rest > 0 else "-"
            lines.append(
                f"  {step}, {n}: script {ms(script.median)} - netns part {ms(netns.median)} = "
                f"{ms(rest)} ms ({ms(rest / n)} per sandbox); sandman {ms(mine.median)} ms: {ratio}"
            )
    return "\n".join(lines)


# --- the session ------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> None:
    if os.geteuid() != 0:
        raise BenchError("sandman apply, ip netns and nft need root: run it as root")
    python = real_python(args.python)

    def body(session: Session) -> None:
        restore_at_end(session.cleanup, FORWARDING, "ip_forward")
        measure(session, args)

    run_session("bench/netscale.py", "sandman-bench-netscale-", python, body)


def measure(session: Session, args: argparse.Namespace) -> None:
    require_modules(session.python, ("sandman.cli",), cwd=session.workdir)
    notes = install_tools(not args.no_install)
    names = pick_names()

    def script_objects() -> None:
        left = remove_script_objects(names)
        if left:
            raise StepError(f"the script's objects are still there: {', '.join(left[:5])}")

    session.cleanup.add(f"the script's objects ({names.prefix}*)", script_objects)
    build_image(session)
    taken: set[str] = set()
    units = {
        (network, count): write_units(session, names, count, network, taken)
        for count in (1, MANY)
        for network in (True, False)
    }
    scripts = write_scripts(session.workdir, names)
    checks = [
        check_sandman(session, units[True, 1]),
        check_script(session, names, scripts),
    ]
    contenders: dict[tuple[str, int], Contender] = {}
    for count, rounds in ((1, args.runs), (MANY, args.runs_many)):
        contenders["net", count] = sandman_contender(session, units[True, count], rounds)
        contenders["bare", count] = sandman_contender(session, units[False, count], rounds)
        contenders["script", count] = script_contender(
            session,
            names,
            f"script, {count}",
            (scripts["setup"], scripts["teardown"]),
            count=count,
            rounds=rounds,
        )
        contenders["netns", count] = script_contender(
            session,
            names,
            f"script's netns part, {count}",
            (scripts["netns-setup"], scripts["netns-teardown"]),
            count=count,
            rounds=rounds,
        )
    print_header(session, names, units, notes=notes, checks=checks, args=args)
    order = list(contenders.values())
    run_rounds(order, args.warmups)
    figures = [
        Figures.of(
            contenders["net", n],
            contenders["bare", n],
            contenders["script", n],
            contenders["netns", n],
        )
        for n in (1, MANY)
    ]
    _progress("profile and strace of the apply")
    profiles = profile_and_count(session, units[True, MANY], units[False, MANY])
    dumps = profiles.dumps
    text, verdicts = report_table(figures, dumps)
    emit_rows(figures, dumps)
    print(text)
    print()
    print(f"target (issue): {TARGET}")
    print("\n".join(verdicts))
    print()
    print(details_report(order, figures))
    print()
    print(dump_report(dumps, units[True, MANY]))
    print()
    print(timings_report(profiles.timings, MANY))
    print()
    print(profile_report("apply", profiles.apply_net, profiles.apply_bare, APPLY_PHASES, MANY))
    print()
    print(
        profile_report("destroy", profiles.destroy_net, profiles.destroy_bare, DESTROY_PHASES, MANY)
    )
    print()
    print(importtime_report(session, units[True, 1], units[False, 1]))


Timings = dict[str, tuple[int, float]]  # "module:function" -> (calls, seconds)

# Functions timed by time_calls.py (module attribute the callers look up, see there).
TIMED_CALLS: tuple[tuple[str, str], ...] = (
    ("sandman.apply.sandboxes:_start", "sandboxes: up to the first child's fork"),
    ("sandman.apply.sandboxes:spawn_start", "  spawn.start (fork)"),
    ("sandman.apply.sandboxes:_finish", "sandboxes: the init's exec and the record"),
    ("sandman.apply.sandboxes:spawn_finish", "  spawn.finish"),
    ("sandman.kernel.spawn:_parent", "    the parent's side: attach, waits on the children"),
    ("sandman.apply.networks:attach", "      networks.attach (the init waits for it)"),
    ("sandman.kernel.net:create_veth", "        create_veth"),
    ("sandman.kernel.nat:ensure_ports", "        ensure_ports"),
    ("sandman.apply.networks:name_files", "  /etc/hosts, resolv.conf"),
    ("sandman.apply.networks:create", "networks.create (bridge, forwarding, NAT)"),
    ("sandman.apply.networks:refresh_hosts", "networks.refresh_hosts"),
    ("sandman.apply.sandboxes:destroy", "sandboxes.destroy (one sandbox)"),
    ("sandman.apply.networks:detach", "  networks.detach (its forwards)"),
    ("sandman.apply.sandboxes:_remove_cgroup", "  stop the init, cgroup kill and rmdir"),
    ("sandman.apply.networks:destroy", "networks.destroy (bridge, NAT, table)"),
    ("sandman.kernel.net_dump:rule_payloads", "every rule dump (nat.py)"),
    ("sandman.kernel.netlink:batch", "every nf_tables batch, its socket's close included"),
    ("socket:socket.close", "every close of a Python socket"),
)


@dataclass(frozen=True)
class Profiles:
    apply_net: Profile
    apply_bare: Profile
    destroy_net: Profile
    destroy_bare: Profile
    dumps: DumpCount | str
    timings: dict[str, tuple[Timings, Timings]]  # verb -> (with, without)


def profile_and_count(session: Session, net: Units, bare: Units) -> Profiles:
    """Apply `net` under cProfile, count the dumps of a no-op apply, destroy it under cProfile,
    then apply and destroy it again under time_calls.py; the same for `bare`, without the count.
    On a failure, the clean-up's `sandman destroy` takes whatever is left."""
    here = os.path.dirname(os.path.abspath(__file__))
    profiler, timer = os.path.join(here, "profile_cli.py"), os.path.join(here, "time_calls.py")
    targets = ",".join(target for target, _ in TIMED_CALLS)
    profiles: dict[str, Profile] = {}
    timings: dict[str, Timings] = {}
    dumps: DumpCount | str = "not measured"
    for units in (net, bare):
        paths = session.paths(units.state)
        kind = "net" if units.network else "bare"
        for verb in ("apply", "destroy"):
            out = os.path.join(session.workdir, f"{verb}-{kind}.prof")
            argv = (session.python, profiler, out, verb, units.directory, *paths)
            session.runner.run(argv, fresh=True)
            if verb == "apply" and units.network:
                dumps = count_dumps(session, units)
            profiles[f"{verb}-{kind}"] = load_profile(out)
        if units.network:
            wait_links_gone((f"{units.tag}-", f"{units.tag}b-"))
        for verb in ("apply", "destroy"):
            out = os.path.join(session.workdir, f"{verb}-{kind}.json")
            argv = (session.python, timer, out, targets, verb, units.directory, *paths)
            session.runner.run(argv, fresh=True)
            with open(out, encoding="utf-8") as handle:
                raw = json.load(handle)
            timings[f"{verb}-{kind}"] = {k: (int(v[0]), float(v[1])) for k, v in raw.items()}
        if units.network:
            wait_links_gone((f"{units.tag}-", f"{units.tag}b-"))
    return Profiles(
        profiles["apply-net"],
        profiles["apply-bare"],
        profiles["destroy-net"],
        profiles["destroy-bare"],
        dumps,
        {verb: (timings[f"{verb}-net"], timings[f"{verb}-bare"]) for verb in ("apply", "destroy")},
    )


def timings_report(timings: dict[str, tuple[Timings, Timings]], count: int) -> str:
    lines = [
        f"without a profiler: wall time inside sandman's functions during one apply and one "
        f"destroy of {count} sandboxes, with [network] and without (bench/time_calls.py, "
        "perf_counter around each call; nested rows are part of the row above)",
    ]
    rows = []
    for verb in ("apply", "destroy"):
        mine, theirs = timings[verb]
        for target, label in TIMED_CALLS:
            calls, seconds = mine.get(target, (0, 0.0))
            other_calls, other = theirs.get(target, (0, 0.0))
            if not calls and not other_calls:
                continue
            rows.append(
                [
                    f"{verb}: {label}",
                    str(calls),
                    ms(seconds * 1000 / count),
                    ms(other * 1000 / count),
                    ms((seconds - other) * 1000 / count),
                    ms(seconds * 1000 / calls) if calls else "-",
                ]
            )
    headers = [
        "function",
        "calls",
        "with: ms/sandbox",
        "without",
        "difference",
        "ms per call",
    ]
    lines.append(_indent(table(headers, rows, right=(1, 2, 3, 4, 5))))
    return "\n".join(lines)


def print_header(
    session: Session,
    names: Names,
    units: dict[tuple[bool, int], Units],
    *,
    notes: Sequence[str],
    checks: Sequence[str],
    args: argparse.Namespace,
) -> None:
    print(
        "sandman network benchmark: per-sandbox network setup and teardown, beside a shell script "
        "with iproute2 and nft"
    )
    print(f"  interpreter: {describe_host(session.python)}")
    print(f"  sandman {module_version(session.python, 'sandman', session.workdir)}")
    print(f"  {tool_version(('ip', '-V'))}; {tool_version(('nft', '--version'))}")
    tags = ", ".join(
        f"{'with' if net else 'without'} [network], {count}: {u.tag}"
        for (net, count), u in units.items()
    )
    print(
        f"  sandman: `apply DIR` / `destroy DIR` with private state dirs (instance tags {tags}); "
        f"network {names.network_unit}: subnet {names.sandman_net}, nat = true; sandboxes "
        f"`{' '.join(COMMAND)}`, one forward each 127.0.0.1:{SANDMAN_PORTS + 1}.. -> "
        f":{SANDBOX_PORT}; without [network] they still get a netns with lo up"
    )
    print(
        f"  script: bash, one ip/nft process per step; bridge {names.bridge} "
        f"{names.script_net}, netns {names.prefix}-I, veths {names.prefix}vI, table inet "
        f"{names.prefix} (guard, masquerade, a DNAT rule in prerouting and output per forward, "
        "as sandman makes)"
    )
    for note in notes:
        print(f"  {note}")
    for check in checks:
        print(f"  checked: {check}")
    print(
        f"  {args.runs} interleaved rounds of the 1-sandbox runs, {args.runs_many} of the "
        f"{MANY}-sandbox runs, after {args.warmups} warm-up round(s); wall time of whole "
        "processes; after each teardown, untimed, a wait until the kernel has freed the veths"
    )
    print()


def main(argv: Sequence[str] | None = None) -> int:
    parser = round_options(
        "Time sandman's network setup and teardown beside an ip/nft shell script.",
        MANY,
        "ip, nft or strace",
    )
    args = parse_rounds(parser, argv)
    return run_main("bench/netscale.py", lambda: run(args), (ValueError, StepError))


if __name__ == "__main__":
    raise SystemExit(main())
