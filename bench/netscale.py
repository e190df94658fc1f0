"""A network for 1 and 100 sandboxes, beside an ip/nft shell script, and the netlink dumps of a
no-op apply.

Interleaved, each run's setup and teardown timed apart, then an untimed wait until the kernel
has freed the veths: `sandman apply DIR` / `destroy DIR` of N `/bin/sleep 1000` sandboxes on one
network (`nat = true`, a port forward each from 127.0.0.1), and of the same without `[network]`
(they still get a netns with `lo` up): the network's cost is the difference, round by round; the
script (peers.py) with a named netns per sandbox, and its netns part alone. Then a no-op apply of
100 runs under `strace -f -e trace=sendto,sendmsg`: its NLM_F_DUMP requests are counted.
"""

from __future__ import annotations

import os
import re
import shutil
from collections import Counter
from collections.abc import Callable

from harness import Instance, Peer, Session, Stats, Trial, emit, main, networked_units, sandbox_unit
from peers import Names, network_setup, network_teardown, per_sandbox

MANY = 100
LIMIT = 1.0  # sandman's network time over the script's, at MANY sandboxes
DUMP_LIMIT = 3  # netlink dump requests of a no-op apply of MANY sandboxes
SANDMAN_PORTS, SCRIPT_PORTS = 42000, 43000  # host ports BASE+1..BASE+N on 127.0.0.1
NETNS = 'ip netns add "$PREFIX-$i"\nip -n "$PREFIX-$i" link set lo up'
SCRIPTS = {
    "setup": network_setup(
        'ip netns add "$name"',
        'ip link add "$veth" type veth peer name eth0 netns "$name"',
        'ip link set "$veth" master "$BRIDGE" up',
        'ip -n "$name" link set lo up',
    ),
    "teardown": network_teardown('ip netns del "$PREFIX-$i"'),
    "netns-setup": per_sandbox(NETNS),
    "netns-teardown": per_sandbox('ip netns del "$PREFIX-$i"'),
}


def instance(session: Session, names: Names, count: int, network: bool, name: str = "") -> Instance:
    if network:
        units = networked_units(names.sandman_net, count, SANDMAN_PORTS)
    else:
        units = {f"n{i:03d}.sandbox.toml": sandbox_unit() for i in range(1, count + 1)}
    name = name or f"{'net' if network else 'bare'}-{count}"
    return Instance.make(session, name, units)


def trials(session: Session, names: Names, scripts: dict[str, str]) -> dict[str, Trial]:
    """Every contender by label, each run's setup and teardown timed apart."""
    found = {}
    for count, rounds in ((1, session.args.runs), (MANY, session.args.runs_many)):
        for network in (True, False):
            sandman = instance(session, names, count, network)
            label = f"sandman, {count} {'with' if network else 'without'} [network]"
            found[label] = Trial(label, sandman.apply, sandman.destroy, settle=sandman.settle)
        for label, kind in ((f"script, {count}", ""), (f"script's netns part, {count}", "netns-")):
            up, down = (
                _bash(session, scripts[kind + step], count) for step in ("setup", "teardown")
            )
            found[label] = Trial(label, up, down, settle=names.settle)
        for label in list(found)[-4:]:
            found[label].rounds, found[label].timed_stop = rounds, True
    return found


def _bash(session: Session, script: str, count: int) -> Callable[[], None]:
    return lambda: session.run(("bash", script, str(count)))


def check(session: Session, names: Names, scripts: dict[str, str]) -> None:
    """Both sides make a working network: eth0's address inside one sandbox; the script's DNAT
    rules; a second `sandman apply` changes nothing."""
    session.run(("bash", scripts["setup"], "1"))
    try:
        netns = ("ip", "netns", "exec", f"{names.prefix}-1")
        address = session.output((*netns, "ip", "-4", "-o", "addr", "show", "dev", "eth0")).split()
        rules = session.output(("nft", "list", "table", "inet", names.prefix)).count("dnat")
        print(f"checked: the script's sandbox: eth0 {address[3]}; {rules} dnat rules")
    finally:
        session.run(("bash", scripts["teardown"], "1"))
        names.settle()
    one = instance(session, names, 1, True, name="check")
    one.apply()
    try:
        (pid,) = one.init_pids(["n001"])
        inside = ("nsenter", f"--net=/proc/{pid}/ns/net", "ip", "-4", "-o", "addr", "show")
        address = session.output((*inside, "dev", "eth0")).split()
        again = session.output(one.argv("apply")).strip().splitlines()[:1]
        print(f"checked: sandman's sandbox: eth0 {address[3]}; a second apply: {again}")
    finally:
        one.destroy()
        one.settle()


_NLMSG = re.compile(r"nlmsg_type=([^,]+), nlmsg_flags=([^,]+),")


def count_dumps(session: Session, net: Instance) -> Counter[str] | str:
    """The netlink requests with NLM_F_DUMP (0x300) of a no-op apply of the running `net`."""
    if shutil.which("strace") is None:
        return "not measured: strace is not installed"
    out = os.path.join(session.workdir, "strace-noop.txt")
    trace = ("strace", "-f", "-qq", "-e", "trace=sendto,sendmsg", "-e", "signal=none", "-o", out)
    net.apply()
    session.run((*trace, *net.argv("apply")))
    net.destroy()
    net.settle()
    dumps: Counter[str] = Counter()
    with open(out, encoding="utf-8", errors="replace") as handle:
        for kind, flags in _NLMSG.findall(handle.read()):
            numbers = [int(n, 0) for n in re.findall(r"0x[0-9a-fA-F]+|\b\d+\b", flags)]
            if "NLM_F_DUMP" in flags or any(n & 0x300 == 0x300 for n in numbers):
                dumps[kind] += 1
    print(f"NLM_F_DUMP requests of a no-op apply of {MANY}: {dict(dumps)}")
    return dumps


def emit_rows(by: dict[str, Trial], dumps: Counter[str] | str) -> None:
    """The network's own cost per sandbox at MANY: with - without [network], round by round."""
    net, bare = by[f"sandman, {MANY} with [network]"], by[f"sandman, {MANY} without [network]"]
    script, netns = by[f"script, {MANY}"], by[f"script's netns part, {MANY}"]
    for key, step, word, samples in (
        ("net_setup", "setup", "add", "up"),
        ("net_teardown", "teardown", "del", "down"),
    ):
        mine = zip(getattr(net, samples), getattr(bare, samples), strict=True)
        theirs = Stats(tuple(getattr(script, samples))).median / MANY
        without = theirs - Stats(tuple(getattr(netns, samples))).median / MANY
        emit(
            key,
            f"network {step} only, per sandbox, {MANY} sandboxes (with - without [network])",
            sandman=Stats(tuple((x - y) / MANY for x, y in mine)),
            peers=[Peer("iproute2 + nft", theirs)],
            base="iproute2 + nft",
            limit=LIMIT,
            target=f"<= {LIMIT:g}x iproute2",
            note=f"the script counts `ip netns {word}`; without it {without:.1f} ms per sandbox",
        )
    if isinstance(dumps, str):
        emit("net_dumps", "netlink dump requests of a no-op apply", verdict=dumps)
        return
    emit(
        "net_dumps",
        f"netlink dump requests of a no-op apply of {MANY} networked sandboxes",
        value=float(sum(dumps.values())),
        unit="dumps",
        limit=float(DUMP_LIMIT),
        target=f"<= {DUMP_LIMIT}",
    )


def measure(session: Session) -> None:
    names = Names(session)
    session.image()
    scripts = names.write(SCRIPT_PORTS, SCRIPTS)
    check(session, names, scripts)
    by = trials(session, names, scripts)
    args = session.args
    title = f"network setup and teardown ({args.runs_many} of the rounds with {MANY})"
    session.rounds(title, list(by.values()), max(args.runs, args.runs_many))
    emit_rows(by, count_dumps(session, instance(session, names, MANY, True, name="dumps")))


if __name__ == "__main__":
    raise SystemExit(main("Time sandman's network beside ip/nft.", measure, runs=5, runs_many=3))
