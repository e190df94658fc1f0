"""The busybox image without root: the static-binary check on synthetic ELF headers, the
explained refusals, and the layout of an image built from the host's busybox-static."""

from __future__ import annotations

import os
import stat
import struct
from pathlib import Path

import pytest

from sandman.errors import ImageError
from sandman.images import busybox, store

BUSYBOX = "/bin/busybox"
needs_busybox = pytest.mark.skipif(
    not os.path.exists(BUSYBOX), reason="needs Debian's busybox-static"
)


def _elf(interpreter: bool, bits: int = 64, order: str = "<") -> bytes:
    """A minimal ELF header and program header table: PT_LOAD, and PT_INTERP when asked."""
    kinds = [1, 3] if interpreter else [1]
    ident = b"\x7fELF" + bytes([2 if bits == 64 else 1, 1 if order == "<" else 2, 1]) + bytes(9)
    if bits == 64:
        header = ident + struct.pack(order + "HHIQQQIHHHHHH", 2, 62, 1, 0, 64, 0, 0, 64, 56,
                                     len(kinds), 0, 0, 0)  # fmt: skip
        table = b"".join(struct.pack(order + "I", k) + bytes(52) for k in kinds)
    else:
        header = ident + struct.pack(order + "HHIIIIIHHHHHH", 2, 3, 1, 0, 52, 0, 0, 52, 32,
                                     len(kinds), 0, 0, 0)  # fmt: skip
        table = b"".join(struct.pack(order + "I", k) + bytes(28) for k in kinds)
    return header + table


@pytest.mark.parametrize(("bits", "order"), [(64, "<"), (32, "<"), (64, ">"), (32, ">")])
def test_elf_interpreter_is_detected(bits: int, order: str) -> None:
    assert busybox.has_interpreter(_elf(True, bits, order))
    assert not busybox.has_interpreter(_elf(False, bits, order))


@pytest.mark.parametrize(
    "blob", [b"#!/bin/sh\n" * 10, b"", _elf(True)[:70], b"\x7fELF" + bytes(60)]
)
def test_non_elf_is_refused(blob: bytes) -> None:
    with pytest.raises(ValueError, match="ELF"):
        busybox.has_interpreter(blob)


def test_missing_or_dynamic_busybox_is_explained(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="is missing; install Debian's busybox-static"):
        store.build_busybox(str(tmp_path), str(tmp_path / "busybox"))
    dynamic = tmp_path / "dynamic"
    dynamic.write_bytes(_elf(True))
    with pytest.raises(ImageError, match=r"dynamically linked.*apt-get install busybox-static"):
        store.build_busybox(str(tmp_path), str(dynamic))
    assert sorted(os.listdir(tmp_path)) == ["dynamic"]


@needs_busybox
def test_busybox_image_layout(tmp_path: Path) -> None:
    info = store.build_busybox(str(tmp_path), BUSYBOX, name="bb")
    root = Path(info.path)
    assert stat.S_IMODE((root / "bin/busybox").stat().st_mode) == 0o755
    assert (root / "bin/busybox").read_bytes() == Path(BUSYBOX).read_bytes()
    for link in ("bin/sh", "usr/bin/env", "sbin/ip", "usr/bin/["):
        assert (root / link).is_symlink()
        assert os.path.realpath(root / link) == str(root / "bin/busybox")
    assert "root:x:0:0:root:/root:/bin/sh" in (root / "etc/passwd").read_text()
    assert (root / "etc/group").read_text() == "root:x:0:\nnogroup:x:65534:\n"
    assert "::1\tlocalhost" in (root / "etc/hosts").read_text()
    modes = {d: stat.S_IMODE((root / d).stat().st_mode) for d in ("tmp", "var/tmp", "root", "proc")}
    assert modes == {"tmp": 0o1777, "var/tmp": 0o1777, "root": 0o700, "proc": 0o755}
    assert all(not any((root / d).iterdir()) for d in ("proc", "sys", "dev", "run", "tmp"))
    assert not (root / "www").exists()
    assert info.files > 200
    again = store.build_busybox(str(tmp_path), BUSYBOX, name="bb")
    assert again.path == info.path
    assert sorted(set(os.listdir(tmp_path)) - {store.LOCK}) == ["bb"]  # no temporary left
