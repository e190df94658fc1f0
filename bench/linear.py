"""Whether sandman's cost grows linearly in the number of sandboxes: apply, status and a no-op
apply at 10, 100 and 1000 networked sandboxes.

One network (`nat = true`, a /21: a Linux bridge takes at most 1024 ports) and N `/bin/sleep
1000` sandboxes on it, each with a port forward from 127.0.0.1. Per round and per N: `sandman
apply` of the N new (timed), then with the N running `--repeat` interleaved runs of `status` and
of a no-op `apply`, then `destroy` (timed, for information) and an untimed wait until the kernel
has freed the veths.

A verb's cost per sandbox at a scale is its marginal cost there: (t(1000) - t(100)) / 900 at
1000 and (t(100) - t(10)) / 90 at 100, from the medians. An interpreter's start and imports are
paid once per command, so t(N) / N would hide any growth behind them; a cost that is linear in N
gives the same slope at both scales, a quadratic one a slope ten times larger. The target (#21):
the slope at 1000 within 1.2x of the slope at 100.

Beside it, what the kernel's own growth is: a bash loop of iproute2 commands that makes the same
netns, veth pair and bridge port per sandbox (no process, no rules), timed at the same N; its
slope ratio is printed in the apply row's note (a Linux bridge and the netns list cost more per
member as they grow, whoever makes them).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Sequence

from harness import Instance, Session, Stats, Trial, emit, main, networked_units
from peers import Names, free_subnets, per_sandbox

SCALES = (10, 100, 1000)
PORTS = 46000  # host ports PORTS+1..PORTS+N on 127.0.0.1
LIMIT = 1.2
VERBS = ("apply", "status", "no-op apply", "destroy")
# A netns held by a process, as a sandbox's is (`ip netns add` would bind-mount each one, and
# mounts cost more the more there are); the processes' PIDs in $PIDS for the teardown.
KERNEL_SETUP = per_sandbox(
    'unshare --net sleep 100000 & pid=$!; echo "$pid" >> "$PIDS"',
    'until [ "$(readlink /proc/$pid/ns/net)" != "$(readlink /proc/self/ns/net)" ]; do :; done',
    'ip link add "${PREFIX}v$i" type veth peer name eth0 netns "$pid"',
    'ip link set "${PREFIX}v$i" master "$BRIDGE" up',
    'nsenter -t "$pid" -n ip link set eth0 up',
    before='ip link add "$BRIDGE" type bridge\nip link set "$BRIDGE" up\n: > "$PIDS"\n',
)
KERNEL_TEARDOWN = 'xargs kill < "$PIDS"\nip link del "$BRIDGE"\n'


def instances(session: Session) -> dict[int, Instance]:
    (subnet,) = free_subnets(1, prefixlen=21)
    found = {}
    for count in SCALES:
        units = networked_units(subnet, count, PORTS, 'stop_timeout = "1s"\n')
        found[count] = Instance.make(session, f"lin-{count}", units)
    return found


class Scale:
    """The trials of one N: apply (its destroy timed as the teardown), and the hot verbs run
    between them."""

    def __init__(self, session: Session, count: int, instance: Instance) -> None:
        self.count = count
        self.status = session.command(f"status, {count}", instance.argv("status"))
        self.noop = session.command(f"no-op apply, {count}", instance.argv("apply"))
        repeat = session.args.repeat

        def while_running(keep: bool) -> None:
            for _ in range(repeat):
                for trial in (self.status, self.noop):
                    trial.once(keep)

        self.apply = Trial(
            f"apply of {count}; destroy",
            instance.apply,
            instance.destroy,
            timed_stop=True,
            after=while_running,
            settle=instance.settle,
        )

    def medians(self) -> dict[str, float]:
        got = {
            "apply": self.apply.stats,
            "status": self.status.stats,
            "no-op apply": self.noop.stats,
            "destroy": Stats(tuple(self.apply.down)) if self.apply.down else None,
        }
        return {verb: stats.median for verb, stats in got.items() if stats is not None}


def kernel_trials(session: Session) -> list[Trial]:
    names = Names(session)
    pids = os.path.join(session.workdir, "kernel-pids")
    bodies = {"setup": KERNEL_SETUP, "teardown": KERNEL_TEARDOWN}
    paths = names.write(0, bodies, PIDS=pids)
    session.cleanup.add("the kernel loop's processes", lambda: _kill_listed(pids))

    def bash(step: str, count: int) -> Callable[[], None]:
        return lambda: session.run(("bash", paths[step], str(count)))

    return [
        Trial(
            f"kernel: netns + veth on a bridge, {count}; teardown",
            bash("setup", count),
            bash("teardown", count),
            timed_stop=True,
            settle=names.settle,
        )
        for count in SCALES
    ]


def _kill_listed(path: str) -> None:
    """End the processes the loop started and listed (by PID, never by name)."""
    with contextlib.suppress(OSError), open(path, encoding="ascii") as handle:
        for pid in handle.read().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGTERM)


def slope_ratio(medians: Sequence[float]) -> tuple[float, float, float | None]:
    """(slope from 10 to 100, slope from 100 to 1000, their ratio) of three medians."""
    small, middle, large = SCALES
    at_100 = (medians[1] - medians[0]) / (middle - small)
    at_1000 = (medians[2] - medians[1]) / (large - middle)
    return at_100, at_1000, at_1000 / at_100 if at_100 > 0 else None


def slopes(
    low: dict[str, float], mid: dict[str, float], high: dict[str, float], kernel: str
) -> None:
    """One row per verb: the slope at 1000 against the slope at 100, in ms per sandbox."""
    small, middle, large = SCALES
    for verb in VERBS:
        medians = (low[verb], mid[verb], high[verb])
        at_100, at_1000, ratio = slope_ratio(medians)
        if ratio is None:
            verdict, note = "not measured", f"{verb}: no growth from {small} to {middle}"
        else:
            verdict = "met" if ratio <= LIMIT else "MISSED"
            note = f"{verb}: {at_1000:.2f} ms per sandbox from {middle} to {large}, "
            note += f"{at_100:.2f} from {small} to {middle} ({ratio:.2f}x); medians "
            note += ", ".join(f"{n}: {m:.0f} ms" for n, m in zip(SCALES, medians, strict=True))
        emit(
            f"linear_{verb.replace(' ', '_').replace('-', '')}",
            f"{verb}, ms per sandbox at {large} against at {middle} (marginal) [linear]",
            value=at_1000,
            target="-" if verb == "destroy" else f"<= {LIMIT}x the slope at {middle}",
            verdict="-" if verb == "destroy" else verdict,
            note=note + (f"; {kernel}" if verb == "apply" else ""),
        )


def measure(session: Session) -> None:
    session.image()
    scales = [Scale(session, count, instance) for count, instance in instances(session).items()]
    kernel = kernel_trials(session)
    trials = [*(s.apply for s in scales), *kernel]
    shown = [t for s in scales for t in (s.status, s.noop)]
    session.rounds(f"apply, status, no-op apply at {', '.join(map(str, SCALES))}", trials,
                   shown=shown)  # fmt: skip
    low, mid, high = (s.medians() for s in scales)
    medians = [t.stats.median for t in kernel if t.stats is not None]
    growth = "kernel: not measured"
    if len(medians) == len(SCALES):
        at_100, at_1000, ratio = slope_ratio(medians)
        growth = f"the kernel's own (iproute2 loop): {at_1000:.2f} ms per sandbox from 100 to "
        growth += f"1000, {at_100:.2f} from 10 to 100" + (f" ({ratio:.2f}x)" if ratio else "")
    slopes(low, mid, high, growth)


if __name__ == "__main__":
    raise SystemExit(main("Time sandman at 10, 100 and 1000 sandboxes.", measure, runs=2, repeat=3))
