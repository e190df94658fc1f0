"""The one table of bench/run: the rows the benchmarks wrote (harness.emit), in EXPECTED's order
(only those of --modules when given), a row that no benchmark reported marked so, the notes
numbered below; with --markdown also written, with the date and the machine, to OUT.md.

OUT.md has two parts: this host's table, then from GUEST_HEADING on the table of a run in the
pure cgroup v2 guest (`bench/run --guest`); writing one part keeps the other. In the guest,
--guest writes the guest's part; on the host, --insert-guest FILE puts the guest's part the
guest wrote (FILE, brought back by the VM runner) into OUT.md.

`python bench/summary.py RESULTS.jsonl [--modules M,...] [--markdown OUT.md [--guest]]
[--python PATH] [--elapsed S]`; `python bench/summary.py --insert-guest FILE --markdown OUT.md`
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Collection

from harness import table
from peers import cgroup_layout

# Every row's key and the module that reports it, in the table's order: the figures first.
EXPECTED = (
    ("spawn_path", "spawn_path"), ("apply_1", "spawn"), ("apply_50", "spawn"),
    ("apply_100_net", "scale"), ("net_setup", "netscale"), ("noop_apply", "scale"),
    ("noop_apply_validate", "scale"), ("status_100", "scale"), ("memory", "spawn"),
    ("daemon_rss", "daemon"), ("daemon_new_unit", "daemon"), ("teardown_100_net", "scale"),
    ("net_teardown", "netscale"), ("imports_status", "scale"), ("imports_validate", "scale"),
    ("imports_noop_apply", "scale"), ("validate", "load"), ("validate_changed", "load"),
    ("validate_changed_kept", "load"),
    ("spawn_path_bind", "spawn_path"), ("spawn_path_python_floor", "spawn_path"),
    ("status_cli", "status"),
    ("net_dumps", "netscale"), ("imports_other", "scale"), ("linear_apply", "linear"),
    ("linear_status", "linear"), ("linear_noop_apply", "linear"), ("linear_destroy", "linear"),
)  # fmt: skip
HEADERS = ["figure", "sandman median (min-max)", "peers (median)", "ratio", "target", "verdict"]
PEERS = ("crun --version", "runc --version", "lxc-execute --version", "bwrap --version",
         "systemd-nspawn --version", "ip -V", "nft -v")  # fmt: skip
LAYOUTS = {"unified": "cgroup v2 (unified)", "hybrid": "cgroup v1/v2 hybrid", "legacy": "cgroup v1"}
INTRO = (
    "Written by `bench/run` (`bench/summary.py`); see bench/README.md for what each "
    "figure measures. Medians of interleaved runs in one session; read the ratios."
)
GUEST_HEADING = "## In the pure cgroup v2 guest"
GUEST_INTRO = (
    "Written by `bench/run --guest`: the same modules run in the VM runner's pure cgroup v2 "
    "Debian guest (tests/vm/run.py, our init as PID 1, no systemd), where crun runs as it is "
    "(on a v1/v2 hybrid host it needs a private mount namespace). Emulated (the CPU says `QEMU "
    "TCG CPU`: no usable KVM) and on CPUs shared with whatever else the host runs, every "
    "absolute time is tens to hundreds of times that of the host: only the ratios within the "
    "one run mean anything."
)


def rows(
    path: str, modules: Collection[str] | None = None
) -> tuple[list[list[str]], list[str], list[str]]:
    """The table's rows (a row reported twice: the last one), the notes they are marked with,
    and the figures that missed their target; the rows expected of `modules` only, if given."""
    found = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            found = {row["key"]: row for row in map(json.loads, filter(str.strip, handle))}
    expected = [(k, m) for k, m in EXPECTED if modules is None or m in modules]
    for key, module in expected:
        why = f"not measured: bench/{module}.py reported nothing (see its output)"
        found.setdefault(key, {"cells": [key, "-", "-", "-", "-", why], "note": ""})
    order = [key for key, _ in expected] + [key for key in found if key not in dict(EXPECTED)]
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
        f"Measured {now}: {debian}kernel {platform.release()}, {os.cpu_count()} CPUs"
        f"{cpu_model()}, {LAYOUTS[cgroup_layout()]}, CPython {version or '?'}.",
        "Peers: " + "; ".join(peers) + ".",
    ]


def cpu_model() -> str:
    """` (MODEL)` of the first CPU in /proc/cpuinfo, or nothing: an emulated guest's says so."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return f" ({' '.join(line.split(':', 1)[1].split())})"
    return ""


def split_parts(text: str) -> tuple[str, str]:
    """A RESULTS.md's host part and its guest part (from GUEST_HEADING's line on, or "")."""
    at = text.find(f"\n{GUEST_HEADING}")
    if text.startswith(GUEST_HEADING):
        at = 0
    elif at < 0:
        return text, ""
    else:
        at += 1
    return text[:at], text[at:]


def write_part(path: str, text: str, guest: bool) -> None:
    """Write the host or the guest part of PATH as TEXT, the other part kept as it is."""
    old = ""
    with contextlib.suppress(FileNotFoundError), open(path, encoding="utf-8") as handle:
        old = handle.read()
    host_part, guest_part = split_parts(old)
    if guest:
        host_part = host_part.rstrip("\n") + "\n\n" if host_part.strip() else ""
        new = host_part + text
    else:
        new = text + ("\n" + guest_part if guest_part else "")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(new)


def markdown(head: list[str], body: list[list[str]], notes: list[str], guest: bool) -> str:
    escaped = (" | ".join(cell.replace("|", "\\|") for cell in row) for row in body)
    table_lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    table_lines += [f"| {row} |" for row in escaped]
    title = [GUEST_HEADING, "", GUEST_INTRO] if guest else ["# Benchmark results", "", INTRO]
    text = [*title, "", *head, "", *table_lines, ""]
    return "\n".join([*text, *(f"{note}  " for note in notes), ""])


def main() -> int:
    parser = argparse.ArgumentParser(description="The summary table of bench/run.")
    parser.add_argument("results", nargs="?", help="the JSON rows the benchmarks wrote")
    parser.add_argument("--modules", help="the rows of these modules only (comma-separated)")
    parser.add_argument("--markdown", metavar="OUT", help="also write the table as markdown")
    parser.add_argument("--guest", action="store_true", help="as OUT's guest part")
    parser.add_argument(
        "--insert-guest", metavar="FILE", help="put FILE's guest part into OUT; nothing else"
    )
    parser.add_argument("--python", default=sys.executable, help="the interpreter timed")
    parser.add_argument("--elapsed", type=float, help="seconds the whole run took")
    args = parser.parse_args()
    if args.insert_guest is not None:
        if args.markdown is None or args.results is not None:
            parser.error("--insert-guest FILE takes --markdown OUT and no RESULTS")
        with open(args.insert_guest, encoding="utf-8") as handle:
            part = split_parts(handle.read())[1]
        if not part:
            parser.error(f"{args.insert_guest} has no {GUEST_HEADING!r} part")
        write_part(args.markdown, part, guest=True)
        print(f"the guest's table written to {args.markdown}")
        return 0
    if args.results is None:
        parser.error("RESULTS is needed")
    modules = args.modules.split(",") if args.modules else None
    body, notes, missed = rows(args.results, modules)
    head = machine(args.python)
    if args.elapsed is not None:
        head.append(f"The whole bench/run took {args.elapsed / 60:.1f} minutes.")
    print("summary (ratios are the figures; the machine is shared and noisy):")
    print("\n".join(f"  {line}" for line in head) + "\n")
    print(table(HEADERS, body, numbers=False))
    print("\n".join(f"  {line}" for line in notes) + "\n")
    print(f"{len(missed)} target(s) MISSED" + (": " + "; ".join(missed) if missed else ""))
    if args.markdown:
        write_part(args.markdown, markdown(head, body, notes, args.guest), args.guest)
        print(f"written to {args.markdown}" + (" (its guest part)" if args.guest else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
