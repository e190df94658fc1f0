"""Container images as sandman images (sandman.images.oci, layers): OCI layouts and archives and
docker archives made here byte by byte, their layers applied with whiteouts, every digest
checked, and the attacks an untrusted image can try refused with nothing imported. The same
import of archives `podman save` wrote, against `umoci unpack`, is in tests/root."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from sandman.errors import ImageError
from sandman.images import config as image_configs
from sandman.images import oci, store
from sandman.images.tarball import Bounds, ExtractingTarFile, MemberChecker, budget_of

# (name, kind, content): kind "file", "dir", "link" (symlink, content its target), "hard"
# (hard link, content its target), "chr" (a character device)
Entry = tuple[str, str, str]
CONFIG = {
    "Entrypoint": ["/bin/tool"],
    "Cmd": ["--serve"],
    "Env": ["PATH=/bin", "MODE=test"],
    "WorkingDir": "/srv",
    "User": "1000:1000",
}


def layer(entries: Sequence[Entry]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, kind, content in entries:
            info = tarfile.TarInfo(name)
            data = content.encode()
            if kind == "file":
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                continue
            info.type = {
                "dir": tarfile.DIRTYPE,
                "link": tarfile.SYMTYPE,
                "hard": tarfile.LNKTYPE,
                "chr": tarfile.CHRTYPE,
            }[kind]
            info.mode = 0o755 if kind == "dir" else 0o644
            info.linkname = content
            tar.addfile(info)
    return out.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Layout:
    """An OCI image layout in memory: blobs by digest, written as a directory or a tar."""

    def __init__(
        self,
        layers: Sequence[bytes],
        *,
        compress: bool = True,
        config: dict[str, Any] | None = None,
        refs: Sequence[str] = ("localhost/app:1.0",),
    ) -> None:
        self.blobs: dict[str, bytes] = {}
        stored = [gzip.compress(data, mtime=0) if compress else data for data in layers]
        image_config = {
            "architecture": "amd64",
            "os": "linux",
            "config": CONFIG if config is None else config,
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{sha(d)}" for d in layers]},
        }
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": self.add(json.dumps(image_config).encode()),
            "layers": [self.add(blob) for blob in stored],
        }
        manifest_descriptor = self.add(json.dumps(manifest).encode())
        self.index: dict[str, Any] = {
            "schemaVersion": 2,
            "manifests": [
                {**manifest_descriptor, "annotations": {"org.opencontainers.image.ref.name": r}}
                for r in refs
            ],
        }

    def add(self, data: bytes) -> dict[str, Any]:
        self.blobs[sha(data)] = data
        return {"digest": f"sha256:{sha(data)}", "size": len(data)}

    def files(self) -> dict[str, bytes]:
        found = {f"blobs/sha256/{digest}": data for digest, data in self.blobs.items()}
        found["index.json"] = json.dumps(self.index).encode()
        found["oci-layout"] = b'{"imageLayoutVersion": "1.0.0"}'
        return found

    def directory(self, top: Path) -> str:
        for name, data in self.files().items():
            (top / name).parent.mkdir(parents=True, exist_ok=True)
            (top / name).write_bytes(data)
        return str(top)

    def archive(self, path: Path) -> str:
        return write_tar(path, self.files())


def write_tar(path: Path, files: dict[str, bytes]) -> str:
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return str(path)


def docker_archive(path: Path, layers: Sequence[bytes], tags: Sequence[str] = ("app:1",)) -> str:
    config = json.dumps(
        {"config": CONFIG, "rootfs": {"diff_ids": [f"sha256:{sha(d)}" for d in layers]}}
    ).encode()
    files = {f"{sha(config)}.json": config}
    files.update({f"{sha(d)}/layer.tar": d for d in layers})
    entry = {
        "Config": f"{sha(config)}.json",
        "RepoTags": list(tags),
        "Layers": [f"{sha(d)}/layer.tar" for d in layers],
    }
    files["manifest.json"] = json.dumps([entry]).encode()
    return write_tar(path, files)


BASE = layer(
    [
        ("etc", "dir", ""),
        ("etc/motd", "file", "old motd"),
        ("etc/keep", "file", "kept"),
        ("opt", "dir", ""),
        ("opt/old", "dir", ""),
        ("opt/old/a", "file", "a"),
        ("opt/old/sub", "dir", ""),
        ("opt/old/sub/b", "file", "b"),
        ("var", "dir", ""),
        ("var/cache", "dir", ""),
        ("var/cache/x", "file", "x"),
        ("bin", "dir", ""),
        ("bin/tool", "file", "#!/bin/sh\n"),
    ]
)
TOP = layer(
    [
        ("etc/.wh.motd", "file", ""),
        ("opt/old/sub", "dir", ""),  # this layer's own, before the opaque marker
        ("opt/old/sub/c", "file", "c"),
        ("opt/old/.wh..wh..opq", "file", ""),
        ("opt/old/new", "file", "new"),
        ("var/cache", "file", "now a file"),  # a file replaces a directory
        ("etc/fresh", "file", "fresh"),
        ("etc/.wh.fresh", "file", ""),  # hides only lower layers: its own file stays
        ("dev", "dir", ""),
        ("dev/sda", "chr", ""),
    ]
)


def tree(top: Path) -> dict[str, str]:
    found = {}
    for path in sorted(top.rglob("*")):
        rel = str(path.relative_to(top))
        if path.is_symlink():
            found[rel] = "-> " + os.readlink(path)
        elif path.is_dir():
            found[rel] = "dir"
        else:
            found[rel] = path.read_text()
    return found


EXPECTED = {
    "bin": "dir",
    "bin/tool": "#!/bin/sh\n",
    "dev": "dir",
    "etc": "dir",
    "etc/fresh": "fresh",
    "etc/keep": "kept",
    "opt": "dir",
    "opt/old": "dir",
    "opt/old/new": "new",
    "opt/old/sub": "dir",
    "opt/old/sub/c": "c",
    "var": "dir",
    "var/cache": "now a file",
}


@pytest.mark.parametrize("form", ["archive", "directory", "plain archive", "docker"])
def test_layers_apply_in_order_with_whiteouts_and_the_config_is_kept(
    tmp_path: Path, form: str
) -> None:
    images = tmp_path / "images"
    if form == "docker":
        source = docker_archive(tmp_path / "d.tar", [BASE, TOP])
    elif form == "directory":
        (tmp_path / "layout").mkdir()
        source = Layout([BASE, TOP]).directory(tmp_path / "layout")
    else:
        layout = Layout([BASE, TOP], compress=form == "archive")
        source = layout.archive(tmp_path / "o.tar")
    messages: list[str] = []
    info = store.import_image(str(images), "app", source, progress=messages.append)
    assert tree(images / "app") == EXPECTED
    assert any("skipped 1 device node(s) (dev/sda)" in m for m in messages)
    config = image_configs.image_config(str(images), "app")
    assert info.config == config and config is not None
    assert (config.entrypoint, config.cmd, config.env) == (
        ("/bin/tool",),
        ("--serve",),
        ("PATH=/bin", "MODE=test"),
    )
    assert (config.workdir, config.user) == ("/srv", "1000:1000")


def test_a_rootfs_tarball_is_no_image_archive_and_replacing_drops_the_old_config(
    tmp_path: Path,
) -> None:
    images = str(tmp_path / "images")
    store.import_image(images, "app", Layout([BASE]).archive(tmp_path / "o.tar"))
    assert image_configs.image_config(images, "app") is not None
    rootfs = write_tar(tmp_path / "rootfs.tar", {"etc/hostname": b"x\n", "bin/sh": b""})
    assert not oci.is_image_archive(rootfs)
    store.import_image(images, "app", rootfs)
    assert image_configs.image_config(images, "app") is None
    store.import_image(images, "app", Layout([BASE]).archive(tmp_path / "o.tar"))
    store.remove_image(images, "app")
    assert not os.path.lexists(image_configs.config_path(images, "app"))


def test_several_images_need_a_ref(tmp_path: Path) -> None:
    images = str(tmp_path / "images")
    source = Layout([BASE], refs=("localhost/app:1.0", "localhost/app:2.0")).archive(
        tmp_path / "o.tar"
    )
    with pytest.raises(ImageError, match=r"holds 2 images .*choose one with --ref"):
        store.import_image(images, "app", source)
    info = store.import_image(images, "app", source, ref="2.0")
    assert info.config is not None and info.config.source.endswith("2.0")


def imported_nothing(images: Path, name: str = "app") -> bool:
    return not os.path.lexists(images / name) and not os.path.lexists(
        image_configs.config_path(str(images), name)
    )


def test_a_layer_that_does_not_match_its_digest_imports_nothing(tmp_path: Path) -> None:
    layout = Layout([BASE, TOP])
    top_digest = [d for d, data in layout.blobs.items() if data == gzip.compress(TOP, mtime=0)]
    layout.blobs[top_digest[0]] = gzip.compress(TOP + b"\0" * 512, mtime=0)
    images = tmp_path / "images"
    with pytest.raises(ImageError, match=r"layer blobs/sha256/[0-9a-f]+ does not match its digest"):
        store.import_image(str(images), "app", layout.archive(tmp_path / "o.tar"))
    assert imported_nothing(images)


def test_a_docker_layer_that_does_not_match_its_diff_id_imports_nothing(tmp_path: Path) -> None:
    source = docker_archive(tmp_path / "d.tar", [BASE, TOP])
    with tarfile.open(source) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]
    files[f"{sha(TOP)}/layer.tar"] = layer([("etc/evil", "file", "swapped")])
    forged = write_tar(tmp_path / "forged.tar", files)
    images = tmp_path / "images"
    with pytest.raises(ImageError, match="does not match its diff_id"):
        store.import_image(str(images), "app", forged)
    assert imported_nothing(images)


def test_a_manifest_swapped_under_the_index_is_refused(tmp_path: Path) -> None:
    layout = Layout([BASE])
    manifest_digest = layout.index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads(layout.blobs[manifest_digest])
    manifest["layers"] = manifest["layers"][:0]
    layout.blobs[manifest_digest] = json.dumps(manifest).encode()
    images = tmp_path / "images"
    with pytest.raises(ImageError, match="does not match its digest"):
        store.import_image(str(images), "app", layout.archive(tmp_path / "o.tar"))
    assert imported_nothing(images)


@pytest.mark.parametrize(
    ("second", "why"),
    [
        ([("escape/passwd", "file", "owned")], "through the symlink escape"),
        ([("escape/.wh.passwd", "file", "")], "through the symlink escape"),
        ([("escape/.wh..wh..opq", "file", "")], "through the symlink escape"),
        ([("h", "hard", "escape/passwd")], "through the symlink escape"),
        ([("h", "hard", "escape")], "not a file earlier in the archive"),
        ([("etc/.wh...", "file", "")], "`..`|whiteout of no file"),
        ([("../.wh.outside", "file", "")], "`..`"),
    ],
)
def test_a_layer_cannot_write_or_delete_through_a_lower_layers_symlink(
    tmp_path: Path, second: list[Entry], why: str
) -> None:
    outside = tmp_path / "host"
    outside.mkdir()
    (outside / "passwd").write_text("host's")
    (tmp_path / "outside").write_text("host's")
    first = layer([("etc", "dir", ""), ("escape", "link", str(outside))])
    images = tmp_path / "images"
    source = Layout([first, layer(second)]).archive(tmp_path / "o.tar")
    with pytest.raises(ImageError, match=why):
        store.import_image(str(images), "app", source)
    assert (outside / "passwd").read_text() == "host's"
    assert (tmp_path / "outside").read_text() == "host's"
    assert imported_nothing(images)


def test_a_layout_blob_that_is_a_symlink_is_not_followed(tmp_path: Path) -> None:
    layout = Layout([BASE])
    top = Path(layout.directory(tmp_path / "layout"))
    secret = tmp_path / "secret"
    secret.write_bytes(gzip.compress(BASE, mtime=0))
    blob = next(
        p for p in (top / "blobs/sha256").iterdir() if p.read_bytes() == secret.read_bytes()
    )
    blob.unlink()
    blob.symlink_to(secret)
    images = tmp_path / "images"
    with pytest.raises(ImageError, match="has no readable blobs/sha256/"):
        store.import_image(str(images), "app", str(top))
    assert imported_nothing(images)


def test_the_bounds_hold_across_layers(tmp_path: Path) -> None:
    many = [layer([(f"f{n}", "file", "x") for n in range(start, start + 6)]) for start in (0, 6)]
    images = tmp_path / "images"
    source = Layout(many).archive(tmp_path / "o.tar")
    with pytest.raises(ImageError, match="more than 10 members"):
        store.import_image(str(images), "app", source, bounds=Bounds(max_files=10))
    assert imported_nothing(images)


def test_a_zstd_layer_is_a_clear_error(tmp_path: Path) -> None:
    layout = Layout([BASE], compress=False)
    digest = next(d for d, data in layout.blobs.items() if data == BASE)
    layout.blobs[digest] = b"\x28\xb5\x2f\xfd" + BASE
    images = tmp_path / "images"
    with pytest.raises(ImageError, match="zstd"):
        store.import_image(str(images), "app", layout.archive(tmp_path / "o.tar"))


def test_a_ref_on_a_rootfs_tarball_is_refused(tmp_path: Path) -> None:
    rootfs = write_tar(tmp_path / "rootfs.tar", {"etc/hostname": b"x\n"})
    with pytest.raises(ImageError, match="no container image"):
        store.import_image(str(tmp_path / "images"), "app", rootfs, ref="1.0")


def test_a_named_user_is_looked_up_in_the_image_and_never_through_a_symlink(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\nnginx:x:101:102::/:/bin/false\n")
    (root / "etc/group").write_text("root:x:0:\nwww:x:33:nginx\n")
    cases = {
        "nginx": "101:102",
        "nginx:www": "101:33",
        "nginx:7": "101:7",
        "1000": "1000",
        "5:6": "5:6",
        "77:www": "77:33",
        "nobody": "nobody",
        "": "",
    }
    assert {user: oci.numeric_user(str(root), user) for user in cases} == cases
    host = tmp_path / "host-passwd"
    host.write_text("nginx:x:0:0::/:/bin/sh\n")
    (root / "etc/passwd").unlink()
    (root / "etc/passwd").symlink_to(host)
    assert oci.numeric_user(str(root), "nginx") == "nginx"


@pytest.mark.parametrize(
    "entries",
    [
        # tarfile makes `a` for `a/secret`, then a symlink would replace it
        [("a/secret", "dir", ""), ("a", "link", "HOST")],
        # a whiteout of `a` (no member of the layer) would take `a/secret` with it
        [("a/secret", "dir", ""), (".wh.a", "file", ""), ("a", "link", "HOST")],
        # so would the opaque marker of `o`, `o/a` being no member of the layer
        [
            ("o", "dir", ""),
            ("o/a/secret", "dir", ""),
            ("o/.wh..wh..opq", "file", ""),
            ("o/a", "link", "HOST"),
        ],
    ],
)
def test_a_layer_cannot_swap_its_own_directory_for_a_symlink(
    tmp_path: Path, entries: list[Entry]
) -> None:
    """tarfile sets a directory's mode and owner once the layer is written, through its path:
    were `a` a symlink to the host by then, the host's `secret` would get the layer's mode."""
    host = tmp_path / "host"
    (host / "secret").mkdir(parents=True)
    (host / "secret").chmod(0o700)
    entries = [
        (name, kind, str(host) if target == "HOST" else target) for name, kind, target in entries
    ]
    images = tmp_path / "images"
    source = Layout([layer([("o", "dir", ""), ("o/a", "dir", "")]), layer(entries)])
    with pytest.raises(ImageError, match="would replace a directory holding files of its own"):
        store.import_image(str(images), "app", source.archive(tmp_path / "o.tar"))
    assert (host / "secret").stat().st_mode & 0o777 == 0o700
    assert imported_nothing(images)


def test_a_whiteout_of_a_directory_holding_the_layers_files_hides_only_the_lower_ones(
    tmp_path: Path,
) -> None:
    second = layer(
        [
            ("opt/old/sub/c", "file", "c"),  # opt/old and opt/old/sub: no members of their own
            ("opt/.wh.old", "file", ""),
            ("etc/.wh.motd", "file", ""),
        ]
    )
    images = tmp_path / "images"
    store.import_image(str(images), "app", Layout([BASE, second]).archive(tmp_path / "o.tar"))
    found = tree(images / "app")
    assert {k: v for k, v in found.items() if k.startswith("opt/")} == {
        "opt/old": "dir",
        "opt/old/sub": "dir",
        "opt/old/sub/c": "c",
    }
    assert "etc/motd" not in found and found["etc/keep"] == "kept"


def test_a_multi_arch_index_gives_the_hosts_image(tmp_path: Path) -> None:
    ours = Layout([layer([("mine", "file", "host's arch")])])
    other = Layout([layer([("other", "file", "another arch")])])
    machine = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
    inner: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {**other.index["manifests"][0], "platform": {"os": "linux", "architecture": "s390x"}},
            {**ours.index["manifests"][0], "platform": {"os": "linux", "architecture": machine}},
        ],
    }
    ours.blobs.update(other.blobs)
    descriptor = ours.add(json.dumps(inner).encode())
    descriptor["mediaType"] = inner["mediaType"]
    ours.index["manifests"] = [descriptor]
    images = tmp_path / "images"
    store.import_image(str(images), "app", ours.archive(tmp_path / "o.tar"))
    assert tree(images / "app") == {"mine": "host's arch"}
    inner["manifests"] = inner["manifests"][:1]
    ours.index["manifests"] = [ours.add(json.dumps(inner).encode())]
    with pytest.raises(ImageError, match=f"has no image for linux/{machine}"):
        store.import_image(str(images), "app2", ours.archive(tmp_path / "o2.tar"))
    assert imported_nothing(images, "app2")


@pytest.mark.parametrize("form", ["oci", "docker"])
def test_a_gzipped_image_archive_is_told_by_its_content(tmp_path: Path, form: str) -> None:
    plain = tmp_path / "plain.tar"
    if form == "docker":
        docker_archive(plain, [BASE, TOP])
    else:
        Layout([BASE, TOP]).archive(plain)
    packed = tmp_path / "image.bin"  # no suffix to go by
    packed.write_bytes(gzip.compress(plain.read_bytes(), mtime=0))
    assert oci.is_image_archive(str(packed))
    images = tmp_path / "images"
    store.import_image(str(images), "app", str(packed))
    assert tree(images / "app") == EXPECTED


def test_no_directory_gets_its_mode_or_owner_through_a_symlink(tmp_path: Path) -> None:
    """The second guard against the attack above, should a checker ever miss a way to it."""
    (tmp_path / "host/secret").mkdir(parents=True)
    (tmp_path / "host/secret").chmod(0o700)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "a").symlink_to(tmp_path / "host")
    checker = MemberChecker("app", str(dest), "o.tar", str(dest), budget_of(str(dest), None))
    member = tarfile.TarInfo("a/secret")
    member.type, member.mode = tarfile.DIRTYPE, 0o777
    with ExtractingTarFile(fileobj=io.BytesIO(), mode="w") as tar:
        tar.checker = checker
        for set_it in (tar.chmod, tar.utime):
            with pytest.raises(ImageError, match="through the symlink a"):
                set_it(member, str(dest / "a/secret"))
        with pytest.raises(ImageError, match="through the symlink a"):
            tar.chown(member, str(dest / "a/secret"), True)
    assert (tmp_path / "host/secret").stat().st_mode & 0o777 == 0o700


PaxEntry = tuple[str, str, str, dict[str, str]]


def pax_layer(entries: Sequence[PaxEntry]) -> bytes:
    """A layer whose members carry pax records (kinds "file", "dir", "link" as in layer())."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, content, pax in entries:
            info = tarfile.TarInfo(name)
            info.pax_headers = pax
            if kind == "file":
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content.encode()))
                continue
            info.type = tarfile.DIRTYPE if kind == "dir" else tarfile.SYMTYPE
            info.linkname = content
            tar.addfile(info)
    return out.getvalue()


@pytest.mark.parametrize(
    "second",
    [
        [(".wh.x", "file", "", {}), ("x", "link", "HOST", {})],  # a whiteout, then the symlink
        [("x", "link", "HOST", {})],  # the symlink replaces the lower layer's directory
        [("x/.wh..wh..opq", "file", "", {})],  # opaque: x/f goes, x stays
    ],
)
def test_the_extended_attributes_of_a_removed_file_are_never_set_through_what_replaced_it(
    tmp_path: Path, second: list[PaxEntry]
) -> None:
    """The attributes are set once every layer is written: a lower layer's `x/f` with a file
    capability, `x` then a symlink to the host's bin, would give the host's `f` the capability."""
    host = tmp_path / "host"
    host.mkdir()
    (host / "f").write_text("host's")
    xattr = {"SCHILY.xattr.user.planted": "by the image"}
    first = pax_layer([("x", "dir", "", {}), ("x/f", "file", "image's", xattr)])
    second = [(n, kind, str(host) if to == "HOST" else to, pax) for n, kind, to, pax in second]
    images = tmp_path / "images"
    source = Layout([first, pax_layer(second)]).archive(tmp_path / "o.tar")
    store.import_image(str(images), "app", source)
    assert os.listxattr(host / "f") == []
    assert not os.path.exists(images / "app/x/f") or os.path.islink(images / "app/x")


def test_no_extended_attribute_is_set_through_a_symlink(tmp_path: Path) -> None:
    """The second guard, should a removal ever leave a file's attributes noted."""
    (tmp_path / "host").mkdir()
    (tmp_path / "host/f").write_text("host's")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "x").symlink_to(tmp_path / "host")
    checker = MemberChecker("app", str(dest), "o.tar", str(dest), budget_of(str(dest), None))
    checker.xattrs["x/f"] = {"user.planted": b"by the image"}
    with pytest.raises(ImageError, match="attributes of 'x/f' through the symlink x"):
        checker.set_xattrs()
    assert os.listxattr(tmp_path / "host/f") == []


def test_an_archive_of_too_many_members_is_refused_before_its_index_fills_memory(
    tmp_path: Path,
) -> None:
    files = Layout([BASE]).files()
    files.update({f"pad/{n}": b"" for n in range(10_001)})
    images = tmp_path / "images"
    with pytest.raises(ImageError, match="more than 10000 members, which no image archive has"):
        store.import_image(str(images), "app", write_tar(tmp_path / "o.tar", files))
    assert imported_nothing(images)


def test_an_archive_with_a_huge_extended_header_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "o.tar"
    write_tar(path, Layout([BASE]).files())
    with tarfile.open(path, "a", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("pad")
        info.pax_headers = {"comment": "x" * (17 * 1024**2)}
        tar.addfile(info, io.BytesIO())
    images = tmp_path / "images"
    with pytest.raises(ImageError, match="not a readable tar archive: an extended header of 17M"):
        store.import_image(str(images), "app", str(path))
    assert imported_nothing(images)
