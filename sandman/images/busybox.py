"""The built-in image: Debian's busybox-static, a link per applet, and a minimal /etc.

The binary must be statically linked: the image holds no libraries, so a busybox that needs the
host's dynamic loader would fail inside it with a bare "not found".
"""

from __future__ import annotations

import os
import struct
import subprocess

from sandman.errors import ImageError

BUSYBOX = "bin/busybox"
INSTALL_HINT = "install Debian's busybox-static: apt-get install busybox-static"
_PT_INTERP = 3  # the program header that names the dynamic loader

ETC_FILES = {
    "etc/passwd": (
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    ),
    "etc/group": "root:x:0:\nnogroup:x:65534:\n",
    "etc/hosts": "127.0.0.1\tlocalhost\n::1\tlocalhost\n",
    "etc/resolv.conf": "",
}
# Mount points sandman fills for each sandbox, and the usual writable places.
EMPTY_DIRS = {
    "proc": 0o755,
    "sys": 0o755,
    "dev": 0o755,
    "run": 0o755,
    "tmp": 0o1777,
    "var/tmp": 0o1777,
    "root": 0o700,
}


def inspect(name: str, path: str, busybox: str) -> tuple[bytes, list[str]]:
    """The binary's bytes and its applets' paths, or an ImageError saying what to install."""
    try:
        with open(busybox, "rb") as file:
            blob = file.read()
    except FileNotFoundError:
        raise ImageError(name, path, f"{busybox} is missing; {INSTALL_HINT}") from None
    except OSError as exc:
        raise ImageError(name, path, f"cannot read {busybox}: {exc}; {INSTALL_HINT}") from exc
    try:
        dynamic = has_interpreter(blob)
    except ValueError as exc:
        raise ImageError(name, path, f"{busybox} {exc}; {INSTALL_HINT}") from None
    if dynamic:
        raise ImageError(
            name,
            path,
            f"{busybox} is dynamically linked and would not run inside the image; {INSTALL_HINT}",
        )
    return blob, applets(name, path, busybox)


def has_interpreter(blob: bytes) -> bool:
    """Whether the ELF executable BLOB has a PT_INTERP program header (is dynamically linked).

    Raises ValueError when BLOB is no ELF executable."""
    if blob[:4] != b"\x7fELF" or len(blob) < 64 or blob[4] not in (1, 2) or blob[5] not in (1, 2):
        raise ValueError("is not an ELF executable")
    order = "<" if blob[5] == 1 else ">"
    # e_phoff, e_phentsize and e_phnum sit at different offsets in 32- and 64-bit headers.
    if blob[4] == 2:
        (table,) = struct.unpack_from(order + "Q", blob, 0x20)
        size, count = struct.unpack_from(order + "HH", blob, 0x36)
    else:
        (table,) = struct.unpack_from(order + "I", blob, 0x1C)
        size, count = struct.unpack_from(order + "HH", blob, 0x2A)
    if size < 4 or table + size * count > len(blob):
        raise ValueError("is not a valid ELF executable (its program headers are cut off)")
    kinds = [struct.unpack_from(order + "I", blob, table + i * size)[0] for i in range(count)]
    return _PT_INTERP in kinds


def applets(name: str, path: str, busybox: str) -> list[str]:
    """Where each applet belongs (`usr/bin/env`), as the binary itself lists them."""
    try:
        listed = subprocess.run(
            [busybox, "--list-full"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise ImageError(name, path, f"`{busybox} --list-full` failed: {exc}") from exc
    links = {line.strip() for line in listed.splitlines() if line.strip()}
    unsafe = sorted(link for link in links if not _relative(link))
    if unsafe or not links:
        raise ImageError(name, path, f"`{busybox} --list-full` gave unusable paths: {unsafe}")
    return sorted(links - {BUSYBOX})


def _relative(link: str) -> bool:
    parts = link.split("/")
    return "\0" not in link and all(part not in ("", ".", "..") for part in parts)


def fill(root: str, blob: bytes, links: list[str]) -> None:
    """Lay the image out under ROOT (an empty directory)."""
    for directory, mode in EMPTY_DIRS.items():
        _mkdir(root, directory, mode)
    _write(root, BUSYBOX, blob, 0o755)
    for link in links:
        parent = os.path.dirname(link)
        if parent:
            _mkdir(root, parent)
        # Relative, so the link reaches the image's busybox seen from the host as from inside.
        os.symlink(os.path.relpath(BUSYBOX, parent or "."), os.path.join(root, link))
    for file, text in ETC_FILES.items():
        _write(root, file, text.encode(), 0o644)


def _mkdir(root: str, relative: str, mode: int = 0o755) -> None:
    # Explicit modes: the caller's umask must not make the image unusable inside a sandbox.
    path = root
    for part in relative.split("/"):
        path = os.path.join(path, part)
        if not os.path.isdir(path):
            os.mkdir(path)
            os.chmod(path, 0o755)
    os.chmod(path, mode)


def _write(root: str, relative: str, data: bytes, mode: int) -> None:
    _mkdir(root, os.path.dirname(relative))
    path = os.path.join(root, relative)
    with open(path, "xb") as file:
        file.write(data)
    os.chmod(path, mode)
