"""The load-path benchmark: how long `sandman validate` and `plan` take, start to exit.

`python bench/load.py [--units 100] [--runs 15] [--warmups 3] [--python PATH]`

It generates a unit directory, then times whole processes, interleaved: a bare interpreter, a bare
`from pydantic import BaseModel`, `sandman --help`, `validate DIR` and `plan DIR` (against an empty
state dir). It compares each with the bare pydantic import, the yardstick of the issue's target,
then lists the imports of the validate path (`python -X importtime`) and reports whether the
validate and plan paths import what they should not (pyroute2, sandman.kernel). It reports and
never fails on a time; everything it writes lives in a temporary directory removed at the end.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

from common import (
    BenchError,
    Command,
    Peer,
    Stats,
    clean_env,
    describe_host,
    emit,
    module_version,
    ms,
    ratio,
    real_python,
    require_modules,
    run_main,
    table,
    time_interleaved,
)
from gen_units import generate

TARGET_UNITS = 100
TARGET_RATIO = 1.5
TARGET = (
    f"validate of {TARGET_UNITS} units within {TARGET_RATIO}x the bare pydantic import "
    "(whole process, median)"
)
IMPORTTIME_RUNS = 5
TOP_IMPORTS = 10
# Modules the load path must not import: the netlink library and the kernel side of sandman.
FORBIDDEN = ("pyroute2", "sandman.kernel")

PASS = "python -c pass"
PYDANTIC = 'python -c "from pydantic import BaseModel"'
HELP = "python -m sandman --help"
VALIDATE = "python -m sandman validate DIR"
PLAN = "python -m sandman plan DIR --state-dir EMPTY"

_IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)\s*$")


@dataclass(frozen=True)
class Import:
    module: str
    depth: int
    self_us: int
    cumulative_us: int


def parse_importtime(stderr: str) -> list[Import]:
    """The rows of `python -X importtime` output, in the order Python printed them."""
    rows = []
    for line in stderr.splitlines():
        match = _IMPORT_LINE.match(line)
        if match:
            self_us, cumulative_us, indent, module = match.groups()
            rows.append(Import(module, (len(indent) - 1) // 2, int(self_us), int(cumulative_us)))
    return rows


def importtime(python: str, args: Sequence[str], cwd: str) -> list[Import]:
    result = subprocess.run(
        [python, "-X", "importtime", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
        cwd=cwd,
        check=False,
    )
    rows = parse_importtime(result.stderr)
    if result.returncode != 0 or not rows:
        tail = "\n".join(result.stderr.splitlines()[-5:])
        raise BenchError(f"python -X importtime {' '.join(args)} failed:\n{tail}")
    return rows


def forbidden_imports(rows: Sequence[Import], prefixes: Sequence[str]) -> dict[str, list[str]]:
    """For each prefix, the imported modules that are it or lie under it."""
    return {
        prefix: [r.module for r in rows if r.module == prefix or r.module.startswith(prefix + ".")]
        for prefix in prefixes
    }


@dataclass(frozen=True)
class ImportSummary:
    """Median self and cumulative import times per module over several runs, in ms."""

    cumulative: dict[str, float]
    self_time: dict[str, float]
    depth: dict[str, int]
    order: list[str]

    @classmethod
    def of(cls, runs: Sequence[Sequence[Import]]) -> ImportSummary:
        cumulative: dict[str, list[float]] = {}
        self_time: dict[str, list[float]] = {}
        depth: dict[str, int] = {}
        order: list[str] = []
        for rows in runs:
            for row in rows:
                if row.module not in depth:
                    depth[row.module] = row.depth
                    order.append(row.module)
                cumulative.setdefault(row.module, []).append(row.cumulative_us / 1000)
                self_time.setdefault(row.module, []).append(row.self_us / 1000)
        return cls(
            {m: statistics.median(v) for m, v in cumulative.items()},
            {m: statistics.median(v) for m, v in self_time.items()},
            depth,
            order,
        )

    def total(self) -> float:
        return sum(self.self_time.values())

    def top(self, count: int, by_self: bool = False) -> list[str]:
        times = self.self_time if by_self else self.cumulative
        return sorted(self.order, key=lambda m: -times[m])[:count]

    def by_package(self) -> list[tuple[str, float, int]]:
        """Self time summed per top-level package: (package, ms, modules)."""
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        for module, value in self.self_time.items():
            package = _package(module)
            sums[package] = sums.get(package, 0.0) + value
            counts[package] = counts.get(package, 0) + 1
        return sorted(((p, sums[p], counts[p]) for p in sums), key=lambda item: -item[1])


_OWN_PACKAGES = ("sandman", "pydantic", "pydantic_core", "typing_extensions", "annotated_types")


def _package(module: str) -> str:
    top = module.split(".", maxsplit=1)[0]
    stdlib = top in sys.stdlib_module_names or top.startswith("_sysconfigdata")
    if top in _OWN_PACKAGES or not stdlib:
        return top
    return "(stdlib)"


def timing_report(stats: dict[str, Stats], units: int) -> str:
    base = stats[PYDANTIC].median
    start = stats[PASS].median
    rows = [
        [
            label,
            ms(s.median),
            f"{ms(s.low)}-{ms(s.high)}",
            ms(s.median - start),
            ratio(s.median, base),
        ]
        for label, s in stats.items()
    ]
    headers = ["command", "median ms", "min-max ms", "over `pass` ms", "vs pydantic import"]
    lines = [table(headers, rows, right=(1, 2, 3, 4)), ""]
    achieved = stats[VALIDATE].median / base
    verdict = "met" if achieved <= TARGET_RATIO else "MISSED"
    lines.append(f"target (issue): {TARGET}")
    note = "" if units == TARGET_UNITS else f" (measured with {units} units, not {TARGET_UNITS})"
    lines.append(
        f"  validate {ms(stats[VALIDATE].median)} ms / pydantic import {ms(base)} ms = "
        f"{achieved:.2f}x, limit {TARGET_RATIO:.2f}x: {verdict}{note}"
    )
    lines.append(
        f"  to meet it, validate needs {ms(TARGET_RATIO * base)} ms or less, "
        f"{ms(stats[VALIDATE].median - TARGET_RATIO * base)} ms from now"
        if verdict == "MISSED"
        else f"  headroom: {ms(TARGET_RATIO * base - stats[VALIDATE].median)} ms"
    )
    return "\n".join(lines)


def import_report(summary: ImportSummary) -> str:
    lines = [
        f"imports of `{VALIDATE}` (python -X importtime, median of {IMPORTTIME_RUNS} runs)",
        f"  {len(summary.order)} modules, {ms(summary.total())} ms of import time in all "
        "(sum of self times; -X importtime itself adds some)",
        "",
        *top_tables(summary),
    ]
    lines.append("  self time by top-level package:")
    rows = [[p, ms(total), str(n)] for p, total, n in summary.by_package()[:8]]
    lines.append(_indent(table(["package", "self ms", "modules"], rows, (1, 2))))
    return "\n".join(lines)


def top_tables(summary: ImportSummary) -> list[str]:
    """The top imports by cumulative and by self time, as indented tables."""
    lines = [f"  top {TOP_IMPORTS} by cumulative time (a module's own time plus what it imports):"]
    rows = [
        [ms(summary.cumulative[m]), ms(summary.self_time[m]), "  " * summary.depth[m] + m]
        for m in summary.top(TOP_IMPORTS)
    ]
    lines += [_indent(table(["cum ms", "self ms", "module"], rows, (0, 1))), ""]
    lines.append(f"  top {TOP_IMPORTS} by self time (the module's own code, imports excluded):")
    rows = [
        [ms(summary.self_time[m]), ms(summary.cumulative[m]), m]
        for m in summary.top(TOP_IMPORTS, by_self=True)
    ]
    lines += [_indent(table(["self ms", "cum ms", "module"], rows, (0, 1))), ""]
    return lines


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.split("\n"))


def checks_report(paths: dict[str, list[Import]]) -> str:
    lines = ["modules that must stay off a path (ok = not imported):"]
    for label, rows in paths.items():
        prefixes = (*FORBIDDEN, "pydantic") if label == HELP else FORBIDDEN
        for prefix, found in forbidden_imports(rows, prefixes).items():
            shown = "ok" if not found else f"IMPORTED ({', '.join(found[:4])}"
            if found:
                shown += ", ...)" if len(found) > 4 else ")"
            lines.append(f"  {label}: {prefix}: {shown}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> None:
    python = real_python(args.python)
    workdir = tempfile.mkdtemp(prefix="sandman-bench-load-")
    try:
        # Every command runs in the temporary directory, so that a checkout in the caller's
        # working directory never stands in for the installed sandman.
        require_modules(python, ("pydantic", "sandman.cli"), cwd=workdir)
        units_dir = os.path.join(workdir, "units")
        state_dir = os.path.join(workdir, "state")
        os.mkdir(state_dir)
        counts = generate(units_dir, args.units)
        print("sandman load-path benchmark")
        print(f"  interpreter: {describe_host(python)}")
        print(f"  pydantic {module_version(python, 'pydantic', workdir)}")
        print(f"  sandman {module_version(python, 'sandman', workdir)}")
        print(
            f"  DIR: {counts.total} generated units ({counts.sandboxes} sandboxes, "
            f"{counts.networks} networks, {counts.slices} slices); EMPTY: an empty state dir"
        )
        print(
            f"  {args.runs} interleaved rounds after {args.warmups} warm-ups; wall time of the "
            "whole process (perf_counter around subprocess.run)"
        )
        print()
        help_args = ("-m", "sandman", "--help")
        validate_args = ("-m", "sandman", "validate", units_dir)
        plan_args = ("-m", "sandman", "plan", units_dir, "--state-dir", state_dir)
        commands = [
            Command(PASS, (python, "-c", "pass"), cwd=workdir),
            Command(PYDANTIC, (python, "-c", "from pydantic import BaseModel"), cwd=workdir),
            Command(HELP, (python, *help_args), cwd=workdir),
            Command(VALIDATE, (python, *validate_args), cwd=workdir),
            Command(PLAN, (python, *plan_args), cwd=workdir),
        ]
        stats = time_interleaved(commands, args.runs, args.warmups)
        print(timing_report(stats, args.units))
        emit(
            "validate",
            f"`validate` of {args.units} units (issue: load path)",
            sandman=stats[VALIDATE],
            peers=[
                Peer("pydantic import", stats[PYDANTIC].median),
                Peer("python -c pass", stats[PASS].median),
            ],
            base="pydantic import",
            limit=TARGET_RATIO,
            target=f"<= {TARGET_RATIO:g}x `from pydantic import BaseModel`",
        )
        print()
        runs = [importtime(python, validate_args, workdir) for _ in range(IMPORTTIME_RUNS)]
        print(import_report(ImportSummary.of(runs)))
        print()
        paths = {
            VALIDATE: runs[0],
            PLAN: importtime(python, plan_args, workdir),
            HELP: importtime(python, help_args, workdir),
        }
        print(checks_report(paths))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Time sandman's load path (validate, plan) against a bare pydantic import."
    )
    parser.add_argument("--units", type=int, default=100, help="units to generate (default 100)")
    parser.add_argument("--runs", type=int, default=15, help="timed rounds (default 15)")
    parser.add_argument("--warmups", type=int, default=3, help="untimed rounds first (default 3)")
    parser.add_argument(
        "--python", metavar="PATH", help="the interpreter to time (default: this one)"
    )
    args = parser.parse_args(argv)
    if args.runs < 1 or args.warmups < 0:
        parser.error("--runs must be at least 1 and --warmups at least 0")
    return run_main("bench/load.py", lambda: run(args), (ValueError,))


if __name__ == "__main__":
    raise SystemExit(main())
