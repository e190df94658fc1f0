"""A bootable Debian image made from packages alone: mmdebstrap (Debian's own, well-kept tool;
no root file system is written by hand here) builds a minbase tree with systemd as /sbin/init
and D-Bus into a tar archive, which is imported as any tarball is, with its checks and bounds,
ownership and file capabilities kept. The archive is written in a private directory beside the
image dir and removed once imported."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence

from sandman.errors import ImageError

# What `[sandbox] boot = true` needs of the image: an init (systemd-sysv: /sbin/init) and the bus
# systemctl talks over.
BOOT_PACKAGES = ("systemd-sysv", "dbus")
DISTROS = ("debian",)
DEFAULT_SUITE = "bookworm"


def bootstrap_tar(
    name: str,
    path: str,
    image_dir: str,
    *,
    suite: str = DEFAULT_SUITE,
    mirror: str | None = None,
    include: Sequence[str] = (),
    report: Callable[[str], None],
) -> tuple[str, Callable[[], None]]:
    """Build the tree into a tar archive; its path, and what removes it."""
    if shutil.which("mmdebstrap") is None:
        raise ImageError(name, path, "needs mmdebstrap: apt-get install mmdebstrap")
    # Beside the image dir, not in it: a writer of the image dir removes what it takes for a
    # killed writer's leftovers, and this is written before the import takes the writers' lock.
    parent = os.path.dirname(os.path.abspath(image_dir))
    os.makedirs(parent, mode=0o700, exist_ok=True)
    work = tempfile.mkdtemp(prefix=f".sandman-bootstrap-{name}-", dir=parent)  # 0700
    archive = os.path.join(work, "rootfs.tar")
    packages = ",".join(dict.fromkeys([*BOOT_PACKAGES, *include]))
    argv = ["mmdebstrap", "--variant=minbase", f"--include={packages}", "--format=tar", suite]
    argv += [archive, *([mirror] if mirror else [])]
    report(f"running {' '.join(argv)}")
    try:
        _run(argv, name, path, report)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return archive, lambda: shutil.rmtree(work, ignore_errors=True)


def _run(argv: list[str], name: str, path: str, report: Callable[[str], None]) -> None:
    """mmdebstrap's own progress lines come through as ours; its failure is the image's."""
    with subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as child:
        assert child.stdout is not None
        last: list[str] = []
        for raw in child.stdout:
            line = raw.rstrip()
            if line:
                report(f"mmdebstrap: {line}")
                last = [*last[-4:], line]
    if child.returncode != 0:
        said = "; ".join(last) or "no output"
        raise ImageError(name, path, f"mmdebstrap exited {child.returncode}: {said}")
