"""The VM runner's command line and its run: build or reuse the cached guest, hand it the
checkout and the command, boot it (again, as long as the command asks for a reboot and
succeeds), bring the results back, exit with the command's code. See tests/vm/run.py."""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Literal

import vm_boot
import vm_recipe as recipe
from vm_build import (
    Cache,
    HostNotReadyError,
    Image,
    cache_dir,
    check_host,
    new_run_dir,
    say,
)

REPO = Path(__file__).resolve().parents[2]
GUEST_TESTS = Path(__file__).resolve().parent / "guest-tests.txt"
# Where root tests keep what they build from packages once (tests/root/test_debian_boot.py).
TEST_CACHE = Path(os.environ.get("SANDMAN_TEST_CACHE", "/var/cache/sandman-test"))
# Seconds from qemu's start to the command's (measured emulated, beside another guest: 45 s with
# our init, 2 min with systemd).
BOOT_TIMEOUT = {"init": {"kvm": 60.0, "tcg": 300.0}, "systemd": {"kvm": 120.0, "tcg": 600.0}}

EPILOG = f"""\
exit codes: the command's (of its last boot); {recipe.EXIT_TIMEOUT} past --timeout;
{recipe.EXIT_GUEST_FAILED} when the guest did not boot, gave no result or is not pure cgroup v2;
{recipe.EXIT_HOST_NOT_READY} when this host cannot build or boot it (the message says why).

In the guest the command runs as root from a copy of the checkout (git's tracked and untracked
but not ignored files) with VM_BOOT (1, 2, ...), VM_MODE (init or systemd), VM_RESULTS (a
directory whose files come back to the host under boot-N/files/) and VM_REBOOT (a path: create
that file and exit 0 to have the guest booted again from the same disk, with VM_BOOT one more).
Emulated (no KVM), it also gets SANDMAN_TEST_WAIT=150: the root tests' hang guards wait longer.
pip there installs offline from the cached wheelhouse of pyproject.toml's dependencies and
test extras. Cache: $SANDMAN_VM_CACHE (default /var/cache/sandman-vm)."""


@dataclass(frozen=True)
class Options:
    command: tuple[str, ...]
    tests: Path | None
    build_only: bool
    systemd: bool
    env: dict[str, str]
    out: Path | None
    keep: bool
    quiet: bool
    timeout: float
    boot_timeout: float | None
    accel: Literal["auto", "kvm", "tcg"]
    cpus: int
    memory_mib: int
    results_mib: int
    copies: tuple[Path, ...] = ()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tests/vm/run.py",
        usage="%(prog)s [OPTIONS] (-- COMMAND... | --tests [LIST] | --build-only)",
        description="Run COMMAND (or the root tests of LIST) on a pure cgroup v2 Debian guest.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = p.add_argument
    add("command", nargs="*", help="one word: a shell command line; several: a command's words")
    add(
        "--tests",
        nargs="?",
        const=GUEST_TESTS,
        type=Path,
        metavar="LIST",
        help=f"run the test files LIST names as CI does (default {GUEST_TESTS.name})",
    )
    add("--build-only", action="store_true", help="build or check the cache, boot nothing")
    add(
        "--systemd",
        action="store_true",
        help="boot systemd as PID 1 (the command runs from a service after multi-user.target)",
    )
    add("--env", action="append", default=[], metavar="NAME=VALUE", help="for the command")
    add(
        "--copy",
        action="append",
        default=[],
        type=Path,
        metavar="PATH",
        help="a host file or directory to copy to the same path in the guest (repeatable); "
        f"--tests copies {TEST_CACHE} where it exists",
    )
    add("--out", type=Path, metavar="DIR", help="copy console.log and boot-N/ results to DIR")
    add("--keep", action="store_true", help="keep the run's disks (the overlay) in its run dir")
    add("--quiet", action="store_true", help="do not stream the guest's console")
    add("--timeout", type=float, default=3600.0, metavar="S", help="of the whole run (3600)")
    add(
        "--boot-timeout",
        type=float,
        metavar="S",
        help="until the command starts (KVM: 60, 120 with systemd; emulated: 300, 600)",
    )
    add("--accel", choices=("auto", "kvm", "tcg"), default="auto")
    add("--cpus", type=int, default=min(4, os.cpu_count() or 1))
    add("--memory", type=int, default=4096, metavar="MIB", dest="memory_mib")
    add("--results-size", type=int, default=256, metavar="MIB", dest="results_mib")
    return p


def parse_args(argv: Sequence[str] | None = None) -> Options:
    p = parser()
    args = p.parse_args(argv)
    chosen = [bool(args.command), args.tests is not None, args.build_only]
    if sum(chosen) != 1:
        p.error("give one of: -- COMMAND..., --tests [LIST], --build-only")
    env = {}
    for item in args.env:
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            p.error(f"--env wants NAME=VALUE, not {item!r}")
        env[name] = value
    return Options(
        command=tuple(args.command),
        tests=args.tests,
        build_only=args.build_only,
        systemd=args.systemd,
        env=env,
        out=args.out,
        keep=args.keep,
        quiet=args.quiet,
        timeout=args.timeout,
        boot_timeout=args.boot_timeout,
        accel=args.accel,
        cpus=args.cpus,
        memory_mib=args.memory_mib,
        results_mib=args.results_mib,
        copies=copies_of(args.copy, with_test_cache=args.tests is not None),
    )


def copies_of(asked: Sequence[Path], *, with_test_cache: bool) -> tuple[Path, ...]:
    """The absolute paths to copy in: those asked, and for the root tests the host's test
    cache (images the host suite built from packages, which the guest, offline, cannot)."""
    found = [path.absolute() for path in asked]
    if with_test_cache and TEST_CACHE.is_dir() and TEST_CACHE not in found:
        found.append(TEST_CACHE)
    return tuple(found)


def job_of(options: Options, repo: Path) -> recipe.Job:
    if options.tests is None:
        return recipe.Job(recipe.command_script(options.command), options.env)
    files = recipe.guest_test_files(options.tests.read_text())
    # A line may be a pytest node id (FILE::TEST): the file must exist.
    if missing := [f for f in files if not (repo / f.partition("::")[0]).is_file()]:
        raise HostNotReadyError(f"{options.tests} names files the checkout lacks: {missing}")
    return recipe.Job(recipe.guest_tests_script(files), options.env)


def exit_code(outcome: vm_boot.Outcome) -> int | None:
    """The run's exit code after a boot, or None: boot again (the command succeeded and asked)."""
    if outcome.state == "timeout":
        return recipe.EXIT_TIMEOUT
    status = outcome.status
    if outcome.state != "done" or status is None or "error" in status:
        return recipe.EXIT_GUEST_FAILED
    rc = int(status["rc"])
    return None if rc == 0 and status.get("reboot") else rc


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    signal.signal(signal.SIGTERM, interrupted)
    try:
        return run(options)
    except HostNotReadyError as error:
        say(f"error: {error}")
        return recipe.EXIT_HOST_NOT_READY
    except KeyboardInterrupt:
        say("interrupted")
        return 130


def interrupted(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # so that qemu is stopped and the run's disks go, as on Ctrl-C


def run(options: Options) -> int:
    check_host()
    job = None if options.build_only else job_of(options, REPO)
    start = time.monotonic()
    cache = Cache(cache_dir(), REPO)
    with cache.prepared() as image:
        say(
            f"guest: Debian {recipe.SUITE}, kernel {image.kernel_version}, python {image.python}, "
            f"{image.root} ({time.monotonic() - start:.0f} s to get it ready)"
        )
        if job is None:
            return 0
        run_dir = new_run_dir(cache.root)
        try:
            return boots(options, job, image, run_dir)
        finally:
            finish(options, run_dir)


def boots(options: Options, job: recipe.Job, image: Image, run_dir: Path) -> int:
    """Boot the guest until the command is done; the run's exit code."""
    accel, why = recipe.choose_accel(options.accel, kvm_usable(), cpu_flags())
    mode: recipe.Mode = "systemd" if options.systemd else "init"
    size = f"{options.cpus} CPUs, {options.memory_mib} MiB"
    say(f"run {run_dir}: {mode} mode, {accel} ({why}), {size}")
    write_input(run_dir / "input.tar", REPO, job_for(job, accel), options.copies)
    vm_boot.create_overlay(image.root, run_dir / "overlay.qcow2")
    deadline = time.monotonic() + options.timeout
    number, retried = 1, False
    while number <= recipe.MAX_BOOTS:
        machine = machine_for(options, image, run_dir, mode=mode, accel=accel, number=number)
        limits = vm_boot.Limits(options.boot_timeout or BOOT_TIMEOUT[mode][accel], deadline)
        results_disk = run_dir / "results.img"
        vm_boot.fresh_results_disk(results_disk, options.results_mib)
        echo = None if options.quiet else sys.stdout.buffer
        outcome, results = vm_boot.boot(number, machine, run_dir, results_disk, limits, echo=echo)
        report(number, accel, outcome, results, run_dir)
        again = retry_accel(outcome, options.accel, accel, retried)
        if again is not None:
            say(f"booting boot {number} once more ({again}): the guest never started the command")
            accel, retried = again, True
            if number == 1:  # from the start: the image, the job for that accelerator
                write_input(run_dir / "input.tar", REPO, job_for(job, accel), options.copies)
                vm_boot.create_overlay(image.root, run_dir / "overlay.qcow2")
            continue
        code = exit_code(outcome)
        if code is not None:
            return code
        number += 1
    say(f"the command asked for a reboot on each of {recipe.MAX_BOOTS} boots: stopped there")
    return recipe.EXIT_GUEST_FAILED


def retry_accel(
    outcome: vm_boot.Outcome, requested: str, accel: recipe.Accel, retried: bool
) -> recipe.Accel | None:
    """The accelerator to boot a guest that never started the command with once more, or None.
    Emulated when KVM was only the CPU flags' choice: a stock kernel boots emulated anywhere. As
    it was after an emulated boot that hung: one in about twenty here hung early, a vCPU stuck
    (soft lockups) while the other went on; the next boot was fine."""
    if retried or outcome.ready_after is not None or outcome.state not in ("hung", "no-result"):
        return None
    if requested == "auto" and accel == "kvm":
        return "tcg"
    return accel if outcome.state == "hung" else None


def job_for(job: recipe.Job, accel: recipe.Accel) -> recipe.Job:
    return dataclasses.replace(job, env=recipe.job_env(accel, job.env))


def machine_for(
    options: Options,
    image: Image,
    run_dir: Path,
    *,
    mode: recipe.Mode,
    accel: recipe.Accel,
    number: int,
) -> recipe.Machine:
    disks = (
        recipe.Disk(str(run_dir / "overlay.qcow2"), recipe.SERIAL_ROOT, "qcow2"),
        recipe.Disk(str(run_dir / "input.tar"), recipe.SERIAL_INPUT, readonly=True),
        recipe.Disk(str(run_dir / "results.img"), recipe.SERIAL_RESULTS),
    )
    return recipe.Machine(
        accel=accel,
        cpus=options.cpus,
        memory_mib=options.memory_mib,
        kernel=str(image.kernel),
        initrd=str(image.initrd),
        cmdline=recipe.kernel_cmdline(mode, number),
        disks=disks,
    )


def report(number: int, accel: str, outcome: vm_boot.Outcome, results: Path, run_dir: Path) -> None:
    status = outcome.status or {}
    ready = f"{outcome.ready_after:.0f} s" if outcome.ready_after is not None else "never"
    line = f"boot {number} ({accel}): command started after {ready}"
    if "rc" in status:
        line += f", ran {status['command_seconds']} s, exit {status['rc']}"
        line += ", asked for a reboot" if status.get("reboot") else ""
    where = f"; results in {results}" if outcome.status is not None else ""
    say(f"{line}; {outcome.seconds:.0f} s in all{where}")
    if outcome.state == "done" and "error" in status:
        say(f"error: {status['error']}")
    elif outcome.state != "done":
        what = {
            "hung": "the guest did not start the command within the boot timeout",
            "timeout": "the run went past --timeout: the guest was stopped",
            "no-result": "the guest ended without writing its results",
        }[outcome.state]
        say(f"error: {what}; the console's last lines ({run_dir / 'console.log'}):")
        show_tail(run_dir / "console.log")
        if outcome.state == "no-result" and (run_dir / "qemu.log").stat().st_size:
            say("qemu said:")
            show_tail(run_dir / "qemu.log")


def show_tail(log: Path) -> None:
    for text in log.read_bytes().decode(errors="replace").splitlines()[-15:]:
        print(f"    {text}", file=sys.stderr)


def finish(options: Options, run_dir: Path) -> None:
    """The run's disks go unless --keep (the overlay can hold a whole installed venv); the
    results are copied to --out."""
    if not options.keep:
        for disk in ("overlay.qcow2", "input.tar", "results.img"):
            (run_dir / disk).unlink(missing_ok=True)
    if options.out is not None:
        options.out.mkdir(parents=True, exist_ok=True)
        for item in sorted(run_dir.iterdir()):
            if item.is_dir():
                shutil.copytree(item, options.out / item.name, dirs_exist_ok=True)
            elif item.name == "console.log":
                shutil.copy(item, options.out / item.name)


def kvm_usable() -> bool:
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC))
    except OSError:
        return False
    return True


def cpu_flags() -> set[str]:
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


def checkout_listing(repo: Path) -> list[str]:
    """The checkout's tracked and untracked-but-not-ignored files that exist (a deleted
    tracked file is listed too); directories (submodules) left out."""
    argv = ["git", "-c", f"safe.directory={repo}", "-C", str(repo), "ls-files", "-z", "-co"]
    done = subprocess.run([*argv, "--exclude-standard"], capture_output=True, check=False)
    if done.returncode != 0:
        raise HostNotReadyError(f"git ls-files in {repo}: {done.stderr.decode().strip()}")
    listed = recipe.checkout_files(done.stdout)
    return [f for f in listed if (repo / f).is_symlink() or (repo / f).is_file()]


def write_input(path: Path, repo: Path, job: recipe.Job, copies: Sequence[Path] = ()) -> None:
    """The input disk: the checkout under CHECKOUT_IN_GUEST and the job, owned by root; and
    COPIES at their own paths, as they are (owners and modes kept)."""

    def as_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    prefix = recipe.CHECKOUT_IN_GUEST.lstrip("/")
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as archive:
        for name in checkout_listing(repo):
            archive.add(repo / name, arcname=f"{prefix}/{name}", recursive=False, filter=as_root)
        for copy in copies:
            archive.add(copy, arcname=str(copy).lstrip("/"))
        data = job.to_json().encode()
        info = as_root(tarfile.TarInfo(recipe.JOB_IN_GUEST.lstrip("/")))
        info.size, info.mtime = len(data), int(time.time())
        archive.addfile(info, io.BytesIO(data))
