"""Run one sandman command under cProfile, in-process, and write the stats to a file.

`python bench/profile_cli.py OUT.prof VERB ARGS...`, e.g.
`python bench/profile_cli.py /tmp/apply.prof apply units/ --state-dir /tmp/state`

The profile starts before `import sandman.cli`, so the imports of the CLI and of the verb are in
it; only the interpreter's own start-up and exit are not. Read the file with `pstats` (or
`python -m pstats OUT.prof`), for digging by hand (bench/README.md). The exit code is sandman's.
"""

from __future__ import annotations

import cProfile
import sys


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: profile_cli.py OUT.prof VERB [ARGS...]", file=sys.stderr)
        return 2
    out, args = argv[0], argv[1:]
    profile = cProfile.Profile()
    profile.enable()
    try:
        from sandman import cli

        code = cli.main(args)
    finally:
        profile.disable()
        profile.dump_stats(out)
    return code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
