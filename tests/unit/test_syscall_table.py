"""sandman.syscall_table against the installed kernel headers (linux-libc-dev): every call a
header defines has the table's number, and the table knows every call of the header.

The headers may be older than the table (Debian 12's are Linux 6.1): a call added since is the
table's alone. aarch64's numbers come from the generic header as arm64
configures it, resolved by the C preprocessor (its 32/64-bit names are macros of macros).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from sandman.syscall_table import NAMES, NUMBERS

X86_64_HEADER = Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")
GENERIC_HEADER = Path("/usr/include/asm-generic/unistd.h")
# What arm64's uapi <asm/unistd.h> defines before it includes the generic table.
ARM64_WANTS = (
    "RENAMEAT",
    "NEW_STAT",
    "SET_GET_RLIMIT",
    "TIME32_SYSCALLS",
    "SYS_CLONE3",
    "MEMFD_SECRET",
)
# The calls Linux added after 6.1, the oldest headers these tests expect (Debian 12's).
AFTER_6_1 = frozenset(
    {
        *("cachestat", "fchmodat2", "map_shadow_stack", "futex_wake", "futex_wait"),
        *("futex_requeue", "statmount", "listmount", "lsm_get_self_attr", "lsm_set_self_attr"),
        *("lsm_list_modules", "mseal", "setxattrat", "getxattrat", "listxattrat"),
        *("removexattrat", "open_tree_attr", "file_getattr", "file_setattr"),
        *("uretprobe", "uprobe"),  # x86_64 alone
    }
)
# Numbers of the generic header that are not calls: a reserved range and the count.
NOT_CALLS = ("arch_specific_syscall", "syscalls")


def _x86_64_header() -> dict[str, int]:
    if not X86_64_HEADER.is_file():
        pytest.skip(f"{X86_64_HEADER} is not installed (linux-libc-dev)")
    text = X86_64_HEADER.read_text()
    return {m[1]: int(m[2]) for m in re.finditer(r"#define __NR_(\w+) (\d+)", text)}


def _aarch64_header(tmp_path: Path) -> dict[str, int]:
    compiler = shutil.which("gcc")
    if not GENERIC_HEADER.is_file() or compiler is None:
        pytest.skip("the generic unistd.h and gcc are needed (linux-libc-dev, gcc)")
    source = tmp_path / "unistd.c"
    source.write_text("#include <asm-generic/unistd.h>\n")
    wants = [f"-D__ARCH_WANT_{want}" for want in ARM64_WANTS]
    macros = subprocess.run(
        [compiler, "-E", "-dM", *wants, str(source)], capture_output=True, text=True, check=True
    ).stdout
    defined = dict(re.findall(r"#define (\w+) (.+)", macros))
    numbers = {}
    for macro in defined:
        name = macro.removeprefix("__NR_")
        if macro.startswith("__NR_") and name not in NOT_CALLS:
            numbers[name] = _resolve(defined, macro)
    return numbers


def _resolve(defined: dict[str, str], macro: str) -> int:
    """A macro's number: a literal, another macro, or (another macro+N)."""
    value = defined[macro].replace(" ", "").strip("()")
    if value.isdigit():
        return int(value)
    base, _, offset = value.partition("+")
    return _resolve(defined, base) + int(offset or 0)


def _check(ours: dict[str, int], header: dict[str, int]) -> None:
    assert {name: ours.get(name) for name in header} == header
    assert set(ours) - set(header) <= AFTER_6_1


def test_x86_64_numbers_match_the_header() -> None:
    _check(NUMBERS["x86_64"], _x86_64_header())


def test_aarch64_numbers_match_the_generic_header(tmp_path: Path) -> None:
    _check(NUMBERS["aarch64"], _aarch64_header(tmp_path))


def test_each_number_is_one_call() -> None:
    for table in NUMBERS.values():
        assert len(set(table.values())) == len(table)


def test_known_values() -> None:
    x86_64, aarch64 = NUMBERS["x86_64"], NUMBERS["aarch64"]
    assert (x86_64["read"], x86_64["keyctl"], x86_64["rseq"]) == (0, 250, 334)
    assert (x86_64["uretprobe"], x86_64["uprobe"]) == (335, 336)
    assert (aarch64["io_setup"], aarch64["keyctl"], aarch64["kexec_file_load"]) == (0, 219, 294)
    # From 424 on every architecture numbers its calls alike.
    for table in (x86_64, aarch64):
        assert (table["pidfd_send_signal"], table["io_uring_setup"], table["clone3"]) == (
            424,
            425,
            435,
        )
        assert (table["mseal"], table["file_setattr"]) == (462, 469)
    assert "open" in x86_64 and "open" not in aarch64
    assert set(x86_64) | set(aarch64) == NAMES
