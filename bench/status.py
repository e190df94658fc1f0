"""`sandman status` of 100 running sandboxes without network, beside `import sandman.cli`
(the earlier target of issue #6).

`sudo .venv/bin/python bench/status.py [--sandboxes 100] [--runs 10] [--warmups 2]`

100 `/bin/sleep 1000` sandboxes (default namespaces, no `[network]`) applied into a private state
dir, then, interleaved: `python -c pass`, `python -c "import sandman.cli"`, `sandman status`
with no sandbox, `sandman status` and `status --json` with the 100 running.
"""

from __future__ import annotations

import json
import os

from harness import (
    BenchError,
    Instance,
    Session,
    command,
    emit,
    main,
    options,
    print_trials,
    run_rounds,
    sandbox_unit,
)

LIMIT = 3.0


def measure(session: Session) -> None:
    args, py, run = session.args, session.python, session.runner
    session.image()
    unit = sandbox_unit('stop_timeout = "1s"\n')
    units = {f"s{n:03d}.sandbox.toml": unit for n in range(args.sandboxes)}
    instance = Instance.make(session, "status", units)
    instance.apply()
    report = json.loads(run.output(instance.argv("status", "--json")))
    running = sum(s["state"] == "running" for s in report["sandboxes"])
    if running != args.sandboxes:
        raise BenchError(f"{running} of {args.sandboxes} sandboxes run after apply")
    empty = os.path.join(session.workdir, "empty-state")
    trials = [
        command(run, "python -c pass", (py, "-c", "pass")),
        command(run, "import sandman.cli", (py, "-c", "import sandman.cli")),
        command(run, "status, no sandbox", session.sandman("status", "--state-dir", empty)),
        command(run, "status", instance.argv("status")),
        command(run, "status --json", instance.argv("status", "--json")),
    ]
    run_rounds(trials, args.runs, args.warmups)
    print(f"status with {args.sandboxes} running sandboxes, no network, {args.runs} rounds")
    print_trials(trials)
    emit(
        "status_cli",
        f"`status` of {args.sandboxes} running sandboxes, no network (earlier target)",
        sandman=trials[3].stats,
        peers=[trials[1].peer("import sandman.cli")],
        base="import sandman.cli",
        limit=LIMIT,
        target=f"<= {LIMIT:g}x `import sandman.cli`",
    )


if __name__ == "__main__":
    parser = options("Time sandman status of running sandboxes.", runs=10, warmups=2)
    parser.add_argument("--sandboxes", type=int, default=100, help="running (default 100)")
    raise SystemExit(main("bench/status.py", parser, measure))
