"""100 sandboxes with network, ports and limits: apply, no-op apply, status, destroy, imports.

`python bench/scale.py [--runs 3] [--repeat 3] [--warmups 1] [--daemon-trials 5] [--python PATH]
[--no-install]`

As root. Units in a temporary directory: one network (a free 10.2xx.X.0/24, `nat = true`) and
100 `/bin/sleep 1000` sandboxes attached to it, each with one port forward from 127.0.0.1 and
three limits (`memory_max = "64M"`, `cpu_max = "50%"`, `pids_max = 64`); a private state,
image and log dir. Beside it, the script a user would write with crun and iproute2 (`bash`, one
process per step): a bridge with the gateway address, `ip_forward`, one `nft -f` for a table
with the guard, the NAT chains and masquerade (as netscale.py's script), then per sandbox `crun
run -d` (pid, net, ipc, uts, mount namespaces; crun makes its cgroup), a veth born in the
container's netns (`ip link add vethI type veth peer name eth0 netns PID`), `ip netns attach`,
the address, eth0 up, the default route, two DNAT rules, and the three limits written into
crun's v1 cgroups with `echo`; its teardown `crun delete -f`, `ip netns del` each, the bridge and
the table. crun runs in a mount namespace without /sys/fs/cgroup/unified on a v1/v2 hybrid
host (crun refuses the hybrid; see spawn.py); the whole script runs there.

Each round, timed: the script's setup, its teardown; `sandman apply DIR`; then, with the 100
sandboxes running, `--repeat` interleaved runs of: a no-op `sandman apply DIR`, `sandman
validate DIR`, `python -c "import pydantic, pyroute2, tomli"` (the dependencies a no-op apply
loads), `sandman status`, `python -c pass`; then `sandman destroy DIR`. After the rounds, with
the sandboxes applied once more: `python -X importtime` of every CLI verb (does `status` stay off
pydantic and pyroute2, `validate` off pyroute2?), then the daemon's resident memory with 10 and
100 sandboxes if `sandman daemon` exists (VmRSS once it sent READY=1 on $NOTIFY_SOCKET; it runs
with `--debounce 0 --drift-interval 0`), and, with 100, `--daemon-trials` times after
`--warmups`, a new unit file renamed into its dir until the record's init runs (information),
beside `sandman apply DIR` of the same dir with the unit added, the daemon stopped (cold).

Everything (sandboxes via `sandman destroy`, crun containers, the script's netns, links, table
and cgroups, the mount namespace, the temporary directory) is removed at the end, on an error
and on Ctrl-C or SIGTERM too.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import netscript
from common import (
    BenchError,
    Peer,
    Stats,
    cgroup_layout,
    clean_env,
    describe_host,
    emit,
    ms,
    real_python,
    require_modules,
    restore_at_end,
    run_main,
    table,
)
from load import ImportSummary, forbidden_imports, importtime
from netscale import (
    FORWARDING,
    NETNS_DIR,
    Names,
    _links,
    _nft_tables,
    instance_tag,
    pick_names,
    tag_in_use,
    wait_links_gone,
)
from netscript import NETWORK_SETUP, NETWORK_TEARDOWN, SANDBOX_NAMES, SANDBOX_NETWORK, per_sandbox
from spawn import (
    PrivateMounts,
    Session,
    StepError,
    build_image,
    make_bundle,
    run_session,
)

MANY = 100
PORTS = 44000  # sandman's host ports PORTS+1..; the script's PORTS+500+1..
SANDBOX_PORT = 80
LIMITS_UNIT = '[resources]\nmemory_max = "64M"\ncpu_max = "50%"\npids_max = 64\n'
DEPS = "pydantic, pyroute2, tomli"
APPLY_LIMIT = 0.7
NOOP_LIMIT = 1.3
NOOP_VALIDATE_LIMIT = 2.0
STATUS_LIMIT = 5.0
TEARDOWN_LIMIT = 1.0
RSS_LIMIT_MB = 60.0
READY_TIMEOUT = 120.0
IMPORT_RUNS = 3
DAEMON_TRIALS = 5
DAEMON_FLAGS = ("--debounce", "0", "--drift-interval", "0")
NEW_UNIT = "added"  # the unit file added to the daemon's dir: NEW_UNIT.sandbox.toml
NEW_UNIT_TEXT = '[sandbox]\ncommand = ["/bin/sleep", "1000"]\n\n[rootfs]\nimage = "busybox"\n'
POLL_INTERVAL = 0.001  # s
TRIAL_TIMEOUT = 60.0  # s

APPLY = "sandman apply (100, network, ports, limits)"
DESTROY = "sandman destroy (100)"
SCRIPT_UP = "script: crun + iproute2 + nft + cgroup writes"
SCRIPT_DOWN = "script teardown: crun delete, ip netns del, bridge, table"
NOOP = "sandman apply, no-op"
VALIDATE = "sandman validate DIR"
DEPS_IMPORT = f'python -c "import {DEPS}"'
STATUS = "sandman status"
PASS = "python -c pass"
NEW_UNIT_FIGURE = "daemon: a new unit file to its init running"
COLD = "cold `sandman apply`"

# The script (netscript.py): per sandbox a crun container, whose netns gets the veth and a name,
# and its three limits written into crun's v1 cgroups.
SETUP_SCRIPT = per_sandbox(
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
TEARDOWN_SCRIPT = per_sandbox(
    """
    crun --root "$CRUN_ROOT" delete -f "$PREFIX-$i"
    ip netns del "$PREFIX-$i"
    """,
    after=NETWORK_TEARDOWN,
)


@dataclass
class Setup:
    session: Session
    names: Names
    units: str
    state: str
    mounts: PrivateMounts | None
    crun_root: str
    scripts: dict[str, str]

    def sandman(self, verb: str, *args: str) -> tuple[str, ...]:
        return self.session.sandman(verb, *args)

    def paths(self, state: str | None = None) -> tuple[str, ...]:
        return self.session.paths(state or self.state)

    def context(self) -> contextlib.AbstractContextManager[None]:
        return self.mounts.entered() if self.mounts is not None else contextlib.nullcontext()

    @property
    def tag(self) -> str:
        return instance_tag(self.state)


def free_state(workdir: str, name: str) -> str:
    for suffix in range(100):
        state = os.path.join(workdir, f"{name}-{suffix}")
        if not tag_in_use(instance_tag(state)):
            return state
    raise BenchError("no state dir under the work dir has an instance tag free on this host")


def write_units(directory: str, names: Names, count: int) -> None:
    os.makedirs(directory, exist_ok=True)
    for entry in os.listdir(directory):
        os.unlink(os.path.join(directory, entry))
    with open(os.path.join(directory, "net.network.toml"), "w", encoding="utf-8") as handle:
        handle.write(f'[network]\nsubnet = "{names.sandman_net}"\nnat = true\n')
    for index in range(1, count + 1):
        forward = f'host = {PORTS + index}, sandbox = {SANDBOX_PORT}, host_address = "127.0.0.1"'
        text = (
            '[sandbox]\ncommand = ["/bin/sleep", "1000"]\nstop_timeout = "1s"\n\n'
            f'[network]\nattach = "net"\nports = [{{ {forward} }}]\n\n{LIMITS_UNIT}'
        )
        path = os.path.join(directory, f"n{index:03d}.sandbox.toml")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)


def write_scripts(setup: Setup, bundle: str) -> dict[str, str]:
    header = setup.names.script_header(PORTS + 500, CRUN_ROOT=setup.crun_root, BUNDLE=bundle)
    bodies = {"setup": SETUP_SCRIPT, "teardown": TEARDOWN_SCRIPT}
    return netscript.write_scripts(setup.session.workdir, header, bodies)


def _quiet(argv: Sequence[str]) -> None:
    subprocess.run(argv, env=clean_env(), capture_output=True, check=False)


def remove_script_objects(setup: Setup) -> list[str]:
    """What an interrupted script left: containers, named netns, links, table, cgroups; returns
    what is still there after."""
    prefix = setup.names.prefix
    with setup.context():
        if os.path.isdir(setup.crun_root):
            listed = setup.session.runner.output(("crun", "--root", setup.crun_root, "list", "-q"))
            for ident in listed.split():
                _quiet(("crun", "--root", setup.crun_root, "delete", "-f", ident))
        netns = os.listdir(NETNS_DIR) if os.path.isdir(NETNS_DIR) else []
        for ns in (n for n in netns if n.startswith(f"{prefix}-")):
            _quiet(("ip", "netns", "del", ns))
    for link in (n for n in _links() if n.startswith(prefix)):
        _quiet(("ip", "link", "del", link))
    if prefix in _nft_tables():
        _quiet(("nft", "delete", "table", "inet", prefix))
    with contextlib.suppress(StepError):
        wait_links_gone((prefix,))
    left = [f"link {n}" for n in _links() if n.startswith(prefix)]
    if prefix in _nft_tables():
        left.append(f"table inet {prefix}")
    return left + remove_script_cgroups(prefix)


def remove_script_cgroups(prefix: str) -> list[str]:
    """crun's cgroups of the script's containers (crun delete removes them; an interrupted
    `crun run` may not)."""
    left = []
    for controller in os.listdir("/sys/fs/cgroup"):
        root = os.path.join("/sys/fs/cgroup", controller)
        if not os.path.isdir(root) or os.path.islink(root):
            continue
        for entry in (e for e in os.listdir(root) if e.startswith(f"{prefix}-")):
            with contextlib.suppress(OSError):
                os.rmdir(os.path.join(root, entry))
            if os.path.isdir(os.path.join(root, entry)):
                left.append(f"cgroup {controller}/{entry}")
    return left


def has_records(state: str) -> bool:
    for kind in ("sandboxes", "networks", "slices"):
        path = os.path.join(state, kind)
        if os.path.isdir(path) and any(n.endswith(".json") for n in os.listdir(path)):
            return True
    return False


def sandman_leftovers(tag: str) -> list[str]:
    left = [f"link {n}" for n in _links() if n.startswith((f"{tag}-", f"{tag}b-"))]
    for hierarchy in ("memory", "pids", "cpu", "unified", ""):
        path = os.path.join("/sys/fs/cgroup", hierarchy, f"sandman-{tag}")
        if os.path.isdir(path) and any(e.is_dir() for e in os.scandir(path)):
            left.append(f"cgroup {path} with children")
    if f"sandman_{tag}" in _nft_tables():
        left.append(f"table inet sandman_{tag}")
    return left


# --- the rounds -------------------------------------------------------------------------------


def timed(step: Callable[[], None]) -> float:
    start = time.perf_counter()
    step()
    return (time.perf_counter() - start) * 1000.0


def measure_rounds(setup: Setup, args: argparse.Namespace) -> dict[str, list[float]]:
    session, runner = setup.session, setup.session.runner
    py = session.python
    apply = setup.sandman("apply", setup.units, *setup.paths())
    destroy = setup.sandman("destroy", setup.units, *setup.paths())
    hot = {
        NOOP: apply,
        VALIDATE: setup.sandman("validate", setup.units),
        DEPS_IMPORT: (py, "-c", f"import {DEPS}"),
        STATUS: setup.sandman("status", *setup.paths()),
        PASS: (py, "-c", "pass"),
    }
    samples: dict[str, list[float]] = {
        label: [] for label in (SCRIPT_UP, SCRIPT_DOWN, APPLY, DESTROY, *hot)
    }
    script_up = ("bash", setup.scripts["setup"], str(MANY))
    script_down = ("bash", setup.scripts["teardown"], str(MANY))
    tag = setup.tag
    total = args.warmups + args.runs
    for index in range(total):
        keep = index >= args.warmups
        _progress(f"round {index + 1}/{total}" + ("" if keep else " (warm-up)"))
        with setup.context():
            up = timed(lambda: runner.run(script_up, fresh=True))
            down = timed(lambda: runner.run(script_down, fresh=True))
        wait_links_gone((setup.names.prefix,))
        up_sandman = timed(lambda: runner.run(apply, fresh=True))
        hot_samples: dict[str, list[float]] = {label: [] for label in hot}
        for _ in range(args.repeat):
            for label, argv in hot.items():
                hot_samples[label].append(timed(functools.partial(runner.run, argv, fresh=True)))
        down_sandman = timed(lambda: runner.run(destroy, fresh=True))
        wait_links_gone((f"{tag}-", f"{tag}b-"))
        if keep:
            samples[SCRIPT_UP].append(up)
            samples[SCRIPT_DOWN].append(down)
            samples[APPLY].append(up_sandman)
            samples[DESTROY].append(down_sandman)
            for label, values in hot_samples.items():
                samples[label].extend(values)
    return samples


def check_sandman(setup: Setup) -> str:
    """One apply looked at: every sandbox running, a second apply says no changes."""
    runner = setup.session.runner
    runner.run(setup.sandman("apply", setup.units, *setup.paths()), fresh=True)
    report = json.loads(runner.output(setup.sandman("status", "--json", *setup.paths())))
    running = [s for s in report["sandboxes"] if s["state"] == "running"]
    again = runner.output(setup.sandman("apply", setup.units, *setup.paths()))
    runner.run(setup.sandman("destroy", setup.units, *setup.paths()), fresh=True)
    wait_links_gone((f"{setup.tag}-", f"{setup.tag}b-"))
    if len(running) != MANY:
        raise BenchError(f"{len(running)} of {MANY} sandboxes run after apply")
    last = again.strip().splitlines()[-1:] or ["(nothing)"]
    return (
        f"check: {len(running)} of {MANY} sandboxes running after apply; a second apply: {last[0]}"
    )


def check_script(setup: Setup) -> str:
    runner = setup.session.runner
    with setup.context():
        runner.run(("bash", setup.scripts["setup"], "1"), fresh=True)
        try:
            inside = runner.output(("ip", "-n", f"{setup.names.prefix}-1", "-4", "-o", "addr"))
            limit = open(  # noqa: SIM115 - read once
                f"/sys/fs/cgroup/memory/{setup.names.prefix}-1/memory.limit_in_bytes",
                encoding="ascii",
            ).read()
        finally:
            runner.run(("bash", setup.scripts["teardown"], "1"), fresh=True)
    wait_links_gone((setup.names.prefix,))
    addresses = [t for t in inside.split() if "/" in t and t[0].isdigit()]
    return (
        f"check: the script's sandbox 1 has {', '.join(addresses)} inside and memory limit "
        f"{limit.strip()}"
    )


# --- imports per verb -------------------------------------------------------------------------


@dataclass(frozen=True)
class VerbImports:
    verb: str
    total_ms: float
    modules: int
    pyroute2: bool
    pydantic: bool


def verb_imports(setup: Setup) -> list[VerbImports]:
    """`python -X importtime` of each verb, with the 100 sandboxes running (destroy last)."""
    runner = setup.session.runner
    units, paths = setup.units, setup.paths()
    runner.run(setup.sandman("apply", units, *paths), fresh=True)
    verbs: list[tuple[str, tuple[str, ...]]] = [
        ("--help", ("--help",)),
        ("validate", ("validate", units)),
        ("plan", ("plan", units, *paths)),
        ("schema", ("schema", "sandbox")),
        ("images", ("images", "--image-dir", setup.session.images)),
        ("status", ("status", *paths)),
        ("status --json", ("status", "--json", *paths)),
        ("logs", ("logs", "n001", *paths)),
        ("exec", ("exec", "n001", *paths, "--", "/bin/true")),
        ("apply (no-op)", ("apply", units, *paths)),
        ("destroy", ("destroy", units, *paths)),
    ]
    found = []
    for verb, argv in verbs:
        runs = IMPORT_RUNS if verb != "destroy" else 1
        try:
            rows = [
                importtime(setup.session.python, ("-m", "sandman", *argv), setup.session.workdir)
                for _ in range(runs)
            ]
        except BenchError as exc:
            print(f"  imports of {verb}: failed: {str(exc).splitlines()[0]}")
            continue
        summary = ImportSummary.of(rows)
        bad = forbidden_imports(rows[0], ("pyroute2", "pydantic"))
        found.append(
            VerbImports(
                verb,
                summary.total(),
                len(summary.order),
                bool(bad["pyroute2"]),
                bool(bad["pydantic"]),
            )
        )
    wait_links_gone((f"{setup.tag}-", f"{setup.tag}b-"))
    return found


def imports_report(found: Sequence[VerbImports]) -> str:
    rows = [
        [
            v.verb,
            ms(v.total_ms),
            str(v.modules),
            "IMPORTED" if v.pyroute2 else "no",
            "IMPORTED" if v.pydantic else "no",
        ]
        for v in found
    ]
    return "\n".join(
        [
            f"imports per CLI verb (python -X importtime, sum of self times, median of "
            f"{IMPORT_RUNS} runs; destroy once), {MANY} networked sandboxes running:",
            table(["verb", "import ms", "modules", "pyroute2", "pydantic"], rows, right=(1, 2)),
        ]
    )


def emit_imports(found: Sequence[VerbImports]) -> None:
    by_verb = {v.verb: v for v in found}
    for verb, forbidden in (("status", ("pyroute2", "pydantic")), ("validate", ("pyroute2",))):
        v = by_verb.get(verb)
        if v is None:
            emit(f"imports_{verb}", f"imports of `{verb}`", verdict="not measured")
            continue
        hits = [m for m in forbidden if getattr(v, m)]
        emit(
            f"imports_{verb}",
            f"imports of `{verb}` (python -X importtime)",
            value=v.total_ms,
            target=f"no {' and no '.join(forbidden)}",
            verdict="MISSED: imports " + ", ".join(hits) if hits else "met",
            note=f"{v.modules} modules",
        )
    others = [v for v in found if v.verb not in ("status", "validate")]
    if others:
        text = "; ".join(
            f"{v.verb} {ms(v.total_ms)} ms"
            + ("".join(f" +{m}" for m in ("pyroute2", "pydantic") if getattr(v, m)))
            for v in others
        )
        emit("imports_other", "imports of the other verbs (info)", verdict="-", note=text)


# --- the daemon -------------------------------------------------------------------------------


def daemon_available(setup: Setup) -> bool:
    result = subprocess.run(
        setup.sandman("daemon", "--help"),
        capture_output=True,
        env=clean_env(),
        cwd=setup.session.workdir,
        check=False,
    )
    return result.returncode == 0


def vm_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise BenchError(f"no VmRSS for {pid}")


@dataclass
class DaemonRun:
    """A `sandman daemon` started on a unit dir of `count` sandboxes, READY=1 received."""

    process: subprocess.Popen[bytes]
    units: str
    state: str
    paths: tuple[str, ...]
    journal: str  # its stderr: one line per event
    count: int


def _wait_ready(listener: socket.socket, daemon: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        listener.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            message = listener.recv(4096).decode(errors="replace")
        except TimeoutError:
            raise BenchError(f"the daemon sent no READY=1 in {READY_TIMEOUT:.0f} s") from None
        if "READY=1" in message.split("\n"):
            return
        if daemon.poll() is not None:
            raise BenchError(f"the daemon exited with {daemon.returncode} before READY=1")


def daemon_session(
    setup: Setup,
    count: int,
    while_up: Callable[[DaemonRun], None],
    after: Callable[[DaemonRun], None],
) -> None:
    """Start `sandman daemon` (DAEMON_FLAGS) on `count` sandboxes, wait for READY=1 on the
    NOTIFY_SOCKET bound here, run `while_up`, stop it (SIGTERM; the sandboxes keep running), run
    `after`, then destroy the sandboxes, whatever failed."""
    session = setup.session
    units = os.path.join(session.workdir, f"units-daemon-{count}")
    state = free_state(session.workdir, f"state-daemon-{count}")
    write_units(units, setup.names, count)
    paths = setup.paths(state)
    destroy = setup.sandman("destroy", units, NEW_UNIT, *paths)  # the added unit, file or not
    tag = instance_tag(state)

    def take_down() -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(units, f"{NEW_UNIT}.sandbox.toml"))
        if has_records(state):
            session.runner.run(destroy, fresh=True)
        with contextlib.suppress(StepError):
            wait_links_gone((f"{tag}-", f"{tag}b-"))

    session.cleanup.add(f"sandman destroy {units}", take_down)
    path = os.path.join(session.workdir, f"notify-{count}")
    journal = os.path.join(session.workdir, f"daemon-{count}.log")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(path)
    env = {**clean_env(), "NOTIFY_SOCKET": path}
    with open(journal, "wb") as stderr:
        daemon = subprocess.Popen(
            setup.sandman("daemon", units, *DAEMON_FLAGS, *paths),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=env,
            cwd=session.workdir,
        )
    run = DaemonRun(daemon, units, state, paths, journal, count)
    try:
        try:
            _wait_ready(listener, daemon)
            while_up(run)
        finally:
            listener.close()
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
                try:
                    daemon.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    daemon.kill()
                    daemon.wait()
        after(run)
    finally:
        take_down()


# --- the daemon: a new unit file to its init running, against a cold apply ---------------------


def _hidden_written(units: str) -> tuple[str, str]:
    final = os.path.join(units, f"{NEW_UNIT}.sandbox.toml")
    hidden = os.path.join(units, f".{NEW_UNIT}.sandbox.toml.tmp")
    with open(hidden, "w", encoding="utf-8") as handle:
        handle.write(NEW_UNIT_TEXT)
    return hidden, final


def _init_running(record: str) -> bool:
    """The record exists and its runtime.pid is a live process (not a zombie)."""
    try:
        with open(record, "rb") as handle:
            pid = int(json.loads(handle.read())["runtime"]["pid"])
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
        try:
            stat = os.read(fd, 512)
        finally:
            os.close(fd)
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] not in (b"Z", b"X")


class Journal:
    """The daemon's stderr, read from where the last look left off."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.offset = os.path.getsize(path)

    def pass_ended(self, needle: str) -> str | None:
        """The first new line naming `needle` (a pass's last line names its reason), or None;
        an error line raises."""
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            text = handle.read().decode(errors="replace")
        for line in text.splitlines():
            if line.startswith("<3>"):
                raise BenchError(f"the daemon logged: {line[3:]}")
            if needle in line:
                return line
        return None


def _poll(done: Callable[[], bool], what: str, daemon: DaemonRun | None = None) -> None:
    deadline = time.monotonic() + TRIAL_TIMEOUT
    while not done():
        if daemon is not None and daemon.process.poll() is not None:
            raise BenchError(f"the daemon exited with {daemon.process.returncode} ({what})")
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: not within {TRIAL_TIMEOUT:.0f} s")
        time.sleep(POLL_INTERVAL)


def _await_pass(journal: Journal, needle: str, run: DaemonRun) -> None:
    _poll(lambda: journal.pass_ended(needle) is not None, "the end of its pass", run)


def new_unit_trials(run: DaemonRun, trials: int) -> list[float]:
    """Per trial: the unit renamed in, timed until its record names a live init; then, untimed,
    the pass's last line awaited, the file removed, and the record and that pass awaited."""
    record = os.path.join(run.state, "sandboxes", f"{NEW_UNIT}.json")
    needle = f"({NEW_UNIT}.sandbox.toml): "
    samples = []
    for _ in range(trials):
        hidden, final = _hidden_written(run.units)
        journal = Journal(run.journal)
        start = time.perf_counter()
        os.rename(hidden, final)
        _poll(lambda: _init_running(record), "the new unit's init running", run)
        samples.append((time.perf_counter() - start) * 1000.0)
        _await_pass(journal, needle, run)
        journal = Journal(run.journal)
        os.unlink(final)
        _poll(lambda: not os.path.exists(record), "its record removed", run)
        _await_pass(journal, needle, run)
    return samples


def cold_apply_trials(setup: Setup, run: DaemonRun, trials: int) -> list[float]:
    """Per trial, the daemon stopped and the sandboxes running: the unit written, `sandman apply
    DIR` timed; then, untimed, the file removed and applied away."""
    runner = setup.session.runner
    apply = setup.sandman("apply", run.units, *run.paths)
    record = os.path.join(run.state, "sandboxes", f"{NEW_UNIT}.json")
    samples = []
    for _ in range(trials):
        hidden, final = _hidden_written(run.units)
        os.rename(hidden, final)
        samples.append(timed(lambda: runner.run(apply, fresh=True)))
        if not _init_running(record):
            raise BenchError(f"after `sandman apply`, {NEW_UNIT}'s init does not run")
        os.unlink(final)
        runner.run(apply, fresh=True)
    return samples


def measure_daemon(setup: Setup, args: argparse.Namespace) -> list[str]:
    figure = "daemon RSS with 100 sandboxes watched"
    target = f"<= {RSS_LIMIT_MB:.0f} MB, flat in the count"
    if not daemon_available(setup):
        emit("daemon_rss", figure, target=target, verdict="not measured: no daemon yet")
        emit("daemon_new_unit", NEW_UNIT_FIGURE, verdict="not measured: no daemon yet")
        return ["daemon: `sandman daemon --help` fails: not measured (no daemon yet)"]
    rss: dict[int, int] = {}
    warm: list[float] = []
    cold: list[float] = []
    why = ""
    total = args.warmups + args.daemon_trials

    def up(run: DaemonRun) -> None:
        nonlocal why
        time.sleep(1.0)  # let it settle into its watch loop
        rss[run.count] = vm_rss(run.process.pid)
        if run.count == MANY:
            try:
                warm.extend(new_unit_trials(run, total)[args.warmups :])
            except (BenchError, StepError, OSError) as exc:
                why = f"not measured: {exc}"

    def down(run: DaemonRun) -> None:
        nonlocal why
        if run.count == MANY and warm:
            try:
                cold.extend(cold_apply_trials(setup, run, total)[args.warmups :])
            except (BenchError, StepError, OSError) as exc:
                why = f"cold apply not measured: {exc}"

    try:
        for count in (10, MANY):
            daemon_session(setup, count, up, down)
    except (BenchError, StepError, OSError) as exc:
        emit("daemon_rss", figure, target=target, verdict=f"not measured: {exc}")
        emit("daemon_new_unit", NEW_UNIT_FIGURE, verdict=f"not measured: {exc}")
        return [f"daemon: not measured: {exc}"]
    return [emit_rss(rss, figure, target), emit_new_unit(warm, cold, why)]


def emit_rss(rss: dict[int, int], figure: str, target: str) -> str:
    small, large = rss[10] / 2**20, rss[MANY] / 2**20
    growth = (large - small) / (MANY - 10)
    flat = growth * 1000 <= 100  # under 100 kB per sandbox
    verdict = "met" if large <= RSS_LIMIT_MB and flat else "MISSED"
    emit(
        "daemon_rss",
        figure,
        value=large,
        unit="MB",
        peers=[Peer("10 sandboxes", small)],
        target=target,
        verdict=verdict,
        note=f"{growth * 1024:.0f} kB more per sandbox from 10 to {MANY}",
    )
    return (
        f"daemon VmRSS once READY=1: {small:.1f} MB with 10 sandboxes, {large:.1f} MB with "
        f"{MANY} ({growth * 1024:.0f} kB per sandbox): {verdict}"
    )


def emit_new_unit(warm: list[float], cold: list[float], why: str) -> str:
    if not warm:
        emit("daemon_new_unit", NEW_UNIT_FIGURE, verdict=why or "not measured")
        return f"daemon, a new unit file: {why or 'not measured'}"
    mine = Stats(tuple(warm))
    spread = f"{ms(mine.median)} ms ({ms(mine.low)}-{ms(mine.high)}, {len(warm)} trials)"
    how = (
        f"`sandman daemon {' '.join(DAEMON_FLAGS)}` (--debounce 0: the smallest it accepts; "
        f"default 200 ms) watching {MANY} networked sandboxes; one `sleep 1000` busybox unit "
        f"without network renamed in, until its record's runtime.pid runs (/proc polled every "
        f"{POLL_INTERVAL * 1000:.0f} ms)"
    )
    peers: list[Peer] = []
    line = f"daemon, a new unit file to its init running: {spread}"
    if cold:
        theirs = Stats(tuple(cold))
        peers.append(Peer(COLD, theirs.median))
        how += (
            f"; cold: `sandman apply DIR` with the unit added, daemon stopped, the {MANY} "
            f"running, {ms(theirs.median)} ({ms(theirs.low)}-{ms(theirs.high)}) ms"
        )
        line += (
            f"; `sandman apply DIR` with it added: {ms(theirs.median)} ms "
            f"({ms(theirs.low)}-{ms(theirs.high)})"
        )
    else:
        peers.append(Peer(COLD, why=why or "n/a"))
        line += f"; cold apply: {why or 'n/a'}"
    emit(
        "daemon_new_unit",
        NEW_UNIT_FIGURE,
        sandman=mine,
        peers=peers,
        base=COLD if cold else None,
        verdict="-",
        note=how,
    )
    return line


# --- report -----------------------------------------------------------------------------------


def report(samples: dict[str, list[float]]) -> str:
    stats = {label: Stats(tuple(v)) for label, v in samples.items()}
    rows = [
        [label, ms(s.median), f"{ms(s.low)}-{ms(s.high)}", str(len(s.samples))]
        for label, s in stats.items()
    ]
    lines = [table(["command", "median ms", "min-max ms", "runs"], rows, right=(1, 2, 3)), ""]
    figures = (
        ("apply_100_net", f"`apply` of {MANY} sandboxes with network, ports and limits",
         APPLY, SCRIPT_UP, "script", APPLY_LIMIT, "that script"),
        ("noop_apply", f"no-op `apply` over {MANY} running sandboxes (network, limits)",
         NOOP, DEPS_IMPORT, "deps import", NOOP_LIMIT, "that import"),
        ("noop_apply_validate", "no-op `apply` over the same, against `validate` (issue #7)",
         NOOP, VALIDATE, "validate", NOOP_VALIDATE_LIMIT, "`validate` of the dir"),
        ("status_100", f"`status` of {MANY} running sandboxes",
         STATUS, PASS, "python -c pass", STATUS_LIMIT, "`python -c pass`"),
        ("teardown_100_net", f"teardown of {MANY} sandboxes with network (`destroy`)",
         DESTROY, SCRIPT_DOWN, "script", TEARDOWN_LIMIT, "the script's teardown"),
    )  # fmt: skip
    lines.append("targets (issue #10, #7):")
    for key, figure, mine, theirs, short, limit, yardstick in figures:
        achieved = stats[mine].median / stats[theirs].median
        verdict = "met" if achieved <= limit else "MISSED"
        lines.append(
            f"  {figure}: {ms(stats[mine].median)} / {ms(stats[theirs].median)} ms = "
            f"{achieved:.2f}x, limit {limit}x: {verdict}"
        )
        peers = [Peer(short, stats[theirs].median)]
        note = ""
        if key in ("apply_100_net", "teardown_100_net"):
            note = f"{ms(stats[mine].median / MANY)} ms per sandbox"
        if key == "noop_apply":
            peers.append(Peer("validate", stats[VALIDATE].median))
        emit(
            key,
            figure,
            sandman=stats[mine],
            peers=peers,
            base=short,
            limit=limit,
            target=f"<= {limit}x {yardstick}",
            note=note,
        )
    return "\n".join(lines)


def _progress(text: str) -> None:
    if sys.stderr.isatty():
        print(f"\r  {text}" + " " * 10, end="", file=sys.stderr, flush=True)


# --- main -------------------------------------------------------------------------------------


def prepare(session: Session) -> Setup:
    names = pick_names()
    state = free_state(session.workdir, "state")
    units = os.path.join(session.workdir, "units")
    write_units(units, names, MANY)
    build_image(session)
    rootfs = os.path.join(session.images, "busybox")
    mounts = None
    if cgroup_layout() == "hybrid":
        mounts = PrivateMounts.make()
        session.cleanup.add("the private mount namespace", mounts.close)
    crun_root = os.path.join(session.workdir, "crun")
    setup = Setup(session, names, units, state, mounts, crun_root, {})

    def script_objects() -> None:
        left = remove_script_objects(setup)
        if left:
            raise StepError(f"the script's objects are still there: {', '.join(left[:5])}")

    session.cleanup.add(f"the script's objects ({names.prefix}*)", script_objects)

    def sandman_objects() -> None:
        if has_records(state):
            session.runner.run(setup.sandman("destroy", units, *setup.paths()), fresh=True)
        with contextlib.suppress(StepError):
            wait_links_gone((f"{setup.tag}-", f"{setup.tag}b-"))
        left = sandman_leftovers(setup.tag)
        if left:
            raise StepError(f"left after `sandman destroy`: {', '.join(left[:5])}")

    session.cleanup.add(f"sandman destroy {units}", sandman_objects)
    bundle = make_bundle(session.runner, session.workdir, rootfs)
    setup.scripts = write_scripts(setup, bundle)
    return setup


def measure(session: Session, args: argparse.Namespace) -> None:
    require_modules(session.python, ("sandman.cli",), cwd=session.workdir)
    missing = [tool for tool in ("crun", "ip", "nft") if shutil.which(tool) is None]
    if missing:
        for key in ("apply_100_net", "teardown_100_net"):
            emit(key, key, verdict=f"not measured: {', '.join(missing)} missing")
        raise BenchError(f"{', '.join(missing)} missing: bench/run installs them")
    setup = prepare(session)
    print(f"sandman at scale: {MANY} sandboxes with network, ports and limits")
    print(f"  interpreter: {describe_host(session.python)}")
    print(
        f"  {args.runs} rounds after {args.warmups} warm-up(s); per round the script up and "
        f"down, sandman apply, {args.repeat} x each command with the sandboxes running, "
        "sandman destroy; wall time of whole processes"
    )
    where = "in a private mount namespace without " if setup.mounts else "in the host's "
    print(f"  the script runs {where}{'/sys/fs/cgroup/unified' if setup.mounts else 'namespace'}")
    print(f"  {check_script(setup)}")
    print(f"  {check_sandman(setup)}")
    print()
    samples = measure_rounds(setup, args)
    if sys.stderr.isatty():
        print("\r" + " " * 40 + "\r", end="", file=sys.stderr, flush=True)
    print(report(samples))
    print()
    found = verb_imports(setup)
    print(imports_report(found))
    emit_imports(found)
    print()
    for line in measure_daemon(setup, args):
        print(line)


def run(args: argparse.Namespace) -> None:
    if os.geteuid() != 0:
        print("bench/scale.py: needs root (sandboxes, netns, cgroups); skipped")
        return
    python = real_python(args.python)

    def body(session: Session) -> None:
        restore_at_end(session.cleanup, FORWARDING, "ip_forward")
        measure(session, args)

    run_session("bench/scale.py", "sandman-bench-scale-", python, body)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=f"Time apply, no-op apply, status and destroy of {MANY} networked, limited "
        "sandboxes against crun + iproute2 and the interpreter (root)."
    )
    parser.add_argument("--runs", type=int, default=3, help="timed rounds (default 3)")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of each command per round (default 3)"
    )
    parser.add_argument("--warmups", type=int, default=1, help="untimed rounds first (default 1)")
    parser.add_argument(
        "--daemon-trials",
        type=int,
        default=DAEMON_TRIALS,
        help="new unit files timed through the daemon, and cold applies, after --warmups "
        f"(default {DAEMON_TRIALS})",
    )
    parser.add_argument(
        "--python", metavar="PATH", help="the interpreter of the timed commands (default: this one)"
    )
    parser.add_argument("--no-install", action="store_true", help="accepted; bench/run installs")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.repeat < 1 or args.daemon_trials < 1 or args.warmups < 0:
        parser.error(
            "--runs, --repeat and --daemon-trials must be at least 1, --warmups at least 0"
        )
    return run_main("bench/scale.py", lambda: run(args), (ValueError, OSError, StepError))


if __name__ == "__main__":
    raise SystemExit(main())
