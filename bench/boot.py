"""From `sandman apply` of a booted Debian to `systemctl is-system-running --wait` returning
inside, beside `systemd-nspawn -b` of the same tree (#19), and each one's shutdown.

The tree is bookworm with systemd-sysv and dbus, made by `sandman image bootstrap` (mmdebstrap)
once and kept in the test cache ($SANDMAN_TEST_CACHE, /var/cache/sandman-test, the key the root
test test_debian_boot.py uses), so neither contender times a download. sandman boots it as
units/debian/os.sandbox.toml does (a user namespace with an explicit id map, an overlay root);
nspawn with `--register=no --keep-unit` (systemd is not PID 1 here), `--volatile=overlay` (the
tree stays as it is, as sandman's overlay keeps it) and no user namespace (nspawn's `-U` would
chown the shared tree). nspawn cannot detach: it runs in the background, and the time ends when
`systemctl is-system-running --wait`, run in its init's namespaces with nsenter, returns. The
shutdown: `sandman destroy` (SIGRTMIN+3, systemd's halt), nspawn's SIGTERM (which it passes on as
SIGRTMIN+3) to its exit.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import statistics
import subprocess
import time

from harness import BenchError, Instance, Peer, Session, Trial, emit, main, peer_of

from sandman.images import bootstrap

CACHE = os.environ.get("SANDMAN_TEST_CACHE", "/var/cache/sandman-test")
KEY = hashlib.sha256(",".join(bootstrap.BOOT_PACKAGES).encode()).hexdigest()[:8]
IMAGE = f"debian-{bootstrap.DEFAULT_SUITE}-{KEY}"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NSPAWN = ("--quiet", "--register=no", "--keep-unit", "--volatile=overlay", "--console=read-only")
STATES = ("running", "degraded")
WAIT = 120.0  # a boot that takes longer failed
STOP_WAIT = 30.0  # nspawn still there this long after its SIGTERM: killed, and counted


def debian_tree(session: Session) -> str:
    """The cached tree, made first when missing (minutes: mmdebstrap downloads the packages)."""
    images = os.path.join(CACHE, "images")
    tree = os.path.join(images, IMAGE)
    if not os.path.isdir(tree):
        print(f"making {tree} with `sandman image bootstrap` (once)")
        session.output(
            session.sandman("image", "bootstrap", "--image-dir", images, IMAGE, "debian")
        )
    return tree


def sandman_trial(session: Session, tree: str) -> Trial:
    session.images = os.path.join(session.workdir, "images")
    os.makedirs(session.images, exist_ok=True)
    # Hard links: the tree's files, never written through (the sandbox's root is an overlay).
    shutil.copytree(
        tree, os.path.join(session.images, "debian"), symlinks=True, copy_function=os.link
    )
    with open(os.path.join(REPO, "units/debian/os.sandbox.toml"), encoding="utf-8") as handle:
        unit = handle.read()
    instance = Instance.make(session, "boot", {"os.sandbox.toml": unit})

    def up() -> None:
        instance.apply()
        where = session.paths(instance.state)
        argv = session.sandman(
            "exec", *where, "os", "--", "systemctl", "is-system-running", "--wait"
        )
        _wait_running(session, argv, "sandman's")

    return Trial("sandman apply + boot", up, instance.destroy, timed_stop=True)


def _tail(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as handle:
        return "\n".join(handle.read().splitlines()[-5:])


def nspawn_trial(session: Session, tree: str, hung: list[str]) -> Trial:
    running: list[subprocess.Popen[bytes]] = []
    console = os.path.join(session.workdir, "nspawn-console.log")

    def up() -> None:
        argv = ("systemd-nspawn", "-D", tree, *NSPAWN, "-b")
        with open(console, "wb") as out:  # the container's console, read on a failure
            process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=session.env
            )
        running.append(process)
        init = _booted_child(process)
        enter = ("nsenter", "-t", str(init), "-a", "systemctl", "is-system-running", "--wait")
        _wait_running(session, enter, "nspawn's")

    def down() -> None:
        while running:
            process = running.pop()
            process.terminate()
            try:
                process.wait(timeout=STOP_WAIT)
            except subprocess.TimeoutExpired:
                # Seen once in six rounds on a loaded host: the container halted ("Halting
                # system." on its console) and nspawn stayed. Counted and said, not hidden.
                hung.append(_tail(console))
                process.kill()
                process.wait()

    session.cleanup.add("systemd-nspawn's boot", down)
    return Trial("systemd-nspawn -b", up, down, timed_stop=True, required=False)


def _wait_running(session: Session, argv: tuple[str, ...], whose: str) -> None:
    """`systemctl is-system-running --wait` until it answers: right after the init's exec (with
    either contender) systemd has made neither /run/systemd/system (systemctl then says
    "offline") nor its private socket ("Failed to connect to bus")."""
    deadline = time.monotonic() + WAIT
    while True:
        state = subprocess.run(argv, capture_output=True, text=True, env=session.env, check=False)
        if state.stdout.strip() in STATES:
            return
        early = state.stdout.strip() == "offline" or "Failed to connect to bus" in state.stderr
        if not early or time.monotonic() > deadline:
            raise BenchError(f"{whose} boot reached {state.stdout.strip()!r}: {state.stderr}")
        time.sleep(0.01)


def _booted_child(process: subprocess.Popen[bytes]) -> int:
    """The container's init: the child of nspawn that runs systemd (nspawn forks it through an
    intermediate child that exits), polled from /proc until it has exec'd."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"systemd-nspawn exited with {process.returncode}")
        for child in _children(process.pid):
            try:
                with open(f"/proc/{child}/comm", encoding="utf-8") as handle:
                    if handle.read().strip() == "systemd":
                        return child
            except OSError:
                continue
        time.sleep(0.005)
    raise BenchError("systemd-nspawn's init did not start")


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="utf-8") as handle:
            return [int(p) for p in handle.read().split()]
    except OSError:
        return []


def measure(session: Session) -> None:
    tree = debian_tree(session)
    trials, hung = [sandman_trial(session, tree)], list[str]()
    if shutil.which("systemd-nspawn") and shutil.which("nsenter"):
        trials.append(nspawn_trial(session, tree, hung))
    session.rounds("apply to is-system-running returning, then the shutdown", trials)
    by = {t.label: t for t in trials}
    mine = by["sandman apply + boot"]
    peer = peer_of(by, "systemd-nspawn -b", "nspawn -b")
    emit(
        "boot",
        "booted Debian bookworm: apply to `is-system-running --wait` returning",
        sandman=mine.stats,
        peers=[peer],
        base="nspawn -b",
        limit=1.5,
        target="<= 1.5x nspawn -b",
        note="nspawn without a user namespace, --volatile=overlay",
    )
    theirs = by.get("systemd-nspawn -b")
    down = statistics.median(mine.down) if mine.down else None
    their_down = statistics.median(theirs.down) if theirs and theirs.down else None
    if hung:
        print(f"systemd-nspawn stayed after its SIGTERM in {len(hung)} rounds; the last:")
        print(hung[-1])
    emit(
        "boot_stop",
        "booted Debian: shutdown (destroy; nspawn: SIGTERM) to gone",
        value=down,
        peers=[Peer("nspawn -b", their_down, "n/a: not run")],
        base="nspawn -b",
        limit=1.5,
        target="<= 1.5x nspawn -b",
        note=f"nspawn killed {STOP_WAIT:.0f} s after SIGTERM in {len(hung)} rounds" if hung else "",
    )


if __name__ == "__main__":
    raise SystemExit(main("Time a booted Debian beside systemd-nspawn -b.", measure, runs=5))
