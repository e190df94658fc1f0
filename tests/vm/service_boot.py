#!/usr/bin/python3
"""sandman as a user runs it on a host systemd boots, on pure cgroup v2 (issue #16):
    sudo .venv/bin/python tests/vm/run.py --systemd -- python3 tests/vm/service_boot.py

Boot 1 installs and enables the service as the README's "Running as a service" says, with the
shipped units/ as /etc/sandman/units, checks the sandboxes run in the systemd scope sandman asks
for, that `systemctl restart sandman` leaves every init as it was, then asks for a reboot.
Boot 2 finds the sandboxes made again at startup by the enabled service, `systemctl status`
active with the daemon's STATUS line, the pass in the journal, the web sandbox answering on its
forwarded port, a unit edit applied by `systemctl reload`, and `systemctl stop` (--on-stop keep)
leaving the sandboxes running; `sandman destroy` of the directory then removes the scope too.
Standard library only: it runs before and beside the venv.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
UNITS = Path("/etc/sandman/units")
SANDMAN = "/usr/local/bin/sandman"
SCOPE = Path("/sys/fs/cgroup/machine.slice/sandman.scope")
SANDBOXES = ("client", "web", "worker")
WAIT = float(os.environ.get("SANDMAN_TEST_WAIT", "150"))  # emulated: every step is slow


def main() -> int:
    boot = os.environ.get("VM_BOOT", "1")
    try:
        {"1": first_boot, "2": second_boot}[boot]()
    except CheckError as exc:
        print(f"boot {boot}: FAILED: {exc}", flush=True)
        show("journalctl", "-b", "-u", "sandman", "--no-pager", "-n", "80")
        show("systemctl", "list-jobs", "--no-pager")
        keep_journal(boot)
        return 1
    print(f"boot {boot}: passed", flush=True)
    if os.environ.get("SANDMAN_VM_SYSTEMD_DEBUG"):
        keep_journal(boot)
    return 0


def debug_systemd() -> None:
    """SANDMAN_VM_SYSTEMD_DEBUG=1: PID 1 logs each bus message and job, now and after the
    reboot, and the journal is kept on success too (for a failure that changes with timing)."""
    conf = Path("/etc/systemd/system.conf.d")
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "sandman-test-debug.conf").write_text("[Manager]\nLogLevel=debug\n")
    run("systemd-analyze", "log-level", "debug")


def keep_journal(boot: str) -> None:
    """The whole boot's journal, precise times, into the run's results on the host: what
    systemd did beside sandman is what a failure at boot needs."""
    results = os.environ.get("VM_RESULTS")
    if results:
        with open(Path(results, f"journal-boot-{boot}.txt"), "w", encoding="utf-8") as out:
            journal = ["journalctl", "-b", "-o", "short-precise", "--no-pager"]
            subprocess.run(journal, stdout=out, check=False)


class CheckError(Exception):
    pass


def check(condition: object, message: str) -> None:
    if not condition:
        raise CheckError(message)


def run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise CheckError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def show(*argv: str) -> None:
    print(f"$ {' '.join(argv)}", flush=True)
    subprocess.run(argv, check=False)


def step(text: str) -> None:
    print(f"--- {text}", flush=True)


def first_boot() -> None:
    step("install as the README says")
    run("sh", str(REPO / "contrib/setup.sh"))
    os.symlink(REPO / ".venv/bin/sandman", SANDMAN)
    run(
        "install",
        "-m",
        "644",
        str(REPO / "contrib/systemd/sandman.service"),
        "/etc/systemd/system/",
    )
    run("install", "-m", "644", str(REPO / "contrib/systemd/sandman.conf"), "/etc/tmpfiles.d/")
    run("systemd-tmpfiles", "--create", "/etc/tmpfiles.d/sandman.conf")
    for unit in (REPO / "units").glob("*.toml"):
        (UNITS / unit.name).write_text(unit.read_text())
    run(SANDMAN, "image", "busybox")
    if os.environ.get("SANDMAN_VM_SYSTEMD_DEBUG"):
        debug_systemd()
    run("systemctl", "daemon-reload")
    run("systemctl", "enable", "--now", "sandman")
    step("the sandboxes run in the systemd scope")
    before = sandboxes_running()
    in_scope(before)
    no_failure(run("journalctl", "-b", "-u", "sandman", "--no-pager"))
    check("active" in run("systemctl", "show", "-P", "ActiveState", "sandman.scope"), "no scope")
    step("systemctl restart sandman leaves every init as it was")
    run("systemctl", "restart", "sandman")
    wait_active()
    after = sandboxes_running()
    check(after == before, f"inits changed across a restart: {before} -> {after}")
    run("touch", os.environ["VM_REBOOT"])


def second_boot() -> None:
    step("the enabled service made the sandboxes at startup")
    wait_active()
    pids = sandboxes_running()
    in_scope(pids)
    status = run("systemctl", "status", "sandman", "--no-pager")
    print(status, flush=True)
    text = run("systemctl", "show", "-P", "StatusText", "sandman").strip()
    check(text.startswith("3 sandboxes running"), f"STATUS= is {text!r}")
    journal = run("journalctl", "-b", "-u", "sandman", "--no-pager")
    check("sandbox/web" in journal, "the daemon's pass is not in this boot's journal")
    no_failure(journal)
    step("from outside: the web sandbox answers on its forwarded port")
    page = fetch("http://127.0.0.1:8080/")
    check(page.strip() == "hello from web", f"the forwarded port answered {page!r}")
    step("from inside: the worker sees its own cgroup root and clock offset")
    inside = run(SANDMAN, "exec", "worker", "--", "cat", "/proc/self/cgroup")
    check(inside.strip() == "0::/", f"worker's /proc/self/cgroup: {inside!r}")
    step("systemctl reload applies an edit")
    web = UNITS / "web.sandbox.toml"
    web.write_text(web.read_text().replace('memory_max = "64M"', 'memory_max = "48M"'))
    run("systemctl", "reload", "sandman")
    web_cgroup = SCOPE / "services" / "web"
    wait_for(lambda: read(web_cgroup / "memory.max") == str(48 << 20), "memory.max of web")
    step("systemctl stop sandman (--on-stop keep) leaves the sandboxes running")
    run("systemctl", "stop", "sandman")
    check(all(alive(pid) for pid in pids.values()), "a sandbox stopped with the service")
    show("systemd-cgls", "--no-pager", "/machine.slice")
    step("destroying everything ends the holder, and systemd removes the scope")
    run(SANDMAN, "destroy", str(UNITS))
    check(not any(alive(pid) for pid in pids.values()), "an init outlived destroy")
    wait_for(lambda: not SCOPE.exists(), "the scope's cgroup gone")
    state = run("systemctl", "show", "-P", "LoadState", "sandman.scope").strip()
    check(state == "not-found", f"sandman.scope is still {state}")


def no_failure(journal: str) -> None:
    """The daemon's first pass went through: no action failed (a scope that took its minute
    to start, as when it was ordered after the service, shows here and nowhere else)."""
    failed = [line for line in journal.splitlines() if "FAILED" in line]
    check(not failed, f"an action of the daemon failed: {failed}")


def wait_active() -> None:
    wait_for(
        lambda: run("systemctl", "show", "-P", "ActiveState", "sandman").strip() == "active",
        "sandman.service active",
    )


def sandboxes_running() -> dict[str, int]:
    """name -> init pid, once `sandman status` shows all three running."""
    found: dict[str, int] = {}

    def all_running() -> bool:
        report = json.loads(run(SANDMAN, "status", "--json"))
        found.clear()
        found.update({s["name"]: s["pid"] for s in report["sandboxes"] if s["state"] == "running"})
        return set(found) == set(SANDBOXES)

    wait_for(all_running, f"{', '.join(SANDBOXES)} running")
    return dict(found)


def in_scope(pids: dict[str, int]) -> None:
    """From outside: each init is in its cgroup below the scope, in the slice the units say."""
    for name, pid in pids.items():
        cgroup = read(Path(f"/proc/{pid}/cgroup")).removeprefix("0::")
        parent = "/machine.slice/sandman.scope" + ("/services" if name != "worker" else "")
        check(cgroup == f"{parent}/{name}", f"{name}'s init {pid} is in {cgroup}")
    holder = read(SCOPE / "sandman.holder" / "cgroup.procs").split()
    check(len(holder) == 1, f"the scope's holder leaf holds {holder}")
    check(read(SCOPE / "services" / "memory.max") == str(512 << 20), "services slice limit")


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return str(answer.read().decode())


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    last = ""
    while True:
        try:
            if condition():
                return
        except CheckError as exc:
            last = f"; the last try: {exc}"  # kept, to say why the wait ran out
        if time.monotonic() > deadline:
            raise CheckError(f"waited {WAIT:.0f} s for {what}{last}")
        time.sleep(1)


if __name__ == "__main__":
    sys.exit(main())
