"""The load path: `sandman validate` of 100 generated units (gen_units.py), start to exit, beside
the bare pydantic import (the issue's yardstick), and which modules the load path imports.

Whole processes, interleaved: `python -c pass` (the floor), `from pydantic import BaseModel`,
`sandman --help`, `validate DIR` answered from the unit cache (DIR unchanged), `validate DIR`
loading every unit (no cache: DIR changed) with the validators built from the models (a state
dir that cannot keep them) and with the validators a first run kept (units/compiled.py; one
unit file edited before each run, untimed), and `plan DIR` against an empty state dir. Then the
imports of `validate` by package (`python -X importtime`), and whether validate and plan stay
off pyroute2 and sandman.kernel (and `--help` off pydantic).
"""

from __future__ import annotations

import os

from gen_units import generate
from harness import Session, Trial, emit, main

LIMIT = 1.5
FORBIDDEN = ("pyroute2", "sandman.kernel")


def measure(session: Session) -> None:
    args, py = session.args, session.python
    units, state = os.path.join(session.workdir, "units"), os.path.join(session.workdir, "state")
    os.mkdir(state)
    sandboxes = generate(units, args.units)
    session.image()
    images = session.images
    # validate keeps the units it resolved in the unit cache of its state dir (a run as root, as
    # here): DIR unchanged since the last run is the figure, and a state dir that cannot
    # hold the cache (it does not exist) gives the run of a changed DIR.
    verbs = {
        "--help": ("--help",),
        "validate DIR": ("validate", units, "--state-dir", state),
        "validate DIR, changed": ("validate", units, "--state-dir", os.path.join(state, "none")),
        # plan's preflight wants the units' image: the work dir's, not the host's default dir
        "plan DIR --state-dir EMPTY": ("plan", units, "--state-dir", state, "--image-dir", images),
    }
    trials = [
        session.command("python -c pass", (py, "-c", "pass")),
        session.command("pydantic import", (py, "-c", "from pydantic import BaseModel")),
        *(session.command(f"sandman {k}", session.sandman(*v)) for k, v in verbs.items()),
        _changed_with_kept_validators(session, units),
    ]
    session.rounds(f"the load path: {args.units} units ({sandboxes} sandboxes)", trials)
    peers = [trials[1].peer("pydantic import"), trials[0].peer("python -c pass")]
    emit(
        "validate",
        f"`validate` of {args.units} units, unchanged since the last (unit cache)",
        sandman=trials[3].stats,
        peers=peers,
        base="pydantic import",
        limit=LIMIT,
        target=f"<= {LIMIT:g}x `from pydantic import BaseModel`",
    )
    emit(
        "validate_changed",
        f"`validate` of {args.units} units, changed (loaded, no cache; info)",
        sandman=trials[4].stats,
        peers=peers,
        base="pydantic import",
    )
    emit(
        "validate_changed_kept",
        f"`validate` of {args.units} units, changed, validators kept (info)",
        sandman=trials[-1].stats,
        peers=peers,
        base="pydantic import",
    )
    print()
    for verb, argv in verbs.items():
        imports = session.importtime(("-m", "sandman", *argv))
        if verb == "validate DIR":
            imports.print_packages(f"imports of `sandman {verb}`")
        for prefix in (*FORBIDDEN, "pydantic") if verb == "--help" else FORBIDDEN:
            found = imports.under(prefix)
            print(f"  `sandman {verb}` imports {prefix}: {'IMPORTED' if found else 'ok, no'}")


def _changed_with_kept_validators(session: Session, units: str) -> Trial:
    """`validate` of a copy of UNITS into a state dir that keeps the validators' schemas, with
    one unit file changed before each run: the unit cache misses, every unit is loaded."""
    import shutil

    copy, state = units + "-edited", os.path.join(session.workdir, "state-kept")
    shutil.copytree(units, copy)
    os.mkdir(state, 0o700)
    edited = os.path.join(copy, sorted(os.listdir(copy))[0])
    runs = [0]

    def edit() -> None:
        runs[0] += 1
        with open(edited, "a", encoding="utf-8") as handle:
            handle.write(f"# run {runs[0]}\n")

    argv = session.sandman("validate", copy, "--state-dir", state)
    return Trial(
        "sandman validate DIR, changed, validators kept", lambda: session.run(argv), before=edit
    )


if __name__ == "__main__":
    raise SystemExit(
        main("Time sandman's load path.", measure, False, runs=15, warmups=3, units=100)
    )
