"""The image store: one directory per image under the image dir, built or imported atomically.

An image named `busybox` is the directory `IMAGE_DIR/busybox`. Every build and import fills a
hidden sibling (`.NAME.tmp-XXXXXXXX`) and only then renames it into place, so a reader sees the
old image or the new one, never half of either; on any failure, Ctrl-C included, the sibling is
removed. Writers hold a lock (`IMAGE_DIR/.lock`), so leftovers of a killed writer can be cleaned
up by the next one without racing a live one.

The image dir is root's alone (0700, see sandman.private_dirs): images keep their setuid-root
binaries, which only the image dir's mode keeps other local users from running. A sandbox reaches
its image through the mounts sandman makes, never through this path.

This module imports nothing heavy: `sandman images` only lists. The builders (busybox, tarball,
directory copy) are imported when used.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import shutil
import signal
import stat
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sandman.errors import ImageError
from sandman.images.config import ImageConfig, config_path, image_config

if TYPE_CHECKING:
    from sandman.images import tarball

Progress = Callable[[str], None]

# The unit model's image-name rule (sandman.units.scalars.IMAGE_RE, whose module pulls in
# fractions and decimal, which `images` does not need; a test keeps the two equal).
NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]*$"
NAME_MAX = 64
_NAME_RE = re.compile(NAME_PATTERN)
# What a writer leaves behind only when it was killed: staged builds, old copies, removals.
_LEFTOVER_RE = re.compile(r"^\.[a-z0-9][a-z0-9._-]*\.(tmp|old|rm)-\w+$")
# The writers' lock, a file in the 0700 image dir (never the dir itself: see sandman.lockfile).
LOCK = ".lock"


@dataclass(frozen=True)
class ImageInfo:
    """An image of the store, as `images` lists it."""

    name: str
    path: str
    size: int  # bytes allocated (st_blocks), each hardlinked inode once, symlinks not followed
    files: int  # entries that are not directories
    created: float  # when it was built or imported: the mtime its root was given then
    config: ImageConfig | None = None  # a container image's, when it was imported from one

    def to_json(self) -> dict[str, Any]:
        when = datetime.datetime.fromtimestamp(self.created, datetime.UTC)
        return {
            "name": self.name,
            "path": self.path,
            "size": self.size,
            "files": self.files,
            "created": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "config": self.config.to_json() if self.config else None,
        }


def name_problem(name: str) -> str | None:
    """Why NAME is not an image name, or None when it is one."""
    if _NAME_RE.fullmatch(name) and len(name) <= NAME_MAX:
        return None
    return (
        f"{name!r} is not an image name; use lowercase letters, digits, '.', '_' and '-', "
        f"starting with a letter or digit, at most {NAME_MAX} characters"
    )


def image_path(image_dir: str, name: str) -> str:
    path = os.path.join(os.path.abspath(image_dir), name)
    problem = name_problem(name)
    if problem:
        raise ImageError(name, path, problem)
    return path


def list_images(image_dir: str) -> list[ImageInfo]:
    """Every image under IMAGE_DIR, by name; an image dir that does not exist yet has none."""
    try:
        names = sorted(os.listdir(image_dir))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ImageError("*", image_dir, f"cannot list the image dir: {exc.strerror}") from exc
    found = [n for n in names if name_problem(n) is None]
    return [image_info(image_dir, n) for n in found if os.path.isdir(os.path.join(image_dir, n))]


def image_info(image_dir: str, name: str) -> ImageInfo:
    path = image_path(image_dir, name)
    try:
        created = os.stat(path).st_mtime
        size, files = _measure(path)
    except OSError as exc:
        raise ImageError(name, path, f"cannot read the image: {exc}") from exc
    return ImageInfo(name, path, size, files, created, image_config(image_dir, name))


def _measure(top: str) -> tuple[int, int]:
    seen: set[tuple[int, int]] = set()
    size = os.stat(top).st_blocks * 512
    files = 0
    pending = [top]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                info = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(info.st_mode):
                    pending.append(entry.path)
                else:
                    files += 1
                if info.st_nlink > 1 and not stat.S_ISDIR(info.st_mode):
                    if (info.st_dev, info.st_ino) in seen:
                        continue
                    seen.add((info.st_dev, info.st_ino))
                size += info.st_blocks * 512
    return size, files


def remove_image(image_dir: str, name: str) -> None:
    path = image_path(image_dir, name)
    missing = ImageError(name, path, "no such image; `sandman images` lists them")
    if not os.path.isdir(image_dir):
        raise missing  # before the lock, which would create the image dir
    with _locked(image_dir, name, None):
        if not os.path.lexists(path):
            raise missing
        try:
            if os.path.islink(path) or not os.path.isdir(path):
                os.unlink(path)  # a link placed by hand: remove the link, never what it names
                return
            # Out of the name first, so a half-removed tree is never seen as the image.
            doomed = tempfile.mkdtemp(prefix=f".{name}.rm-", dir=image_dir)
            with _sigint_deferred():
                os.rename(path, doomed)
        except OSError as exc:
            raise ImageError(name, path, f"cannot remove the image: {exc}") from exc
        with contextlib.suppress(FileNotFoundError):
            os.unlink(config_path(image_dir, name))
        try:
            _remove_tree(doomed)
        except OSError as exc:
            # The image is gone from its name; the next writer retries removing the rest.
            raise ImageError(name, path, f"removed, but {doomed} is left: {exc}") from exc


def build_busybox(
    image_dir: str,
    busybox: str = "/bin/busybox",
    *,
    name: str = "busybox",
    progress: Progress | None = None,
) -> ImageInfo:
    """The built-in image: a static busybox, a link per applet, and a minimal /etc."""
    # By name: the module would shadow the BUSYBOX argument, the binary's path.
    from sandman.images.busybox import fill, inspect

    report = progress or _quiet
    path = image_path(image_dir, name)
    blob, applets = inspect(name, path, busybox)
    report(f"building image {name} from {busybox} ({len(applets)} applets)")
    return _build(image_dir, name, report, lambda d: fill(d, blob, applets))


def import_image(
    image_dir: str,
    name: str,
    source: str,
    *,
    progress: Progress | None = None,
    bounds: tarball.Bounds | None = None,
    ref: str | None = None,
) -> ImageInfo:
    """An image from a container image (an OCI layout or archive, a docker archive: its layers
    and its config, REF choosing among several), a tarball (plain, .gz, .xz, .bz2: `docker
    export`, Alpine minirootfs) or a copy of a directory, keeping modes, ownership, symlinks and
    hard links. Archives are extracted within BOUNDS (tarball.Bounds(): the defaults)."""
    report = progress or _quiet
    path = image_path(image_dir, name)
    from sandman.images import oci

    if oci.is_image_archive(source):
        configs: list[ImageConfig] = []
        report(f"applying the layers of {source} to image {name}")
        return _build(
            image_dir,
            name,
            report,
            lambda d: configs.append(
                oci.extract(name, path, source, d, report, ref=ref, bounds=bounds)
            ),
            configs,
        )
    if ref is not None:
        raise ImageError(name, path, f"{source} is no container image: --ref chooses in one")
    if os.path.isdir(source):
        from sandman.images import dircopy

        if _inside(os.path.abspath(image_dir), os.path.realpath(source)):
            raise ImageError(name, path, f"{source} contains the image dir; it cannot be copied")
        report(f"copying {source} into image {name}")
        return _build(
            image_dir, name, report, lambda d: dircopy.copy_tree(name, path, source, d, report)
        )
    if not os.path.isfile(source):
        raise ImageError(name, path, f"{source}: no such tarball or directory")
    from sandman.images import tarball

    report(f"extracting {source} into image {name}")
    return _build(
        image_dir,
        name,
        report,
        lambda d: tarball.extract(name, path, source, d, report, bounds=bounds),
    )


def bootstrap_image(
    image_dir: str,
    name: str,
    *,
    suite: str,
    mirror: str | None = None,
    include: tuple[str, ...] = (),
    progress: Progress | None = None,
    bounds: tarball.Bounds | None = None,
) -> ImageInfo:
    """A bootable Debian image made by mmdebstrap (see images/bootstrap.py)."""
    from sandman.images import bootstrap

    report = progress or _quiet
    path = image_path(image_dir, name)
    os.makedirs(image_dir, mode=0o700, exist_ok=True)
    archive, remove = bootstrap.bootstrap_tar(
        name, path, image_dir, suite=suite, mirror=mirror, include=include, report=report
    )
    try:
        return import_image(image_dir, name, archive, progress=progress, bounds=bounds)
    finally:
        remove()


def _inside(path: str, top: str) -> bool:
    real = os.path.realpath(path)
    return real == top or real.startswith(top.rstrip("/") + "/")


def _build(
    image_dir: str,
    name: str,
    report: Progress,
    fill: Callable[[str], None],
    configs: list[ImageConfig] | None = None,
) -> ImageInfo:
    """Fill a staged tree and swap it in; CONFIGS (the container image's config, once FILL has
    run) is written beside it, or a config left by an earlier image of that name removed."""
    path = image_path(image_dir, name)
    with _locked(image_dir, name, report):
        try:
            staged = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=image_dir)
        except OSError as exc:
            raise ImageError(name, path, f"cannot create the image: {exc}") from exc
        try:
            os.chmod(staged, 0o755)  # mkdtemp's 0700 would shut out a sandbox's mapped users
            fill(staged)
            os.utime(staged)  # the root's mtime is the image's creation time
            with _sigint_deferred():
                _keep_config(image_dir, name, configs[0] if configs else None)
                aside = _swap_in(staged, path)
        except BaseException as exc:
            with _sigint_deferred():
                _discard(staged)
            if isinstance(exc, OSError):
                raise ImageError(name, path, f"cannot build the image: {exc}") from exc
            raise
        if aside:
            with _sigint_deferred():  # the new image is in; leave no old copy behind
                _discard(aside)
    return image_info(image_dir, name)


def _keep_config(image_dir: str, name: str, config: ImageConfig | None) -> None:
    path = config_path(image_dir, name)
    if config is None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    from sandman.atomic_json import write_atomically

    write_atomically(path, config.to_json(), indent=2)


def _swap_in(staged: str, path: str) -> str | None:
    """Rename STAGED to PATH; an existing image is renamed aside first and its new place
    returned, for the caller to remove once the new image is in."""
    if not os.path.lexists(path):
        os.rename(staged, path)
        return None
    # rename(2) replaces an empty directory: this reserves a unique name for the old image.
    aside = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.old-", dir=os.path.dirname(path))
    os.rename(path, aside)
    try:
        os.rename(staged, path)
    except OSError:
        os.rename(aside, path)
        raise
    return aside


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold back Ctrl-C while the store is between two consistent states (between the renames
    of a swap, or while removing a staged tree); it is delivered as soon as they are done."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextlib.contextmanager
def _locked(image_dir: str, name: str, report: Progress | None) -> Iterator[None]:
    """An exclusive flock on `IMAGE_DIR/.lock` for one writer, the image dir made (or kept)
    0700 first; then cleanup of what killed writers left (every writer holds this lock, so a
    leftover's writer is gone)."""
    from sandman.lockfile import held

    def waiting() -> None:
        (report or _quiet)(f"waiting for another sandman writing images in {image_dir}")

    with held(os.path.join(image_dir, LOCK), "image dir (--image-dir)", on_wait=waiting):
        for entry in os.listdir(image_dir):
            if _LEFTOVER_RE.match(entry):
                _discard(os.path.join(image_dir, entry))
        yield


def _remove_tree(path: str) -> None:
    if os.path.islink(path) or os.path.isfile(path):
        os.unlink(path)
        return
    if not os.path.isdir(path):
        return
    if os.geteuid() != 0:
        # Only modes stop a non-root user: open up read-only directories (an image's 0555 dirs,
        # mkdtemp's 0700 is fine) before removing their contents.
        pending = [path]
        while pending:
            directory = pending.pop()
            os.chmod(directory, stat.S_IMODE(os.lstat(directory).st_mode) | stat.S_IRWXU)
            with os.scandir(directory) as entries:
                pending.extend(e.path for e in entries if e.is_dir(follow_symlinks=False))
    shutil.rmtree(path)


def _discard(path: str) -> None:
    """Best-effort removal during cleanup: a failure here must not hide the error being
    reported; whatever stays is a leftover the next writer removes."""
    with contextlib.suppress(OSError):
        _remove_tree(path)


def _quiet(_message: str) -> None:
    pass
