"""The VM runner's cache, built on the host as root with Debian's tools: the Debian tree
(mmdebstrap), the disk image with its kernel and initrd (mke2fs -d: no loop mount), and the
wheelhouse the guest installs from offline (pip on the host). Each lives under the key of what
it is made from (vm_recipe), so a second run finds it and a change remakes it.

    CACHE/lock                    shared while a guest runs, exclusive while something is built
    CACHE/rootfs/KEY/             the Debian tree (kept: a new image from it takes seconds)
    CACHE/wheels/KEY/             the wheelhouse (put in the image)
    CACHE/images/KEY/             root.img, vmlinuz, initrd.img, manifest.json
    CACHE/runs/STAMP/             one run: console.log, boot-N/ results (the last 10 kept)
"""

from __future__ import annotations

import fcntl
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import vm_recipe as recipe

CACHE_ENV = "SANDMAN_VM_CACHE"
DEFAULT_CACHE = "/var/cache/sandman-vm"
SOURCES_ENV = "SANDMAN_VM_APT_SOURCES"  # a sources file to use instead of the host's
HERE = Path(__file__).resolve().parent
GUEST_FILES = ("vm_guest.py", "vm_recipe.py")  # copied into the image, to GUEST_DIR
IMAGE_MAKERS = ("vm_build.py", *GUEST_FILES)  # a change to any remakes the image
RUNS_KEPT = 10

# The host's commands and the Debian packages that have them.
HOST_TOOLS = {
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "mmdebstrap": "mmdebstrap",
    "mke2fs": "e2fsprogs",
    "git": "git",
}


class HostNotReadyError(Exception):
    """The host cannot build or boot a guest; the message says what to do."""


def say(message: str) -> None:
    print(f"vm: {message}", file=sys.stderr, flush=True)


def check_host() -> None:
    if os.geteuid() != 0:
        raise HostNotReadyError("run as root (mmdebstrap, mke2fs -d and qemu need it)")
    missing = sorted({pkg for tool, pkg in HOST_TOOLS.items() if shutil.which(tool) is None})
    if missing:
        raise HostNotReadyError(
            f"missing host packages: {' '.join(missing)}; install them with "
            f"`apt-get install --no-install-recommends {' '.join(missing)}` "
            "(or `sh contrib/setup.sh --test`)"
        )


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def host_sources() -> list[recipe.AptSource]:
    """The apt sources the guest is made from: the host's own entries for the guest's suite."""
    chosen = os.environ.get(SOURCES_ENV)
    files = [chosen] if chosen else ["/etc/apt/sources.list"]
    if not chosen:
        files += sorted(glob.glob("/etc/apt/sources.list.d/*.list"))
        files += sorted(glob.glob("/etc/apt/sources.list.d/*.sources"))
    entries: list[recipe.AptSource] = []
    for name in files:
        if os.path.exists(name):
            text = Path(name).read_text()
            deb822 = name.endswith(".sources")
            parse = recipe.parse_deb822_sources if deb822 else recipe.parse_one_line_sources
            entries += parse(text)
    sources = recipe.guest_sources(entries)
    if not sources:
        raise HostNotReadyError(
            f"apt on this host has no `{recipe.SUITE}` entry in {', '.join(files)}; "
            f"name a sources file that has one in {SOURCES_ENV}"
        )
    return sources


@dataclass(frozen=True)
class Image:
    """A bootable guest: the disk image, its kernel and initrd, and what it holds."""

    key: str
    root: Path
    kernel: Path
    initrd: Path
    kernel_version: str
    python: str  # the guest's python3 as X.Y: the wheelhouse's ABI


def run_logged(argv: list[str], log: Path, what: str, env: dict[str, str] | None = None) -> None:
    """ARGV with its output in LOG; on failure, its last lines and the log's path."""
    with open(log, "wb") as out:
        done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=env, check=False)
    if done.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-20:]
        raise HostNotReadyError(
            f"{what} failed (exit {done.returncode}; {log}):\n" + "\n".join(tail)
        )


def timed(what: str, step: Callable[[], Path]) -> Path:
    start = time.monotonic()
    say(f"{what}...")
    made = step()
    say(f"{what}: done in {time.monotonic() - start:.0f} s")
    return made


class Cache:
    """The cache at ROOT, for the checkout at REPO (its pyproject.toml sets the wheelhouse)."""

    def __init__(self, root: Path, repo: Path) -> None:
        self.root = root
        self.sources = host_sources()
        self.makers = {name: (HERE / name).read_bytes() for name in IMAGE_MAKERS}
        self.rootfs_key = recipe.rootfs_key(self.sources, recipe.GUEST_PACKAGES)
        self.rootfs = root / "rootfs" / self.rootfs_key
        pyproject = tomllib.loads((repo / "pyproject.toml").read_text())
        self.requirements = recipe.wheel_requirements(pyproject)

    @contextmanager
    def prepared(self) -> Iterator[Image]:
        """The image, built first when missing (under the exclusive lock), kept from a rebuild
        while the caller uses it (the shared lock)."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            image = self._image()
            if image is None:
                say(f"building the guest in {self.root} (waits for runs using it to end)")
                fcntl.flock(fd, fcntl.LOCK_EX)
                image = self._image() or self._build()
                fcntl.flock(fd, fcntl.LOCK_SH)
            yield image
        finally:
            os.close(fd)

    def _wheels(self, python: str) -> Path:
        return self.root / "wheels" / recipe.wheels_key(self.requirements, python)

    def _image_dir(self) -> Path | None:
        """Where the image of the current keys is (made or not); None without the tree."""
        if not self.rootfs.exists():
            return None
        wheels = self._wheels(guest_python(self.rootfs)).name
        return self.root / "images" / recipe.image_key(self.rootfs_key, wheels, self.makers)

    def _image(self) -> Image | None:
        folder = self._image_dir()
        if folder is None:
            return None
        try:
            manifest = json.loads((folder / "manifest.json").read_text())
        except FileNotFoundError:
            return None
        return Image(
            key=folder.name,
            root=folder / "root.img",
            kernel=folder / "vmlinuz",
            initrd=folder / "initrd.img",
            kernel_version=manifest["kernel_version"],
            python=manifest["python"],
        )

    def _build(self) -> Image:
        if not self.rootfs.exists():
            timed(f"mmdebstrap {recipe.SUITE} into {self.rootfs}", self._build_rootfs)
        wheels = self._wheels(guest_python(self.rootfs))
        if not wheels.exists():
            timed(f"building the wheelhouse {wheels}", lambda: self._build_wheels(wheels))
        folder = self._image_dir()
        assert folder is not None
        timed(f"making the disk image {folder}", lambda: self._build_image(folder, wheels))
        image = self._image()
        assert image is not None
        return image

    def _build_rootfs(self) -> Path:
        partial = self.rootfs.with_name(self.rootfs.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.parent.mkdir(parents=True, exist_ok=True)
        argv = ["mmdebstrap", "--variant=minbase", "--include=" + ",".join(recipe.GUEST_PACKAGES)]
        argv += ['--aptopt=APT::Install-Recommends "false"']
        argv += [f"--setup-hook={hook}" for hook in recipe.setup_hooks(recipe.INITRAMFS_FILES)]
        argv += [recipe.SUITE, str(partial)]
        argv += [source.line() for source in self.sources]
        run_logged(argv, self.root / "mmdebstrap.log", "mmdebstrap")
        partial.rename(self.rootfs)
        remove_others(self.rootfs)
        return self.rootfs

    def _build_wheels(self, target: Path) -> Path:
        """pip on the host makes the wheels: its Python must be the guest's (the same ABI)."""
        guest = guest_python(self.rootfs)
        host = "{}.{}".format(*sys.version_info[:2])
        if host != guest:
            raise HostNotReadyError(
                f"the guest's Python is {guest}, this one {host}: run the runner with a "
                f"Python {guest} that has pip (the checkout's .venv/bin/python)"
            )
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        requirements = partial / "requirements.txt"
        requirements.write_text("\n".join(self.requirements) + "\n")
        argv = [sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "-q"]
        argv += ["-w", str(partial), "-r", str(requirements)]
        run_logged(argv, self.root / "pip.log", "pip wheel")
        requirements.unlink()
        partial.rename(target)
        remove_others(target)
        return target

    def _build_image(self, folder: Path, wheels: Path) -> Path:
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        kernel_version = newest_kernel(self.rootfs)
        boot = self.rootfs / "boot"
        shutil.copy(boot / f"vmlinuz-{kernel_version}", partial / "vmlinuz")
        shutil.copy(boot / f"initrd.img-{kernel_version}", partial / "initrd.img")
        self._put_guest_files(folder.name, wheels)
        self._seed_venv()
        argv = ["mke2fs", "-q", "-F", "-t", "ext4", "-L", recipe.ROOT_LABEL]
        argv += ["-d", str(self.rootfs), str(partial / "root.img"), recipe.IMAGE_SIZE]
        run_logged(argv, self.root / "mke2fs.log", "mke2fs -d")
        python = guest_python(self.rootfs)
        manifest = {"kernel_version": kernel_version, "python": python, "wheels": wheels.name}
        (partial / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        partial.rename(folder)
        remove_others(folder)
        return folder

    def _put_guest_files(self, image_key: str, wheels: Path) -> None:
        """The runner's side in the guest, the wheelhouse, the service and pip's offline
        configuration; the names a boot of it goes by (a fixed machine id: no first-boot
        presets in boot 1, the same id in every boot of a run)."""
        rootfs = self.rootfs
        guest = rootfs / recipe.GUEST_DIR.lstrip("/")
        shutil.rmtree(guest, ignore_errors=True)
        guest.mkdir(parents=True)
        for name in GUEST_FILES:
            (guest / name).write_bytes(self.makers[name])
            (guest / name).chmod(0o755 if name == "vm_guest.py" else 0o644)
        shutil.copytree(wheels, guest / "wheels")
        (rootfs / "etc/systemd/system" / recipe.SERVICE).write_text(recipe.SERVICE_UNIT)
        (rootfs / "etc/pip.conf").write_text(recipe.PIP_CONF)
        (rootfs / "etc/hostname").write_text(f"{recipe.ROOT_LABEL}\n")
        hosts = f"127.0.0.1 localhost {recipe.ROOT_LABEL}\n::1 localhost ip6-localhost\n"
        (rootfs / "etc/hosts").write_text(hosts)
        machine_id = recipe.digest("machine-id", image_key) * 2
        (rootfs / "etc/machine-id").write_text(machine_id + "\n")

    def _seed_venv(self) -> None:
        """The checkout's .venv in the guest, made ahead with the project's requirements:
        `contrib/setup.sh --test` there then finds them installed and only adds sandman itself.
        pip in the guest is emulated when KVM is not there, and installing every wheel there
        takes minutes; here, in a chroot of the tree, seconds. A venv works only at the path
        it was made at: it is made at the checkout's path in the guest."""
        venv = f"{recipe.CHECKOUT_IN_GUEST}/.venv"
        shutil.rmtree(self.rootfs / venv.lstrip("/"), ignore_errors=True)
        requirements = f"{recipe.GUEST_DIR}/requirements.txt"
        (self.rootfs / requirements.lstrip("/")).write_text("\n".join(self.requirements) + "\n")
        # The guest's environment, not the host's (whose pip settings name host paths); pip
        # reads the guest's /etc/pip.conf: the wheelhouse only.
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}
        chroot = ["chroot", str(self.rootfs)]
        log = self.root / "venv.log"
        run_logged([*chroot, "python3", "-m", "venv", venv], log, "python3 -m venv", env=env)
        pip = [*chroot, f"{venv}/bin/python", "-m", "pip", "install", "-q", "-r", requirements]
        run_logged(pip, log, "pip install in the guest's tree", env=env)


def guest_python(rootfs: Path) -> str:
    """The tree's python3 as X.Y (Debian's /usr/bin/python3 links to pythonX.Y)."""
    return os.readlink(rootfs / "usr" / "bin" / "python3").removeprefix("python")


def new_run_dir(root: Path) -> Path:
    """A directory for one run under the cache ROOT; the oldest beyond RUNS_KEPT go."""
    runs = root / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    for old in sorted(runs.iterdir())[: -(RUNS_KEPT - 1)]:
        shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=runs))


def newest_kernel(rootfs: Path) -> str:
    """The version of the kernel the tree boots: the one Debian's /vmlinuz link names."""
    try:
        return os.readlink(rootfs / "vmlinuz").rsplit("/vmlinuz-", 1)[1]
    except (OSError, IndexError):
        raise HostNotReadyError(f"no /vmlinuz link in {rootfs}: is linux-image-amd64 in?") from None


def remove_others(kept: Path) -> None:
    """The entries beside KEPT made from other keys (and partial ones): only the current is
    used, and none is in use while something is built (the exclusive lock)."""
    for other in kept.parent.iterdir():
        if other != kept:
            if other.is_dir():
                shutil.rmtree(other, ignore_errors=True)
            else:
                other.unlink()
