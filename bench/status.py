"""`sandman status` of 100 running sandboxes without network, beside `import sandman.cli`
(the earlier target of issue #6).

100 `/bin/sleep 1000` sandboxes (default namespaces, no `[network]`) applied into a private state
dir, then, interleaved: `python -c pass`, `python -c "import sandman.cli"`, `sandman status`
with no sandbox, `sandman status` and `status --json` with the 100 running.
"""

from __future__ import annotations

import os

from harness import Instance, Session, emit, main, sandbox_unit

LIMIT = 3.0


def measure(session: Session) -> None:
    args, py = session.args, session.python
    session.image()
    unit = sandbox_unit('stop_timeout = "1s"\n')
    units = {f"s{n:03d}.sandbox.toml": unit for n in range(args.sandboxes)}
    instance = Instance.make(session, "status", units)
    instance.apply()
    instance.check_running(args.sandboxes)
    empty = os.path.join(session.workdir, "empty-state")
    trials = [
        session.command("python -c pass", (py, "-c", "pass")),
        session.command("import sandman.cli", (py, "-c", "import sandman.cli")),
        session.command("status, no sandbox", session.sandman("status", "--state-dir", empty)),
        session.command("status", instance.argv("status")),
        session.command("status --json", instance.argv("status", "--json")),
    ]
    session.rounds(f"status with {args.sandboxes} running sandboxes, no network", trials)
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
    raise SystemExit(main("Time sandman status.", measure, runs=10, warmups=2, sandboxes=100))
