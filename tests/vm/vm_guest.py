#!/usr/bin/python3
"""The guest's side of the VM runner (tests/vm/run.py): PID 1 of a default boot, or the command
service of a --systemd boot. It runs in the guest with Debian's python3 and the standard library
only, beside vm_recipe.py (both are copied into the image, to /opt/sandman-vm).

Each boot: unpack the checkout and the job (first boot only: the disk keeps them for the next),
check the guest is pure cgroup v2, run the command as root from the checkout with its output on
the console, then write the results to the results disk and power off. As PID 1 it first does
what systemd would do for the command: the API filesystems, cgroup2 alone with systemd's layout,
what tmpfiles makes at boot, the loopback link; and it reaps orphans.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import tarfile
import threading
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

import vm_recipe as recipe

STATE = Path(recipe.STATE_IN_GUEST)
RESULTS = STATE / "results"  # this boot's: written to the results disk at the end
RUN = Path("/run/sandman-vm")  # gone at the next boot, as a request for one must be
REBOOT_REQUEST = RUN / "reboot"
CGROUP = Path("/sys/fs/cgroup")
CONTROLLERS = ("cpu", "io", "memory", "pids")  # what systemd enables at the root
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
RB_POWER_OFF = 0x4321FEDC

# fstype, mount point, options: the API filesystems systemd mounts, cgroup2 with its options.
API_MOUNTS = (
    ("proc", "/proc", "nosuid,nodev,noexec"),
    ("sysfs", "/sys", "nosuid,nodev,noexec"),
    ("devtmpfs", "/dev", "nosuid,mode=0755"),
    ("devpts", "/dev/pts", "nosuid,noexec,gid=5,mode=0620,ptmxmode=0666"),
    ("tmpfs", "/dev/shm", "nosuid,nodev"),
    ("mqueue", "/dev/mqueue", "nosuid,nodev,noexec"),
    ("tmpfs", "/run", "nosuid,nodev,mode=0755"),
    ("cgroup2", "/sys/fs/cgroup", "nosuid,nodev,noexec,nsdelegate,memory_recursiveprot"),
    ("securityfs", "/sys/kernel/security", "nosuid,nodev,noexec"),
    ("bpf", "/sys/fs/bpf", "nosuid,nodev,noexec,mode=0700"),
)
DEV_LINKS = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1"}
DEV_LINKS |= {"stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx"}


def say(message: str) -> None:
    """A line of ours on the console, where the host reads it."""
    with open("/dev/console", "w") as console:
        console.write(f"sandman-vm: {message}\n")


def uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


def main() -> None:
    marks = {"guest_started_s": uptime()}  # seconds since the kernel started, for the report
    os.environ.update(PATH=PATH, HOME="/root", LANG="C.UTF-8")
    mode: recipe.Mode = "init" if os.getpid() == 1 else "systemd"
    try:
        if mode == "init":
            boot_as_init()
        session(mode, marks)
    except BaseException:
        say("the guest's session failed:\n" + traceback.format_exc())
    finally:
        power_off(mode)


# --- PID 1 -----------------------------------------------------------------------------------


def boot_as_init() -> None:
    """What systemd does before it starts a service, and no more."""
    mounted = {mount_point for mount_point, _ in mounts()}
    for fstype, target, options in API_MOUNTS:
        if target not in mounted:  # Debian's initramfs moved /dev, /proc, /sys and /run over
            os.makedirs(target, exist_ok=True)
            subprocess.run(["mount", "-t", fstype, "-o", options, fstype, target], check=False)
    for name, target in DEV_LINKS.items():
        if not os.path.lexists(f"/dev/{name}"):
            os.symlink(target, f"/dev/{name}")
    take_systemd_cgroup_layout()
    # /run/lock, /run/user, /tmp's mode...: what a Debian host has once it booted.
    subprocess.run(
        ["systemd-tmpfiles", "--create", "--boot", "--exclude-prefix=/dev"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    Path("/proc/sys/kernel/hostname").write_text(Path("/etc/hostname").read_text().strip())
    subprocess.run(["ip", "link", "set", "lo", "up"], check=False)


def take_systemd_cgroup_layout() -> None:
    """PID 1 in /init.scope and the controllers enabled at the root, as systemd leaves them;
    the command goes to a service's cgroup under /system.slice (see run_command)."""
    (CGROUP / "init.scope").mkdir(exist_ok=True)
    (CGROUP / "init.scope" / "cgroup.procs").write_text(str(os.getpid()))
    available = (CGROUP / "cgroup.controllers").read_text().split()
    for controller in CONTROLLERS:
        if controller in available:
            (CGROUP / "cgroup.subtree_control").write_text(f"+{controller}")


def power_off(mode: recipe.Mode) -> None:
    os.sync()
    if mode == "systemd":
        subprocess.run(["systemctl", "poweroff", "--no-block"], check=False)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.reboot(RB_POWER_OFF)
    time.sleep(60)  # a PID 1 that returned would panic the kernel: wait for the power to go


# --- the session -----------------------------------------------------------------------------


def session(mode: recipe.Mode, marks: dict[str, float]) -> None:
    boot = boot_number(Path("/proc/cmdline").read_text())
    RUN.mkdir(parents=True, exist_ok=True)
    marks["session_started_s"] = uptime()
    if boot == 1:
        unpack_inputs()
    subprocess.run(["rm", "-rf", str(RESULTS)], check=True)
    (RESULTS / "files").mkdir(parents=True)
    facts = guest_facts()
    status: dict[str, object] = {"boot": boot, "mode": mode, "facts": asdict(facts)}
    status["uptime"] = marks
    problems = pure_v2_problems(facts, mode)
    if problems:
        status["error"] = "the guest is not pure cgroup v2: " + "; ".join(problems)
        say(str(status["error"]))
    else:
        say(
            f"ready: boot {boot}, PID 1 {facts.pid1}, kernel {facts.kernel}, cgroup2 only, "
            f"root controllers {' '.join(facts.root_controllers or [])}"
        )
        start = time.monotonic()
        marks["command_started_s"] = uptime()
        rc = run_command(recipe.Job.from_json(Path(recipe.JOB_IN_GUEST).read_text()), mode, boot)
        status |= {"rc": rc, "command_seconds": round(time.monotonic() - start, 1)}
        status["reboot"] = REBOOT_REQUEST.exists()
        say(f"command exited {rc} after {status['command_seconds']} s" + reboot_note(status))
    (RESULTS / "status.json").write_text(json.dumps(status, indent=2) + "\n")
    with open(RESULTS / "dmesg.txt", "w") as dmesg:
        subprocess.run(["dmesg"], stdout=dmesg, stderr=subprocess.STDOUT, check=False)
    write_results()


def reboot_note(status: dict[str, object]) -> str:
    if not status["reboot"]:
        return ""
    return ": a reboot was asked for" if status["rc"] == 0 else ": no reboot, the command failed"


def boot_number(cmdline: str) -> int:
    for word in cmdline.split():
        if word.startswith("sandman_vm.boot="):
            return int(word.split("=", 1)[1])
    return 1


def disk(serial: str) -> str | None:
    """The /dev node of the virtio disk with SERIAL."""
    for block in sorted(Path("/sys/block").glob("vd*")):
        with contextlib.suppress(OSError):
            if (block / "serial").read_text().strip() == serial:
                return f"/dev/{block.name}"
    return None


def unpack_inputs() -> None:
    """The checkout and the job, to /."""
    archive = disk(recipe.SERIAL_INPUT)
    if archive is None:
        raise RuntimeError(f"no disk with serial {recipe.SERIAL_INPUT}")
    subprocess.run(["tar", "-xf", archive, "-C", "/"], check=True)


def run_command(job: recipe.Job, mode: recipe.Mode, boot: int) -> int:
    """The job's script run by bash as root from the checkout, stdin /dev/null, stdout and
    stderr to output.log, followed on the console. Under our init it gets a service's cgroup
    of its own, as under systemd (where it already is in sandman-vm.service's)."""
    env = {"PATH": PATH, "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb"}
    env |= {"USER": "root", "LOGNAME": "root", "SHELL": "/bin/bash"}
    env |= job.env
    env |= {"VM_BOOT": str(boot), "VM_MODE": mode, "VM_RESULTS": str(RESULTS / "files")}
    env |= {"VM_REBOOT": str(REBOOT_REQUEST)}
    cgroup = CGROUP / "system.slice" / recipe.SERVICE if mode == "init" else None
    if cgroup is not None:
        cgroup.mkdir(parents=True, exist_ok=True)
    log = RESULTS / "output.log"
    pid = spawn(["/bin/bash", "-c", job.script], env, job.workdir, log, cgroup)
    stop = threading.Event()
    follower = threading.Thread(target=follow, args=(log, stop), daemon=True)
    follower.start()
    rc = wait_for(pid, reap_orphans=mode == "init")
    stop.set()
    follower.join(timeout=10)
    return rc


def spawn(argv: list[str], env: dict[str, str], cwd: str, log: Path, cgroup: Path | None) -> int:
    """ARGV in a session of its own, in CGROUP before it execs (so all it starts is there too),
    with the signal dispositions a process gets from systemd, not Python's."""
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    null = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        try:
            if cgroup is not None:
                (cgroup / "cgroup.procs").write_text("0")
            for number in (signal.SIGPIPE, signal.SIGXFSZ):
                signal.signal(number, signal.SIG_DFL)
            os.setsid()
            os.dup2(null, 0)
            os.dup2(out, 1)
            os.dup2(out, 2)
            os.chdir(cwd)
            os.execve(argv[0], argv, env)
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(127)
    os.close(out)
    os.close(null)
    return pid


def wait_for(pid: int, *, reap_orphans: bool) -> int:
    """PID's exit code as a shell gives it (128 + N for signal N). As PID 1, every orphan the
    command leaves is ours to reap meanwhile, or it stays a zombie."""
    while True:
        done, status = os.waitpid(-1 if reap_orphans else pid, 0)
        if done == pid:
            code = os.waitstatus_to_exitcode(status)
            return 128 - code if code < 0 else code


def follow(path: Path, stop: threading.Event) -> None:
    """Copy what the command writes to its log onto the console as it comes, until STOP and
    once more after it (the output's end). A file, not a pipe: what the command leaves running
    with its stdout open cannot hold the session up."""
    with open(path, "rb") as log, open("/dev/console", "wb", buffering=0) as console:
        while not stop.wait(0.2):
            console.write(log.read())
        console.write(log.read())


def write_results() -> None:
    """RESULTS as one archive on the results disk (raw: the host reads it back with tarfile)."""
    target = disk(recipe.SERIAL_RESULTS)
    if target is None:
        say(f"no disk with serial {recipe.SERIAL_RESULTS}: the results are lost")
        return
    try:
        with open(target, "wb") as device:
            with tarfile.open(fileobj=device, mode="w", format=tarfile.PAX_FORMAT) as archive:
                archive.add(RESULTS, arcname=".")
            device.flush()
            os.fsync(device.fileno())
    except OSError as error:
        say(f"cannot write the results to {target} ({error}): too big for the results disk?")


# --- facts: is this pure cgroup v2? -----------------------------------------------------------


def mounts() -> list[tuple[str, str]]:
    """(mount point, fstype) of every mount, from /proc/self/mountinfo."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, right = line.split(" - ", 1)
        found.append((left.split()[4], right.split()[0]))
    return found


@dataclass(frozen=True)
class Facts:
    """What the host reports about the guest: kernel, PID 1, cgroup mounts and controllers."""

    kernel: str
    cmdline: str
    pid1: str
    cgroup_mounts: list[tuple[str, str]]  # (mount point, fstype)
    v1_hierarchies: int  # rows of /proc/cgroups bound to a v1 hierarchy
    root_controllers: list[str] | None  # None: no cgroup.controllers at /sys/fs/cgroup


def guest_facts() -> Facts:
    controllers = CGROUP / "cgroup.controllers"
    hierarchies = Path("/proc/cgroups").read_text().splitlines()[1:]
    return Facts(
        kernel=os.uname().release,
        cmdline=Path("/proc/cmdline").read_text().strip(),
        pid1=Path("/proc/1/comm").read_text().strip(),
        cgroup_mounts=[(m, t) for m, t in mounts() if t in ("cgroup", "cgroup2")],
        v1_hierarchies=sum(1 for row in hierarchies if row.split()[1] != "0"),
        root_controllers=controllers.read_text().split() if controllers.exists() else None,
    )


def pure_v2_problems(facts: Facts, mode: recipe.Mode) -> list[str]:
    """Why FACTS are not those of a pure cgroup v2 host (with systemd as PID 1 in MODE
    systemd); none when they are."""
    mounted = facts.cgroup_mounts
    problems = [f"a v1 hierarchy is mounted at {m}" for m, t in mounted if t == "cgroup"]
    if ("/sys/fs/cgroup", "cgroup2") not in mounted:
        problems.append("cgroup2 is not mounted at /sys/fs/cgroup")
    if "cgroup_no_v1=all" not in facts.cmdline.split():
        problems.append("the kernel lets v1 hierarchies be mounted (no cgroup_no_v1=all)")
    if facts.v1_hierarchies:
        problems.append(f"/proc/cgroups lists {facts.v1_hierarchies} v1 hierarchies")
    if facts.root_controllers is None:
        problems.append("there is no /sys/fs/cgroup/cgroup.controllers")
    elif missing := [c for c in CONTROLLERS if c not in facts.root_controllers]:
        problems.append(f"the root cgroup lacks the {' '.join(missing)} controllers")
    if mode == "systemd" and facts.pid1 != "systemd":
        problems.append(f"PID 1 is {facts.pid1}, not systemd")
    return problems


if __name__ == "__main__":
    main()
