"""The one table of bench/run: the rows the benchmarks wrote (harness.emit), in EXPECTED's order,
a row that no benchmark reported marked so, the notes numbered below; with --markdown also
written, with the date and the machine, to OUT.md.

`python bench/summary.py RESULTS.jsonl [--markdown OUT.md] [--python PATH] [--elapsed S]`
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

from harness import table
from peers import cgroup_layout

# Every row's key and the module that reports it, in the table's order: the figures first.
EXPECTED = (
    ("spawn_path", "spawn_path"), ("apply_1", "spawn"), ("apply_50", "spawn"),
    ("apply_100_net", "scale"), ("net_setup", "netscale"), ("noop_apply", "scale"),
    ("noop_apply_validate", "scale"), ("status_100", "scale"), ("memory", "spawn"),
    ("daemon_rss", "daemon"), ("daemon_new_unit", "daemon"), ("teardown_100_net", "scale"),
    ("net_teardown", "netscale"), ("imports_status", "scale"), ("imports_validate", "scale"),
    ("validate", "load"), ("spawn_path_bind", "spawn_path"), ("status_cli", "status"),
    ("net_dumps", "netscale"), ("imports_other", "scale"),
)  # fmt: skip
HEADERS = ["figure", "sandman median (min-max)", "peers (median)", "ratio", "target", "verdict"]
PEERS = ("crun --version", "runc --version", "lxc-execute --version", "bwrap --version",
         "systemd-nspawn --version", "ip -V", "nft -v")  # fmt: skip
LAYOUTS = {"unified": "cgroup v2 (unified)", "hybrid": "cgroup v1/v2 hybrid", "legacy": "cgroup v1"}


def rows(path: str) -> tuple[list[list[str]], list[str], list[str]]:
    """The table's rows (a row reported twice: the last one), the notes they are marked with,
    and the figures that missed their target."""
    found = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            found = {row["key"]: row for row in map(json.loads, filter(str.strip, handle))}
    for key, module in EXPECTED:
        why = f"not measured: bench/{module}.py reported nothing (see its output)"
        found.setdefault(key, {"cells": [key, "-", "-", "-", "-", why], "note": ""})
    order = [key for key, _ in EXPECTED] + [key for key in found if key not in dict(EXPECTED)]
    body: list[list[str]] = []
    notes: list[str] = []
    missed = [
        found[key]["cells"][0] for key in order if found[key]["cells"][5].startswith("MISSED")
    ]
    for row in (found[key] for key in order):
        body.append(row["cells"])
        if row["note"]:
            notes.append(f"[{len(notes) + 1}] {row['note']}")
            body[-1][0] += f" [{len(notes)}]"
    return body, notes, missed


def machine(python: str) -> list[str]:
    argv = (python, "-c", "import platform; print(platform.python_version())")
    version = subprocess.run(argv, capture_output=True, text=True, check=False).stdout.strip()
    debian = ""
    if os.path.exists("/etc/debian_version"):
        with open("/etc/debian_version", encoding="utf-8") as handle:
            debian = f"Debian {handle.read().strip()}, "
    peers = []
    for tool, *flags in map(str.split, PEERS):
        if shutil.which(tool) is not None:
            result = subprocess.run((tool, *flags), capture_output=True, text=True, check=False)
            if text := (result.stdout or result.stderr).strip():
                line = text.splitlines()[0]
                peers.append(line if tool in line else f"{tool} {line}")
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return [
        f"Measured {now}: {debian}kernel {platform.release()}, {os.cpu_count()} CPUs, "
        f"{LAYOUTS[cgroup_layout()]}, CPython {version or '?'}.",
        "Peers: " + "; ".join(peers) + ".",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description="The summary table of bench/run.")
    parser.add_argument("results", help="the JSON rows the benchmarks wrote")
    parser.add_argument("--markdown", metavar="OUT", help="also write the table as markdown")
    parser.add_argument("--python", default=sys.executable, help="the interpreter timed")
    parser.add_argument("--elapsed", type=float, help="seconds the whole run took")
    args = parser.parse_args()
    body, notes, missed = rows(args.results)
    head = machine(args.python)
    if args.elapsed is not None:
        head.append(f"The whole bench/run took {args.elapsed / 60:.1f} minutes.")
    print("summary (ratios are the figures; the machine is shared and noisy):")
    print("\n".join(f"  {line}" for line in head) + "\n")
    print(table(HEADERS, body, numbers=False))
    print("\n".join(f"  {line}" for line in notes) + "\n")
    print(f"{len(missed)} target(s) MISSED" + (": " + "; ".join(missed) if missed else ""))
    if args.markdown:
        escaped = (" | ".join(cell.replace("|", "\\|") for cell in row) for row in body)
        intro = (
            "Written by `bench/run` (`bench/summary.py`); see bench/README.md for what each "
            "figure measures. Medians of interleaved runs in one session; read the ratios."
        )
        table_lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
        table_lines += [f"| {row} |" for row in escaped]
        text = ["# Benchmark results", "", intro, "", *head, "", *table_lines, ""]
        with open(args.markdown, "w", encoding="utf-8") as handle:
            handle.write("\n".join([*text, *(f"{note}  " for note in notes), ""]))
        print(f"written to {args.markdown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
