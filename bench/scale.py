"""100 sandboxes with network, ports and limits: apply, no-op apply, status, destroy, the imports
of every verb, and the daemon's memory and its start of a new unit.

`sudo .venv/bin/python bench/scale.py [--runs 3] [--repeat 3] [--warmups 1] [--daemon-trials 5]`

One network (`nat = true`) and 100 `/bin/sleep 1000` sandboxes, each with a port forward from
127.0.0.1 and three limits. Beside it the script a user would write (netscript.py): per sandbox
`crun run -d`, the limits written into crun's v1 cgroups, a veth born in the container's netns,
`ip netns attach`, address, route and DNAT rules; its teardown. Per round: the script's setup and
teardown; `sandman apply`; with the 100 running, `--repeat` interleaved runs of a no-op apply,
`validate DIR`, `python -c "import pydantic, pyroute2, tomli"`, `status`, `python -c pass`; then
`sandman destroy`. After the rounds: `python -X importtime` of every verb, then `sandman daemon`
(`--debounce 0 --drift-interval 0`): its VmRSS one second after READY=1 with 10 and 100
sandboxes, and with 100 a new unit file renamed into its dir until the record's init runs,
beside a cold `sandman apply DIR` of the same unit with the daemon stopped.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator

from harness import (
    BenchError,
    CrunMounts,
    Instance,
    Peer,
    Session,
    Stats,
    Trial,
    clean_env,
    command,
    crun_bundle,
    emit,
    importtime,
    main,
    options,
    print_trials,
    restore_at_end,
    run_rounds,
    sandbox_unit,
    table,
)
from netscript import (
    FORWARDING,
    NETNS_DIR,
    NETWORK_SETUP,
    NETWORK_TEARDOWN,
    SANDBOX_NAMES,
    SANDBOX_NETWORK,
    Names,
    per_sandbox,
)

MANY = 100
PORTS = 44000  # sandman's host ports PORTS+1..; the script's PORTS+500+1..
LIMITS = '\n[resources]\nmemory_max = "64M"\ncpu_max = "50%"\npids_max = 64\n'
DEPS = "pydantic, pyroute2, tomli"
RSS_LIMIT_MB = 60.0
DAEMON_FLAGS = ("--debounce", "0", "--drift-interval", "0")
NEW_UNIT = "added"  # the unit file added to the daemon's dir: NEW_UNIT.sandbox.toml
NEW_UNIT_TEXT = '[sandbox]\ncommand = ["/bin/sleep", "1000"]\n\n[rootfs]\nimage = "busybox"\n'
POLL = 0.001  # s between looks at the new unit's record
TIMEOUT = 120.0  # s for READY=1, a new unit's init, a pass of the daemon
NEW_UNIT_FIGURE = "daemon: a new unit file to its init running"
COLD = "cold `sandman apply`"

SETUP = per_sandbox(
    SANDBOX_NAMES,
    r"""
    crun --root "$CRUN_ROOT" run -d --pid-file "$CRUN_ROOT/$name.pid" --bundle "$BUNDLE" "$name"
    pid=$(<"$CRUN_ROOT/$name.pid")
    echo $((64 << 20)) > "/sys/fs/cgroup/memory/$name/memory.limit_in_bytes"
    echo 50000 > "/sys/fs/cgroup/cpu/$name/cpu.cfs_quota_us"
    echo 64 > "/sys/fs/cgroup/pids/$name/pids.max"
    ip link add "$veth" type veth peer name eth0 netns "$pid"
    ip link set "$veth" master "$BRIDGE" up
    ip netns attach "$name" "$pid"
    """,
    SANDBOX_NETWORK,
    before=NETWORK_SETUP,
)
TEARDOWN = per_sandbox(
    'crun --root "$CRUN_ROOT" delete -f "$PREFIX-$i"\nip netns del "$PREFIX-$i"',
    after=NETWORK_TEARDOWN,
)


def units(names: Names, count: int) -> dict[str, str]:
    found = {"net.network.toml": f'[network]\nsubnet = "{names.sandman_net}"\nnat = true\n'}
    for i in range(1, count + 1):
        forward = f'host = {PORTS + i}, sandbox = 80, host_address = "127.0.0.1"'
        net = f'\n[network]\nattach = "net"\nports = [{{ {forward} }}]\n'
        found[f"n{i:03d}.sandbox.toml"] = sandbox_unit(f'stop_timeout = "1s"\n{net}{LIMITS}')
    return found


class Script:
    """The hand-written script, run where crun runs; what an interrupted run of it left
    (containers, their cgroups, then the names netscript removes) goes at the end."""

    def __init__(self, session: Session, names: Names, rootfs: str) -> None:
        self.session, self.names = session, names
        self.root = os.path.join(session.workdir, "crun")
        self.mounts = CrunMounts(session)
        head = names.header(PORTS + 500, CRUN_ROOT=self.root, BUNDLE=crun_bundle(session, rootfs))
        self.paths = names.write(session.workdir, head, {"setup": SETUP, "teardown": TEARDOWN})
        session.cleanup.add("the script's containers", self.remove_containers)

    def run(self, step: str, count: int) -> None:
        with self.mounts.entered():
            self.session.runner.run(("bash", self.paths[step], str(count)))

    def trial(self) -> Trial:
        return Trial(
            "script: crun + iproute2 + nft + cgroup writes; its teardown",
            lambda: self.run("setup", MANY),
            lambda: self.run("teardown", MANY),
            timed_stop=True,
            settle=self.names.settle,
        )

    def check(self) -> None:
        self.run("setup", 1)
        try:
            with self.mounts.entered():  # where the script's netns names are
                inside = self.session.runner.output(("ip", "-n", f"{self.names.prefix}-1", "addr"))
            memory = f"/sys/fs/cgroup/memory/{self.names.prefix}-1/memory.limit_in_bytes"
            with open(memory, encoding="ascii") as handle:
                limit = handle.read().strip()
        finally:
            self.run("teardown", 1)
            self.names.settle()
        addresses = [t for t in inside.split() if "/" in t and t[0].isdigit()]
        print(f"checked: the script's sandbox 1 has {addresses} and memory limit {limit}")

    def remove_containers(self) -> None:
        """What an interrupted script left where it runs: containers, named netns, cgroups."""
        run, prefix = self.session.runner, f"{self.names.prefix}-"
        with self.mounts.entered():
            if os.path.isdir(self.root):
                for ident in run.output(("crun", "--root", self.root, "list", "-q")).split():
                    run.run(("crun", "--root", self.root, "delete", "-f", ident))
            for netns in _entries(NETNS_DIR, prefix):
                run.run(("ip", "netns", "del", os.path.basename(netns)))
        for top in os.listdir("/sys/fs/cgroup"):
            for entry in _entries(os.path.join("/sys/fs/cgroup", top), prefix):
                with contextlib.suppress(OSError):
                    os.rmdir(entry)


def _entries(directory: str, prefix: str) -> Iterator[str]:
    if os.path.isdir(directory) and not os.path.islink(directory):
        yield from (
            os.path.join(directory, e) for e in os.listdir(directory) if e.startswith(prefix)
        )


def check_sandman(session: Session, instance: Instance) -> None:
    """Every sandbox runs after an apply, and a second apply changes nothing."""
    instance.apply()
    try:
        report = json.loads(session.runner.output(instance.argv("status", "--json")))
        running = sum(s["state"] == "running" for s in report["sandboxes"])
        again = session.runner.output(instance.argv("apply")).strip().splitlines()[-1:]
    finally:
        instance.destroy()
        instance.settle()
    if running != MANY:
        raise BenchError(f"{running} of {MANY} sandboxes run after apply")
    print(f"checked: {running} of {MANY} sandboxes running after apply; a second apply: {again}")


def sandman_trials(session: Session, instance: Instance) -> tuple[Trial, list[Trial]]:
    """apply, then with the sandboxes running `--repeat` rounds of the hot commands, destroy."""
    py, run = session.python, session.runner
    hot = [
        command(run, "sandman apply, no-op", instance.argv("apply")),
        command(run, "sandman validate DIR", session.sandman("validate", instance.units)),
        command(run, f'python -c "import {DEPS}"', (py, "-c", f"import {DEPS}")),
        command(run, "sandman status", instance.argv("status")),
        command(run, "python -c pass", (py, "-c", "pass")),
    ]

    def while_running(keep: bool) -> None:
        for _ in range(session.args.repeat):
            for trial in hot:
                trial.once(keep)

    label = f"sandman apply ({MANY}, network, ports, limits); destroy"
    trial = Trial(label, instance.apply, instance.destroy, timed_stop=True, after=while_running)
    trial.settle = instance.settle
    return trial, hot


def emit_rounds(script: Trial, sandman: Trial, hot: list[Trial]) -> None:
    noop, validate, deps, status, bare = (t.stats for t in hot)
    assert noop and validate and deps and status and bare
    script_down, sandman_down = Stats(tuple(script.down)), Stats(tuple(sandman.down))
    rows = (
        ("apply_100_net", f"`apply` of {MANY} sandboxes with network, ports and limits",
         sandman.stats, [Peer("script", script.stats.median if script.stats else None)],
         0.7, "that script"),
        ("noop_apply", f"no-op `apply` over {MANY} running sandboxes (network, limits)",
         noop, [Peer("deps import", deps.median), Peer("validate", validate.median)],
         1.3, "that import"),
        ("noop_apply_validate", "no-op `apply` over the same, against `validate` (issue #7)",
         noop, [Peer("validate", validate.median)], 2.0, "`validate` of the dir"),
        ("status_100", f"`status` of {MANY} running sandboxes",
         status, [Peer("python -c pass", bare.median)], 5.0, "`python -c pass`"),
        ("teardown_100_net", f"teardown of {MANY} sandboxes with network (`destroy`)",
         sandman_down, [Peer("script", script_down.median)], 1.0, "the script's teardown"),
    )  # fmt: skip
    for key, figure, mine, peers, limit, yardstick in rows:
        per = key in ("apply_100_net", "teardown_100_net") and mine is not None
        emit(
            key,
            figure,
            sandman=mine,
            peers=peers,
            base=peers[0].label,
            limit=limit,
            target=f"<= {limit}x {yardstick}",
            note=f"{mine.median / MANY:.1f} ms per sandbox" if per and mine else "",
        )


def verb_imports(session: Session, instance: Instance) -> None:
    """`python -X importtime` of every verb with the sandboxes running (destroy last): the
    status and validate rows (what they must not import), the others for information."""
    instance.apply()
    paths = session.paths(instance.state)
    verbs = {
        "--help": ("--help",),
        "validate": ("validate", instance.units),
        "plan": ("plan", instance.units, *paths),
        "schema": ("schema",),
        "images": ("images", "--image-dir", session.images),
        "status": ("status", *paths),
        "status --json": ("status", "--json", *paths),
        "logs": ("logs", "n001", *paths),
        "exec": ("exec", "n001", *paths, "--", "/bin/true"),
        "apply (no-op)": ("apply", instance.units, *paths),
        "destroy": ("destroy", instance.units, *paths),
    }
    rows, others = [], []
    for verb, argv in verbs.items():
        imports = importtime(session, ("-m", "sandman", *argv), runs=1 if verb == "destroy" else 3)
        heavy = [m for m in ("pyroute2", "pydantic") if imports.under(m)]
        rows.append([verb, f"{imports.total:.1f}", str(len(imports.self_ms)), " ".join(heavy)])
        forbidden = {"status": ("pyroute2", "pydantic"), "validate": ("pyroute2",)}.get(verb)
        if forbidden is None:
            others.append(f"{verb} {imports.total:.1f} ms" + "".join(f" +{m}" for m in heavy))
            continue
        hits = [m for m in forbidden if m in heavy]
        emit(
            f"imports_{verb}",
            f"imports of `{verb}` (python -X importtime)",
            value=imports.total,
            target=f"no {' and no '.join(forbidden)}",
            verdict="MISSED: imports " + ", ".join(hits) if hits else "met",
            note=f"{len(imports.self_ms)} modules",
        )
    instance.settle()
    print(table(["verb", "import ms", "modules", "imports"], rows))
    emit("imports_other", "imports of the other verbs (info)", verdict="-", note="; ".join(others))


# --- the daemon ---------------------------------------------------------------------------------


def vm_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise BenchError(f"no VmRSS for {pid}")


def poll(done: Callable[[], bool], what: str, daemon: subprocess.Popen[bytes] | None) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not done():
        if daemon is not None and daemon.poll() is not None:
            raise BenchError(f"the daemon exited with {daemon.returncode} ({what})")
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: not within {TIMEOUT:.0f} s")
        time.sleep(POLL)


@contextlib.contextmanager
def daemon(session: Session, instance: Instance) -> Iterator[subprocess.Popen[bytes]]:
    """`sandman daemon DIR` with READY=1 received on the NOTIFY_SOCKET bound here, its journal
    (stderr) in NewUnit's file; stopped with SIGTERM at the end (its sandboxes keep running)."""
    path = os.path.join(session.workdir, f"notify-{os.path.basename(instance.units)}")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(path)
    listener.settimeout(TIMEOUT)
    argv = session.sandman("daemon", instance.units, *DAEMON_FLAGS, *session.paths(instance.state))
    with open(NewUnit(instance).journal, "wb") as journal:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=journal,
            env={**clean_env(), "NOTIFY_SOCKET": path},
            cwd=session.workdir,
        )
    try:
        while "READY=1" not in listener.recv(4096).decode(errors="replace").split("\n"):
            if process.poll() is not None:
                raise BenchError(f"the daemon exited with {process.returncode} before READY=1")
        time.sleep(1.0)  # let it settle into its watch loop
        yield process
    except TimeoutError:
        raise BenchError(f"the daemon sent no READY=1 in {TIMEOUT:.0f} s") from None
    finally:
        listener.close()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class NewUnit:
    """The unit added to a running instance's dir: written under a hidden name (the daemon and
    the loader skip names starting with a dot), renamed in; its record's init awaited; the
    daemon's passes over it read from its journal."""

    def __init__(self, instance: Instance) -> None:
        self.final = os.path.join(instance.units, f"{NEW_UNIT}.sandbox.toml")
        self.hidden = os.path.join(instance.units, f".{NEW_UNIT}.sandbox.toml.tmp")
        self.record = os.path.join(instance.state, "sandboxes", f"{NEW_UNIT}.json")
        self.journal = f"{instance.units}.daemon.log"
        self.offset = 0

    def add(self) -> None:
        with open(self.hidden, "w", encoding="utf-8") as handle:
            handle.write(NEW_UNIT_TEXT)
        os.rename(self.hidden, self.final)

    def restore(self) -> None:
        """On an interruption: the file back while its sandbox runs, for `destroy DIR`."""
        if os.path.exists(self.record) and not os.path.exists(self.final):
            self.add()

    def running(self) -> bool:
        """The record exists and its runtime.pid is a live process (not a zombie)."""
        try:
            with open(self.record, "rb") as handle:
                pid = int(json.loads(handle.read())["runtime"]["pid"])
            with open(f"/proc/{pid}/stat", "rb") as handle:
                stat = handle.read()
        except (OSError, ValueError, KeyError, TypeError):
            return False
        return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] not in (b"Z", b"X")

    def gone(self) -> bool:
        return not os.path.exists(self.record)

    def mark(self) -> None:
        self.offset = os.path.getsize(self.journal)

    def pass_ended(self) -> bool:
        """A journal line since the mark names the unit (a pass's last line names its reason);
        an error line raises."""
        with open(self.journal, "rb") as handle:
            handle.seek(self.offset)
            lines = handle.read().decode(errors="replace").splitlines()
        if errors := [line for line in lines if line.startswith("<3>")]:
            raise BenchError(f"the daemon logged: {errors[0][3:]}")
        return any(f"({NEW_UNIT}.sandbox.toml): " in line for line in lines)


def through_daemon(unit: NewUnit, process: subprocess.Popen[bytes], trials: int) -> list[float]:
    """Per trial: the unit renamed in, timed until its init runs; untimed, the end of that pass
    awaited, the file removed, its record's removal and that pass's end awaited."""
    samples = []
    for _ in range(trials):
        unit.mark()
        start = time.perf_counter()
        unit.add()
        poll(unit.running, "the new unit's init running", process)
        samples.append((time.perf_counter() - start) * 1000.0)
        poll(unit.pass_ended, "the end of its pass", process)
        unit.mark()
        os.unlink(unit.final)
        poll(unit.gone, "its record removed", process)
        poll(unit.pass_ended, "the end of its pass", process)
    return samples


def cold(session: Session, instance: Instance, unit: NewUnit, trials: int) -> list[float]:
    """Per trial, the daemon stopped: the unit added, `sandman apply DIR` timed; then, untimed,
    the file removed and applied away."""
    samples = []
    for _ in range(trials):
        unit.add()
        start = time.perf_counter()
        instance.apply()
        samples.append((time.perf_counter() - start) * 1000.0)
        if not unit.running():
            raise BenchError(f"after `sandman apply`, {NEW_UNIT}'s init does not run")
        os.unlink(unit.final)
        instance.apply()
    return samples


def measure_daemon(session: Session, names: Names) -> None:
    args, rss, warm, colds = session.args, {}, [], []
    trials = args.warmups + args.daemon_trials
    for count in (10, MANY):
        instance = Instance.make(session, f"daemon-{count}", units(names, count))
        instance.apply()
        unit = NewUnit(instance)
        session.cleanup.add("the added unit", unit.restore)
        with daemon(session, instance) as process:
            rss[count] = vm_rss(process.pid) / 2**20
            if count == MANY:
                warm = through_daemon(unit, process, trials)[args.warmups :]
        if count == MANY:
            colds = cold(session, instance, unit, trials)[args.warmups :]
        instance.destroy()
        instance.settle()
    growth = (rss[MANY] - rss[10]) / (MANY - 10)
    emit(
        "daemon_rss",
        f"daemon RSS with {MANY} sandboxes watched",
        value=rss[MANY],
        unit="MB",
        peers=[Peer("10 sandboxes", rss[10])],
        target=f"<= {RSS_LIMIT_MB:.0f} MB, flat in the count",
        verdict="met" if rss[MANY] <= RSS_LIMIT_MB and growth <= 0.1 else "MISSED",
        note=f"{growth * 1024:.0f} kB more per sandbox from 10 to {MANY}",
    )
    theirs = Stats(tuple(colds))
    emit(
        "daemon_new_unit",
        NEW_UNIT_FIGURE,
        sandman=Stats(tuple(warm)),
        peers=[Peer(COLD, theirs.median)],
        base=COLD,
        verdict="-",
        note=f"`sandman daemon {' '.join(DAEMON_FLAGS)}` (--debounce 0: the smallest it accepts; "
        f"default 200 ms) watching {MANY} networked sandboxes; one `sleep 1000` busybox unit "
        f"without network renamed in, until its record's runtime.pid runs (/proc polled every "
        f"{POLL * 1000:.0f} ms); cold: `sandman apply DIR` with the unit added, daemon stopped, "
        f"the {MANY} running, {theirs} ms",
    )


def measure(session: Session) -> None:
    for tool in ("crun", "ip", "nft"):
        if shutil.which(tool) is None:
            raise BenchError(f"{tool} is missing: bench/run installs it")
    restore_at_end(session.cleanup, FORWARDING)
    names = Names.pick(session.cleanup)
    script = Script(session, names, session.image())
    instance = Instance.make(session, "scale", units(names, MANY))
    script.check()
    check_sandman(session, instance)
    theirs = script.trial()
    mine, hot = sandman_trials(session, instance)
    args = session.args
    run_rounds([theirs, mine], args.runs, args.warmups)
    print(f"{MANY} sandboxes: {args.runs} rounds, {args.repeat} runs of each command a round")
    print_trials([theirs, mine, *hot])
    emit_rounds(theirs, mine, hot)
    verb_imports(session, instance)
    measure_daemon(session, names)


if __name__ == "__main__":
    parser = options(f"Time {MANY} networked, limited sandboxes beside crun + iproute2.", runs=3)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each hot command a round")
    parser.add_argument("--daemon-trials", type=int, default=5, help="new units timed (default 5)")
    raise SystemExit(main("bench/scale.py", parser, measure))
