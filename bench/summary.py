"""The one summary table of bench/run, from the JSON rows the benchmarks wrote.

`python bench/summary.py RESULTS.jsonl [--markdown OUT.md] [--python PATH]`

Each benchmark run by bench/run appends one JSON object per figure to the file named by
$SANDMAN_BENCH_RESULTS (harness.emit). This prints them as one table (figure, sandman's median
(min-max), the peers' medians, the ratio, the target, met or MISSED), the issue's figures first
and in its order, with every expected figure that no benchmark reported marked as not measured,
and writes the same as markdown, with the date and the machine, to OUT.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from harness import cgroup_layout, table

# The figures, in its order: key, figure, target (for rows no benchmark reported).
EXPECTED = (
    ("spawn_path", "spawn path alone, in process: fork, namespaces, pivot_root, exec of /bin/true",
     "<= 1.5x the C floor", "spawn_path.py"),
    ("apply_1", "whole `apply` of 1 sandbox, no network, until init runs", "<= 2x nspawn",
     "spawn.py"),
    ("apply_50", "`apply` of 50 sandboxes, no network", "<= 1x 50 crun runs", "spawn.py"),
    ("apply_100_net", "`apply` of 100 sandboxes with network, ports and limits",
     "<= 0.7x that script", "scale.py"),
    ("net_setup", "network setup only, per sandbox, 100 sandboxes", "<= 1x iproute2",
     "netscale.py"),
    ("noop_apply", "no-op `apply` over 100 running sandboxes (network, limits)",
     "<= 1.3x that import", "scale.py"),
    ("noop_apply_validate", "no-op `apply` over the same, against `validate` (issue #7)",
     "<= 2x `validate` of the dir", "scale.py"),
    ("status_100", "`status` of 100 running sandboxes", "<= 5x `python -c pass`", "scale.py"),
    ("memory", "host memory left per running sandbox", "0 bytes", "spawn.py"),
    ("daemon_rss", "daemon RSS with 100 sandboxes watched", "<= 60 MB, flat in the count",
     "scale.py"),
    ("daemon_new_unit", "daemon: a new unit file to its init running", "-", "scale.py"),
    ("teardown_100_net", "teardown of 100 sandboxes with network (`destroy`)",
     "<= 1x the script's teardown", "scale.py"),
    ("net_teardown", "network teardown only, per sandbox, 100 sandboxes", "<= 1x iproute2",
     "netscale.py"),
    ("imports_status", "imports of `status`", "no pyroute2 and no pydantic", "scale.py"),
    ("imports_validate", "imports of `validate`", "no pyroute2", "scale.py"),
)  # fmt: skip
HEADERS = ("figure", "sandman median (min-max)", "peers (median)", "ratio", "target", "verdict")


def _number(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value:.1f} ms" if value < 1000 else f"{value / 1000:.2f} s"
    if unit == "B":
        return f"{value:.0f} B"
    if unit == "MB":
        return f"{value:.1f} MB"
    return f"{value:g} {unit}".strip()


def sandman_cell(row: dict[str, Any]) -> str:
    median, unit = row.get("median"), row.get("unit", "ms")
    if median is None:
        return "-"
    text = _number(float(median), unit)
    low, high = row.get("low"), row.get("high")
    if low is not None and high is not None and row.get("samples", 0) > 1:
        if unit == "ms" and median < 1000:
            text += f" ({low:.1f}-{high:.1f})"
        elif unit == "ms":
            text += f" ({low / 1000:.2f}-{high / 1000:.2f})"
    return text


def peers_cell(row: dict[str, Any]) -> str:
    unit = row.get("unit", "ms")
    parts = []
    for peer in row.get("peers", []):
        if peer.get("median") is not None:
            parts.append(f"{peer['label']} {_number(float(peer['median']), unit)}")
        else:
            parts.append(f"{peer['label']} {peer.get('why') or 'n/a'}")
    return "; ".join(parts) or "-"


def ratio_cell(row: dict[str, Any]) -> str:
    value = row.get("ratio")
    if value is None:
        return "-"
    return f"{value:.2f}x {row.get('base', '')}".strip()


def load(path: str) -> list[dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    row = json.loads(line)
                    rows[row["key"]] = row  # a benchmark run twice: the last one counts
    ordered = []
    for key, figure, target, bench in EXPECTED:
        ordered.append(
            rows.pop(key, {})
            or {
                "key": key,
                "figure": figure,
                "target": target,
                "verdict": f"not measured: bench/{bench} reported nothing (see its output)",
            }
        )
    return ordered + list(rows.values())


def notes(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The rows' notes, numbered as the figures' marks in the table."""
    return [f"[{n}] {row['note']}" for n, row in enumerate(_noted(rows), start=1)]


def _noted(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [row for row in rows if row.get("note")]


def cells(rows: Sequence[dict[str, Any]]) -> list[list[str]]:
    out = []
    marks = {id(row): n for n, row in enumerate(_noted(rows), start=1)}
    for row in rows:
        figure = row["figure"]
        if id(row) in marks:
            figure += f" [{marks[id(row)]}]"
        out.append(
            [
                figure,
                sandman_cell(row),
                peers_cell(row),
                ratio_cell(row),
                row.get("target") or "-",
                row.get("verdict") or "-",
            ]
        )
    return out


def markdown(rows: Sequence[Sequence[str]]) -> str:
    def esc(cell: str) -> str:
        return cell.replace("|", "\\|")

    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _first_line(argv: Sequence[str]) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    try:
        result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (result.stdout or result.stderr).strip()
    return text.splitlines()[0] if text else None


LAYOUTS = {"unified": "cgroup v2 (unified)", "hybrid": "cgroup v1/v2 hybrid", "legacy": "cgroup v1"}


def machine(python: str) -> list[str]:
    version = subprocess.run(
        [python, "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    debian = ""
    with_os = "/etc/debian_version"
    if os.path.exists(with_os):
        with open(with_os, encoding="utf-8") as handle:
            debian = f"Debian {handle.read().strip()}, "
    peers = []
    for argv in (
        ("crun", "--version"),
        ("runc", "--version"),
        ("lxc-execute", "--version"),
        ("bwrap", "--version"),
        ("systemd-nspawn", "--version"),
        ("ip", "-V"),
        ("nft", "-v"),
    ):
        line = _first_line(argv)
        if line is not None:
            peers.append(line if argv[0] in line else f"{argv[0]} {line}")
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return [
        f"Measured {now}: {debian}kernel {platform.release()}, {os.cpu_count()} CPUs, "
        f"{LAYOUTS[cgroup_layout()]}, CPython {version or '?'}.",
        "Peers: " + "; ".join(p for p in peers if p) + ".",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The summary table of bench/run.")
    parser.add_argument("results", help="the JSON rows the benchmarks wrote")
    parser.add_argument("--markdown", metavar="OUT", help="also write the table as markdown")
    parser.add_argument("--python", default=sys.executable, help="the interpreter timed")
    parser.add_argument("--elapsed", type=float, help="seconds the whole run took")
    args = parser.parse_args(argv)
    rows = load(args.results)
    body = cells(rows)
    head = machine(args.python)
    if args.elapsed is not None:
        head.append(f"The whole bench/run took {args.elapsed / 60:.1f} minutes.")
    print("summary (ratios are the figures; the machine is shared and noisy):")
    for line in head:
        print(f"  {line}")
    print()
    print(table(HEADERS, body, numbers=False))
    for line in notes(rows):
        print(f"  {line}")
    missed = [r["figure"] for r in rows if str(r.get("verdict", "")).startswith("MISSED")]
    print()
    print(f"{len(missed)} target(s) MISSED" + (": " + "; ".join(missed) if missed else ""))
    if args.markdown:
        text = [
            "# Benchmark results",
            "",
            "Written by `bench/run` (`bench/summary.py`); see bench/README.md for what each "
            "figure measures. Medians of interleaved runs in one session; read the ratios.",
            "",
            *head,
            "",
            markdown(body),
            "",
            *(f"{line}  " for line in notes(rows)),
            "",
        ]
        with open(args.markdown, "w", encoding="utf-8") as handle:
            handle.write("\n".join(text))
        print(f"written to {args.markdown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
