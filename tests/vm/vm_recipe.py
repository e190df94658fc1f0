"""What the VM runner's guest is made of and how it is booted, as pure functions and constants.

Everything here is decided from its arguments alone (no files, no processes), so the unit tests
(tests/unit/test_vm_runner.py) cover it: the cache keys, the apt sources taken from the host,
the checkout's file list, the accelerator choice, the kernel command line and qemu's arguments.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

# Bumped when the image is made differently in a way no key below captures (a new step, a new
# file in the image): every cache entry made before is then remade.
RUNNER_VERSION = "1"

SUITE = "bookworm"

# The guest: what issue #16's pure cgroup v2 host runs (Debian's kernel, systemd as PID 1 in
# --systemd boots) and what the root tests need there (contrib/setup.sh --test installs the same
# on a host: gcc and libc6-dev for the probes, systemd's tools, zsh, groff). udev and dbus are on
# every systemd host, so the --systemd boots have them too. crun, runc and systemd-nspawn: the
# peers `bench/run --guest` times sandman against there (crun refuses the host's v1/v2 hybrid;
# nspawn is the yardstick of a cold apply; 12 MB together).
# podman, containerd, skopeo and umoci: the clients of the OCI runtime and image tests
# (tests/root/test_oci_*.py), so sandman-oci is driven on pure v2 too, where most users run them.
GUEST_PACKAGES = (
    "linux-image-amd64",
    "systemd",
    "systemd-sysv",
    "udev",
    "dbus",
    "python3",
    "python3-venv",
    "busybox-static",
    "iproute2",
    "nftables",
    "procps",
    "util-linux",
    "kmod",
    "gcc",
    "libc6-dev",
    "zsh",
    "groff-base",
    "e2fsprogs",
    "crun",
    "runc",
    "systemd-container",
    "podman",
    "containerd",
    "skopeo",
    "umoci",
)

# The initrd holds only what finds and mounts the root disk. Debian's default (MODULES=most, every
# storage and input driver) is a 37 MB initrd that took 9 s to unpack, emulated; with this 7 MB one
# the root disk is mounted 8 s sooner. crc32c: ext4's checksums (a dependency depmod misses).
INITRAMFS_CONF = "MODULES=list\nRESUME=none\n"
INITRAMFS_MODULES = "virtio_pci\nvirtio_blk\next4\ncrc32c\n"
INITRAMFS_FILES = {
    "/etc/initramfs-tools/conf.d/sandman-vm": INITRAMFS_CONF,
    "/usr/share/initramfs-tools/modules.d/sandman-vm": INITRAMFS_MODULES,
}

IMAGE_SIZE = "8G"  # sparse: the image takes what the tree holds
ROOT_LABEL = "sandman-vm"
GUEST_DIR = "/opt/sandman-vm"  # the guest's side of the runner, in the image
GUEST_SCRIPT = f"{GUEST_DIR}/vm_guest.py"
SERVICE = "sandman-vm.service"
CHECKOUT_IN_GUEST = "/src/sandman"
STATE_IN_GUEST = "/var/lib/sandman-vm"  # kept across the boots of a run: the job, the results
JOB_IN_GUEST = f"{STATE_IN_GUEST}/job.json"
# The serials of the guest's disks (/sys/block/vd*/serial): raw tar archives, no filesystem.
SERIAL_ROOT = "sandman-root"  # a run's copy-on-write overlay of the image (found by its label)
SERIAL_INPUT = "sandman-in"  # the checkout and the job, unpacked on the first boot
SERIAL_RESULTS = "sandman-out"  # each boot's results, written by the guest as one archive
READY_MARKER = b"sandman-vm: ready"  # the guest's console line when the command starts

# The runner's own exit codes; any other is the command's.
EXIT_TIMEOUT = 124  # the run went past --timeout (as timeout(1) says it)
EXIT_GUEST_FAILED = 125  # no boot, no result, or a guest that is not pure cgroup v2
EXIT_HOST_NOT_READY = 126  # the host cannot run a guest: not root, tools missing, build failed

MAX_BOOTS = 5  # a command asking for a reboot on every boot stops here

Mode = Literal["init", "systemd"]
Accel = Literal["kvm", "tcg"]

# The unit of --systemd boots, pulled in by `systemd.wants=` on their kernel command line only.
# No default dependencies: a unit the default target wants is otherwise ordered before it, and
# this one must come after multi-user.target, so what an earlier boot enabled has started when
# the command runs. Type=exec, not oneshot: the boot is finished (`systemctl
# is-system-running` says running) while the command runs.
SERVICE_UNIT = f"""\
[Unit]
Description=sandman VM runner: the command of this boot
DefaultDependencies=no
Requires=sysinit.target
After=multi-user.target
Conflicts=shutdown.target
Before=shutdown.target

[Service]
Type=exec
ExecStart={GUEST_SCRIPT}
StandardInput=null
StandardOutput=journal+console
StandardError=journal+console
"""

# pip in the guest has no network: it installs from the wheelhouse the host built (in the image),
# and only from it. It builds in the environment it installs into, not in a new one per build
# with the build backend installed anew: emulated, that took 100 of the 170 s of `pip install
# -e .` (the venv made in the image has setuptools). pip reads `no-` options inverted: false
# turns the isolation off.
PIP_CONF = f"""\
[global]
no-index = true
find-links = {GUEST_DIR}/wheels
disable-pip-version-check = true
no-build-isolation = false
"""


def digest(*parts: str) -> str:
    """A short stable hash of PARTS: the name of a cache entry made from them."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class AptSource:
    """One `deb` entry of apt's sources: where the guest's packages come from."""

    uri: str
    suite: str
    components: tuple[str, ...]

    def line(self) -> str:
        return f"deb {self.uri} {self.suite} {' '.join(self.components)}"


def parse_one_line_sources(text: str) -> list[AptSource]:
    """The `deb URI SUITE COMPONENT...` lines of a sources.list (options in [ ] dropped)."""
    found = []
    for raw in text.splitlines():
        words = raw.split("#", 1)[0].split()
        if not words or words[0] != "deb":
            continue
        words = words[1:]
        if words and words[0].startswith("["):
            while words and not words[0].endswith("]"):
                words = words[1:]
            words = words[1:]
        if len(words) >= 3:
            found.append(AptSource(words[0], words[1], tuple(words[2:])))
    return found


def parse_deb822_sources(text: str) -> list[AptSource]:
    """The `Types: deb` stanzas of a .sources file, one entry per URI and suite."""
    found = []
    for stanza in text.split("\n\n"):
        fields: dict[str, list[str]] = {}
        for raw in stanza.splitlines():
            if raw.startswith("#") or ":" not in raw or raw[:1].isspace():
                continue
            key, value = raw.split(":", 1)
            fields[key.strip().lower()] = value.split()
        if "deb" not in fields.get("types", []) or fields.get("enabled") == ["no"]:
            continue
        components = tuple(fields.get("components", []))
        for uri in fields.get("uris", []):
            for suite in fields.get("suites", []):
                found.append(AptSource(uri, suite, components))
    return found


def guest_sources(host: Iterable[AptSource], suite: str = SUITE) -> list[AptSource]:
    """The host's entries for SUITE and its updates and security suites: the guest is made from
    what this host's apt already uses (no mirror of ours), in the host's order, once each."""
    wanted = []
    for source in host:
        family = source.suite.split("/")[0].split("-")[0]
        if family == suite and source.components and source not in wanted:
            wanted.append(source)
    return wanted


def rootfs_key(sources: Sequence[AptSource], packages: Iterable[str], suite: str = SUITE) -> str:
    """The key of the Debian tree: what mmdebstrap is given (and the initrd's configuration)."""
    lines = [s.line() for s in sources]
    initramfs = [f"{path}\0{text}" for path, text in sorted(INITRAMFS_FILES.items())]
    return digest("rootfs", RUNNER_VERSION, suite, *sorted(set(packages)), *lines, *initramfs)


def setup_hooks(files: Mapping[str, str]) -> list[str]:
    """mmdebstrap hooks that write FILES (path: text) into the tree before any package is
    installed: what a package's scripts read when they run (the kernel's makes the initrd)."""
    hooks = []
    for path, text in sorted(files.items()):
        target = shlex.quote(path)
        folder = shlex.quote(path.rsplit("/", 1)[0])
        hooks.append(f'mkdir -p "$1"{folder} && printf %s {shlex.quote(text)} >"$1"{target}')
    return hooks


def image_key(rootfs: str, wheels: str, makers: Mapping[str, bytes]) -> str:
    """The key of the disk image, kernel and initrd: the tree, the wheelhouse, and the runner's
    files that make the image or go into it (name: content)."""
    parts = [f"{name}\0{makers[name].hex()}" for name in sorted(makers)]
    return digest("image", RUNNER_VERSION, rootfs, wheels, IMAGE_SIZE, *parts)


def wheel_requirements(
    pyproject: Mapping[str, Any], extras: Iterable[str] = ("test",)
) -> list[str]:
    """What `pip install -e '.[EXTRAS]'` needs offline: the build backend, the dependencies and
    the EXTRAS groups of a parsed pyproject.toml, sorted, once each."""
    project = pyproject.get("project", {})
    wanted = list(pyproject.get("build-system", {}).get("requires", []))
    wanted += project.get("dependencies", [])
    groups = project.get("optional-dependencies", {})
    for extra in extras:
        wanted += groups.get(extra, [])
    return sorted({req.strip() for req in wanted if req.strip()})


def wheels_key(requirements: Sequence[str], python: str) -> str:
    """The key of a wheelhouse: the requirements and the guest's Python (its ABI)."""
    return digest("wheels", RUNNER_VERSION, python, *requirements)


def checkout_files(ls_files_z: bytes) -> list[str]:
    """The paths of `git ls-files -z -co --exclude-standard` (tracked, and untracked but not
    ignored), sorted, once each: a conflicted file is listed once per stage."""
    names = {name.decode("utf-8", "surrogateescape") for name in ls_files_z.split(b"\0")}
    names.discard("")
    return sorted(names)


def choose_accel(requested: str, kvm_usable: bool, cpu_flags: set[str]) -> tuple[Accel, str]:
    """KVM or emulation (TCG), and why. KVM needs a /dev/kvm this user can open and a CPU with
    hardware virtualization: a /dev/kvm without vmx or svm in the CPU flags is a paravirtual one
    (kvm_pvm in some cloud sandboxes) that boots only kernels built for it, and a stock Debian
    kernel hangs on it at "Probing EDD"."""
    if requested == "kvm":
        return "kvm", "asked for"
    if requested == "tcg":
        return "tcg", "asked for"
    if not kvm_usable:
        return "tcg", "no usable /dev/kvm: emulating (several times slower)"
    if not cpu_flags & {"vmx", "svm"}:
        return "tcg", "/dev/kvm without vmx/svm cannot boot a stock kernel: emulating"
    return "kvm", "hardware virtualization"


def kernel_cmdline(mode: Mode, boot: int) -> str:
    """The guest kernel's command line: pure cgroup v2 (systemd's switch, and no v1 controller
    left for anyone to mount), the serial console, a reboot on panic (which ends qemu: it runs
    with -no-reboot), our init or systemd's with our service, and the boot's number."""
    words = [
        f"root=LABEL={ROOT_LABEL}",
        "rw",
        "rootfstype=ext4",
        "fastboot",
        "console=ttyS0",
        "quiet",
        "loglevel=3",
        "panic=-1",
        "systemd.unified_cgroup_hierarchy=1",
        "cgroup_no_v1=all",
        f"sandman_vm.boot={boot}",
    ]
    if mode == "init":
        words.append(f"init={GUEST_SCRIPT}")
    else:
        words += [
            f"systemd.wants={SERVICE}",
            "systemd.mask=serial-getty@ttyS0.service",
            "systemd.show_status=error",
        ]
    return " ".join(words)


@dataclass(frozen=True)
class Disk:
    """A virtio disk of the guest, found there by its serial."""

    path: str
    serial: str
    format: Literal["raw", "qcow2"] = "raw"
    readonly: bool = False


@dataclass(frozen=True)
class Machine:
    """What qemu is started with."""

    accel: Accel
    cpus: int
    memory_mib: int
    kernel: str
    initrd: str
    cmdline: str
    disks: tuple[Disk, ...]


def qemu_argv(machine: Machine) -> list[str]:
    """qemu's command line: no display, no default devices, no network; the serial console on
    qemu's stdout (the runner streams it); every disk virtio with its serial. cache=unsafe:
    every disk is thrown away or rewritten by the next run, so the guest's flushes (pip, dpkg,
    every ext4 commit) need not reach the host's disk."""
    if machine.accel == "kvm":
        cpu = ["-accel", "kvm", "-cpu", "host"]
    else:
        cpu = ["-accel", "tcg,thread=multi", "-cpu", "max"]
    argv = ["qemu-system-x86_64", "-machine", "q35", *cpu]
    argv += ["-smp", str(machine.cpus), "-m", str(machine.memory_mib)]
    argv += ["-nodefaults", "-display", "none", "-no-reboot", "-monitor", "none"]
    argv += ["-chardev", "stdio,id=console,signal=off", "-serial", "chardev:console"]
    argv += ["-device", "virtio-rng-pci"]
    argv += ["-kernel", machine.kernel, "-initrd", machine.initrd, "-append", machine.cmdline]
    for n, disk in enumerate(machine.disks):
        options = f"file={disk.path},format={disk.format},if=none,id=disk{n},cache=unsafe"
        if disk.readonly:
            options += ",readonly=on"
        argv += ["-drive", options]
        argv += ["-device", f"virtio-blk-pci,drive=disk{n},serial={disk.serial}"]
    return argv


@dataclass(frozen=True)
class Job:
    """What the guest runs, as the host hands it over (job.json on the input disk)."""

    script: str  # a bash command line
    env: dict[str, str]
    workdir: str = CHECKOUT_IN_GUEST

    def to_json(self) -> str:
        return json.dumps({"script": self.script, "env": self.env, "workdir": self.workdir})

    @classmethod
    def from_json(cls, text: str) -> Job:
        data = json.loads(text)
        env = {str(k): str(v) for k, v in data["env"].items()}
        return cls(str(data["script"]), env, str(data["workdir"]))


# What the command is told in an emulated guest: the root tests' hang guards wait ten times as
# long (SANDMAN_TEST_WAIT, tests/root/test_sandboxes.py): a first apply there runs ten times slower.
EMULATED_ENV = {"SANDMAN_TEST_WAIT": "150"}


def job_env(accel: Accel, given: Mapping[str, str]) -> dict[str, str]:
    """The command's environment: the tests' pace for ACCEL, then what --env GIVEN says."""
    return {**(EMULATED_ENV if accel == "tcg" else {}), **given}


def command_script(words: Sequence[str]) -> str:
    """The shell command line the guest runs: one word is a command line of its own (`'make &&
    pytest'`), several are one command's arguments, quoted as given."""
    return words[0] if len(words) == 1 else shlex.join(words)


def guest_test_files(listing: str) -> list[str]:
    """The test files of a list like tests/vm/guest-tests.txt: one path a line, `#` comments."""
    files = []
    for raw in listing.splitlines():
        path = raw.split("#", 1)[0].strip()
        if path:
            files.append(path)
    return files


def guest_tests_script(files: Sequence[str]) -> str:
    """The guest's CI command for FILES: set up as the README says, then pytest as CI runs it
    (SANDMAN_CI: every root test must run), verbose with the slowest tests and a junit file
    for the host, so the list can be tuned from timings."""
    pytest = [".venv/bin/python", "-m", "pytest", "-v", "--durations=25", *files]
    return (
        "sh contrib/setup.sh --test && SANDMAN_CI=1 "
        + shlex.join(pytest)
        + ' --junitxml="$VM_RESULTS/junit.xml"'
    )
