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
"""

from __future__ import annotations

from harness import Instance, Session, Stats, Trial, emit, main, networked_units
from peers import free_subnets

SCALES = (10, 100, 1000)
PORTS = 46000  # host ports PORTS+1..PORTS+N on 127.0.0.1
LIMIT = 1.2
VERBS = ("apply", "status", "no-op apply", "destroy")


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


def slopes(low: dict[str, float], mid: dict[str, float], high: dict[str, float]) -> None:
    """One row per verb: the slope at 1000 against the slope at 100, in ms per sandbox."""
    small, middle, large = SCALES
    for verb in VERBS:
        at_100 = (mid[verb] - low[verb]) / (middle - small)
        at_1000 = (high[verb] - mid[verb]) / (large - middle)
        ratio = at_1000 / at_100 if at_100 > 0 else None
        verdict = (
            "-"
            if verb == "destroy"
            else "not measured"
            if ratio is None
            else ("met" if ratio <= LIMIT else "MISSED")
        )
        emit(
            f"linear_{verb.replace(' ', '_').replace('-', '')}",
            f"{verb}, ms per sandbox at {large} against at {middle} (marginal) [linear]",
            value=at_1000,
            peers=[],
            target="-" if verb == "destroy" else f"<= {LIMIT}x the slope at {middle}",
            verdict=verdict,
            note=(
                f"{verb}: {at_1000:.2f} ms per sandbox from {middle} to {large}, {at_100:.2f} "
                f"from {small} to {middle} ({ratio:.2f}x); medians "
                + ", ".join(
                    f"{n}: {m:.0f} ms"
                    for n, m in zip(SCALES, (low[verb], mid[verb], high[verb]), strict=True)
                )
                if ratio is not None
                else f"{verb}: no growth from {small} to {middle}"
            ),
        )


def measure(session: Session) -> None:
    session.image()
    scales = [Scale(session, count, instance) for count, instance in instances(session).items()]
    trials = [t for s in scales for t in (s.apply,)]
    shown = [t for s in scales for t in (s.status, s.noop)]
    session.rounds(f"apply, status, no-op apply at {', '.join(map(str, SCALES))}", trials,
                   shown=shown)  # fmt: skip
    low, mid, high = (s.medians() for s in scales)
    slopes(low, mid, high)


if __name__ == "__main__":
    raise SystemExit(main("Time sandman at 10, 100 and 1000 sandboxes.", measure, runs=2, repeat=3))
