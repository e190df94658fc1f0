"""Container images as sandman images: an OCI image layout (a directory, or the tar of one that
`podman save --format oci-archive` and `skopeo copy oci-archive:` write) and a docker archive
(`docker save`, `podman save --format docker-archive`), gzip or not.

The image is untrusted. Each blob is read as a regular file of the source, never through a
symlink of a layout directory; the index, manifests and config are bounded JSON; every blob is
checked against the digest that names it (an OCI descriptor's, or for a docker archive the
config's name and its layers' diff_ids, the digests of the uncompressed tars), and the import
fails, leaving nothing, on a mismatch. The layers are applied by layers.LayerChecker with the
rootfs tarball's checks and bounds. Of the config, what a sandbox runs (Entrypoint, Cmd, Env,
WorkingDir, User) is kept as the image's ImageConfig.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import platform
import re
import stat
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any, Protocol

from sandman import record
from sandman.errors import ImageError
from sandman.images import tarball
from sandman.images.config import ImageConfig
from sandman.images.layers import LayerChecker

_JSON_MAX = 4 * 1024**2  # an index, a manifest or a config: kilobytes in practice
_TRAILER_MAX = 1024**2  # what may follow a layer's end of archive (tar pads to 10K blocks)
_DIGEST_RE = re.compile(r"^sha256:([0-9a-f]{64})$")
_NAMES = ("oci-layout", "index.json", "manifest.json", "repositories")
_BLOB_NAME_RE = re.compile(r"^(blobs/|[0-9a-f]{64}(/|\.tar$|\.json$))")
# An image archive holds a few JSON files and a blob per layer and config (docker save: three
# files a layer): far fewer than this, which keeps its index in memory small.
_ARCHIVE_MEMBERS_MAX = 10_000
_PROBED = 16  # members of a tarball looked at to tell an image archive from a rootfs
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}
_INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def is_image_archive(source: str) -> bool:
    """Whether SOURCE is a container image (a layout directory, or an image archive) rather
    than a root file system (a directory, or a tarball of one). A tarball is told by its first
    members: an image archive's are its JSON files and blobs, which no root file system has
    at its top."""
    if os.path.isdir(source):
        return os.path.isfile(os.path.join(source, "oci-layout"))
    try:
        with tarfile.open(source, "r:*", tarinfo=tarball.BoundedInfo) as tar:
            for count, member in enumerate(tar):
                name = _normal(member.name)
                if name in _NAMES or _BLOB_NAME_RE.match(name):
                    return True
                if count >= _PROBED:
                    return False
    except (*tarball.DAMAGED, OSError):
        return False  # the rootfs extractor says what is wrong with it
    return False


def extract(
    name: str,
    path: str,
    source: str,
    dest: str,
    report: Callable[[str], None],
    *,
    ref: str | None = None,
    bounds: tarball.Bounds | None = None,
) -> ImageConfig:
    """Apply the layers of the image SOURCE holds (the one named REF where it holds several)
    into DEST, for image NAME at PATH; its config back."""
    problem = _Problem(name, path, source)
    with _open_source(source, problem) as blobs:
        image = _choose(blobs, ref, problem)
        checker = LayerChecker(name, path, source, dest, tarball.budget_of(dest, bounds))
        for number, layer in enumerate(image.layers, 1):
            checker.start_layer(f"{source}: layer {number} of {len(image.layers)}")
            report(f"layer {number} of {len(image.layers)}: {layer.name}")
            _apply_layer(blobs, layer, checker, problem)
        checker.set_xattrs()
        tarball.report_skipped(checker, report)
    report(f"applied {len(image.layers)} layer(s), {checker.count} entries, from {source}")
    config = _config_of(image.config, f"{source} {image.ref}".strip())
    return record.replace(config, user=numeric_user(dest, config.user))


def numeric_user(root: str, user: str) -> str:
    """USER of the config (`name`, `uid`, `name:group`, `uid:gid`...) as `uid:gid`, names
    looked up in the image's own /etc/passwd and /etc/group (read through no symlink); as it
    was when a name is not there (the unit loader then says so)."""
    if not user or re.fullmatch(r"\d+(:\d+)?", user):
        return user
    name, _, group = user.partition(":")
    passwd = _id_table(root, "passwd")
    entry = passwd.get(name) if not name.isdigit() else None
    uid = name if name.isdigit() else (entry[0] if entry else None)
    if not group:
        gid = entry[1] if entry else ("0" if name.isdigit() else None)
    else:
        gid = group if group.isdigit() else _id_table(root, "group").get(group, (None,))[0]
    return f"{uid}:{gid}" if uid is not None and gid is not None else user


def _id_table(root: str, name: str) -> dict[str, tuple[str, str]]:
    """/etc/NAME of the image at ROOT: each entry's name to its 3rd and 4th fields."""
    top = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with _open_beneath(top, f"etc/{name}") as file:
            text = file.read(_JSON_MAX).decode("utf-8", "replace")
    except OSError:
        return {}
    finally:
        os.close(top)
    table: dict[str, tuple[str, str]] = {}
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and fields[2].isdigit():
            table.setdefault(fields[0], (fields[2], fields[3] if len(fields) > 3 else ""))
    return table


@dataclass(frozen=True)
class _Blob:
    name: str  # where it is in the source
    digest: str  # sha256 hex of the bytes as stored ("" when the format gives none)


@dataclass(frozen=True)
class _Layer(_Blob):
    diff_id: str  # sha256 hex of the uncompressed tar


@dataclass(frozen=True)
class _Image:
    ref: str
    config: dict[str, Any]
    layers: tuple[_Layer, ...]


class _Problem:
    """Raises the import's errors, naming the image and its source."""

    def __init__(self, name: str, path: str, source: str) -> None:
        self.name, self.path, self.source = name, path, source

    def __call__(self, what: str) -> ImageError:
        return ImageError(self.name, self.path, f"{self.source}: {what}; nothing imported")


class _Blobs:
    """The files of an image source, each read whole or as a stream."""

    def __init__(self, opener: Callable[[str], IO[bytes]], problem: _Problem) -> None:
        self.opener = opener
        self.problem = problem

    def stream(self, name: str) -> IO[bytes]:
        try:
            return self.opener(name)
        except (OSError, KeyError, tarfile.TarError) as exc:
            raise self.problem(f"has no readable {name} ({exc})") from exc

    def json(self, name: str, digest: str = "") -> Any:
        with self.stream(name) as stream:
            data = stream.read(_JSON_MAX + 1)
        if len(data) > _JSON_MAX:
            raise self.problem(f"{name} is larger than {_JSON_MAX} bytes")
        if digest and hashlib.sha256(data).hexdigest() != digest:
            raise self.problem(f"{name} does not match its digest sha256:{digest}")
        try:
            return json.loads(data)
        except ValueError as exc:
            raise self.problem(f"{name} is not JSON: {exc}") from exc


@contextlib.contextmanager
def _open_source(source: str, problem: _Problem) -> Iterator[_Blobs]:
    if os.path.isdir(source):
        top = os.open(source, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            yield _Blobs(lambda name: _open_beneath(top, name), problem)
        finally:
            os.close(top)
        return
    with _archive(source, problem) as tar:
        members = _members(tar, problem)
        yield _Blobs(lambda name: _member(tar, members, name), problem)


def _members(tar: tarfile.TarFile, problem: _Problem) -> dict[str, tarfile.TarInfo]:
    """The archive's members by name, read into memory: bounded in number (an image archive
    holds its JSON files and one blob per layer and config) and in header size."""
    members: dict[str, tarfile.TarInfo] = {}
    try:
        for member in tar:
            if len(members) >= _ARCHIVE_MEMBERS_MAX:
                raise problem(
                    f"has more than {_ARCHIVE_MEMBERS_MAX} members, which no image archive has"
                )
            members[_normal(member.name)] = member
    except tarball.DAMAGED as exc:
        raise problem(f"is not a readable tar archive: {exc}") from exc
    return members


def _archive(source: str, problem: _Problem) -> tarfile.TarFile:
    try:
        return tarfile.open(source, "r:*", tarinfo=tarball.BoundedInfo)
    except tarball.DAMAGED as exc:
        raise problem(f"is not a readable tar archive: {exc}") from exc


def _open_beneath(top: int, name: str) -> IO[bytes]:
    """NAME under the directory TOP, a regular file reached through no symlink."""
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if not parts or ".." in parts:
        raise FileNotFoundError(name)
    fd = os.dup(top)
    try:
        for part in parts[:-1]:
            below = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = below
        file = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(os.fstat(file).st_mode):
        os.close(file)
        raise IsADirectoryError(f"{name} is not a regular file")
    return os.fdopen(file, "rb")


def _member(tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], name: str) -> IO[bytes]:
    member = members[_normal(name)]
    # A link member is followed within the archive alone (docker save links shared layers).
    stream = tar.extractfile(member) if member.isreg() or member.issym() or member.islnk() else None
    if stream is None:
        raise KeyError(f"{name} is not a file of the archive")
    return stream


def _normal(name: str) -> str:
    return "/".join(part for part in name.split("/") if part not in ("", "."))


def _choose(blobs: _Blobs, ref: str | None, problem: _Problem) -> _Image:
    try:
        blobs.stream("index.json").close()
    except ImageError:
        return _docker_image(blobs, ref, problem)
    return _oci_image(blobs, ref, problem)


def _oci_image(blobs: _Blobs, ref: str | None, problem: _Problem) -> _Image:
    index = blobs.json("index.json")
    manifests = _descriptors(index, "manifests", problem)
    chosen = _by_ref(manifests, ref, problem)
    manifest = blobs.json(_blob_name(chosen, problem), _hex(chosen, problem))
    while chosen.get("mediaType") in _INDEX_TYPES or "manifests" in manifest:
        chosen = _for_this_host(_descriptors(manifest, "manifests", problem), problem)
        manifest = blobs.json(_blob_name(chosen, problem), _hex(chosen, problem))
    config_descriptor = manifest.get("config")
    if not isinstance(config_descriptor, dict):
        raise problem("its manifest has no config")
    config = blobs.json(_blob_name(config_descriptor, problem), _hex(config_descriptor, problem))
    diff_ids = _diff_ids(config, problem)
    layers = _descriptors(manifest, "layers", problem)
    if len(layers) != len(diff_ids):
        raise problem(f"its manifest has {len(layers)} layers, its config {len(diff_ids)}")
    found = tuple(
        _Layer(_blob_name(d, problem), _hex(d, problem), diff)
        for d, diff in zip(layers, diff_ids, strict=True)
    )
    name = chosen.get("annotations", {}).get("org.opencontainers.image.ref.name", "")
    return _Image(str(ref or name), config, found)


def _docker_image(blobs: _Blobs, ref: str | None, problem: _Problem) -> _Image:
    entries = blobs.json("manifest.json")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise problem("has neither index.json nor a docker manifest.json (a list of images)")
    if ref is not None:
        entries = [e for e in entries if ref in (e.get("RepoTags") or [])]
    if len(entries) != 1:
        tags = ", ".join(t for e in entries for t in (e.get("RepoTags") or [])) or "untagged"
        raise problem(f"holds {len(entries)} images ({tags}): choose one with --ref TAG")
    entry = entries[0]
    config_name = str(entry.get("Config", ""))
    stem = os.path.basename(config_name).removesuffix(".json")
    config = blobs.json(config_name, stem if re.fullmatch(r"[0-9a-f]{64}", stem) else "")
    diff_ids = _diff_ids(config, problem)
    names = entry.get("Layers") or []
    if len(names) != len(diff_ids):
        raise problem(f"its manifest.json lists {len(names)} layers, its config {len(diff_ids)}")
    layers = tuple(_Layer(str(n), "", d) for n, d in zip(names, diff_ids, strict=True))
    return _Image(str(ref or ((entry.get("RepoTags") or [""])[0])), config, layers)


def _descriptors(document: Any, key: str, problem: _Problem) -> list[dict[str, Any]]:
    found = document.get(key) if isinstance(document, dict) else None
    if not isinstance(found, list) or not all(isinstance(d, dict) for d in found):
        raise problem(f"has no list of {key}")
    return found


def _by_ref(manifests: list[dict[str, Any]], ref: str | None, problem: _Problem) -> dict[str, Any]:
    def name(d: dict[str, Any]) -> str:
        return str(d.get("annotations", {}).get("org.opencontainers.image.ref.name", ""))

    if ref is not None:
        manifests = [d for d in manifests if ref in (name(d), name(d).rpartition(":")[2])]
    if len(manifests) != 1:
        names = ", ".join(name(d) or "unnamed" for d in manifests) or "none"
        raise problem(f"holds {len(manifests)} images matching ({names}): choose one with --ref")
    return manifests[0]


def _for_this_host(manifests: list[dict[str, Any]], problem: _Problem) -> dict[str, Any]:
    arch = _ARCH.get(platform.machine(), platform.machine())
    for descriptor in manifests:
        wanted = descriptor.get("platform", {})
        if wanted.get("os") == "linux" and wanted.get("architecture") == arch:
            return descriptor
    raise problem(f"has no image for linux/{arch}")


def _blob_name(descriptor: dict[str, Any], problem: _Problem) -> str:
    return f"blobs/sha256/{_hex(descriptor, problem)}"


def _hex(descriptor: dict[str, Any], problem: _Problem) -> str:
    match = _DIGEST_RE.match(str(descriptor.get("digest", "")))
    if not match:
        raise problem(f"names a blob by {descriptor.get('digest')!r}, not a sha256 digest")
    return match.group(1)


def _diff_ids(config: Any, problem: _Problem) -> list[str]:
    rootfs = config.get("rootfs") if isinstance(config, dict) else None
    ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(ids, list):
        raise problem("its config has no rootfs.diff_ids")
    found = [_DIGEST_RE.match(str(i)) for i in ids]
    if not all(found):
        raise problem("its config's rootfs.diff_ids are not all sha256 digests")
    return [m.group(1) for m in found if m]


def _apply_layer(blobs: _Blobs, layer: _Layer, checker: LayerChecker, problem: _Problem) -> None:
    with blobs.stream(layer.name) as raw:
        stored = _Hashing(raw)
        head = stored.peek(4)
        if head.startswith(_ZSTD_MAGIC):
            raise problem(f"layer {layer.name} is zstd-compressed, which sandman cannot read yet")
        plain = _Hashing(gzip.GzipFile(fileobj=stored) if head[:2] == b"\x1f\x8b" else stored)
        try:
            with tarball.ExtractingTarFile.open(
                fileobj=plain, mode="r|", tarinfo=tarball.BoundedInfo
            ) as tar:
                tarball.write_members(tar, checker)
            _drain(plain, layer, problem)
            _drain(stored, layer, problem)
        except (*tarball.DAMAGED, gzip.BadGzipFile) as exc:
            raise problem(f"layer {layer.name} is not a readable tar: {exc}") from exc
    if layer.digest and stored.hexdigest() != layer.digest:
        raise problem(f"layer {layer.name} does not match its digest sha256:{layer.digest}")
    if plain.hexdigest() != layer.diff_id:
        raise problem(f"layer {layer.name} does not match its diff_id sha256:{layer.diff_id}")


def _drain(stream: _Hashing, layer: _Layer, problem: _Problem) -> None:
    """Read what follows the tar's end (its padding), so that the digest covers the whole
    blob; a layer that goes on past that is refused before it fills the disk."""
    left = _TRAILER_MAX
    while chunk := stream.read(min(left + 1, 65536)):
        left -= len(chunk)
        if left < 0:
            raise problem(f"layer {layer.name} goes on past its end of archive")


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _Hashing(io.RawIOBase):
    """A readable stream that hashes what is read through it."""

    def __init__(self, stream: _Readable) -> None:
        self.stream = stream
        self.sha = hashlib.sha256()
        self.ahead = b""

    def readable(self) -> bool:
        return True

    def peek(self, size: int) -> bytes:
        while len(self.ahead) < size and (chunk := self.stream.read(size - len(self.ahead))):
            self.ahead += chunk
        return self.ahead[:size]

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self.ahead:
            count = min(len(view), len(self.ahead))
            data, self.ahead = self.ahead[:count], self.ahead[count:]
        else:
            data = self.stream.read(len(view))
            count = len(data)
        view[:count] = data
        self.sha.update(data)
        return count

    def hexdigest(self) -> str:
        return self.sha.hexdigest()


def _config_of(config: dict[str, Any], source: str) -> ImageConfig:
    inner = config.get("config") or {}
    if not isinstance(inner, dict):
        inner = {}

    def strings(key: str) -> tuple[str, ...]:
        value = inner.get(key) or []
        return tuple(str(v) for v in value) if isinstance(value, list) else ()

    return ImageConfig(
        entrypoint=strings("Entrypoint"),
        cmd=strings("Cmd"),
        env=strings("Env"),
        workdir=str(inner.get("WorkingDir") or ""),
        user=str(inner.get("User") or ""),
        source=source,
    )
