"""The seccomp filter: a profile's verdicts (kernel/seccomp_policy.py) compiled to classic BPF
for this machine's architecture, built in apply or exec before the fork and loaded by the
init-to-be (or the entering process) just before it drops its capabilities. Loading needs
CAP_SYS_ADMIN in its user namespace or no_new_privs, and a filter outlives exec.

The program checks the architecture first: a call of another ABI (i386's int 0x80 on x86_64,
arm32 on aarch64, x32 calls, whose numbers carry bit 30) kills the process, since its numbers
are not the ones the verdicts were written for. Then a binary search over the call number
reaches the call's verdict in about eight comparisons, whatever the number of rules; a number
above the table's last call gets ENOSYS.
"""

# No `from __future__ import annotations`: typing compiles each string annotation of a
# NamedTuple when the class is made (about 0.1 ms a field, at every start).
import errno
import os
import struct
from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple

from sandman import syscall_table
from sandman.kernel import seccomp_policy
from sandman.kernel import syscalls as sc
from sandman.kernel.seccomp_policy import Verdict

# <linux/audit.h>: the EM_* machine with 64-bit and little-endian bits
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
X32_SYSCALL_BIT = 0x40000000
# <linux/seccomp.h> return values
RET_KILL_PROCESS = 0x80000000
RET_ERRNO = 0x00050000
RET_ALLOW = 0x7FFF0000
# struct seccomp_data: nr, arch, instruction_pointer, args[6]; an argument's low word comes first
# on both architectures (little-endian, as their AUDIT_ARCH says)
_NR, _ARCH, _ARGS = 0, 4, 16
# <linux/filter.h> classic BPF opcodes
LD_W_ABS = 0x20
JA, JEQ, JGE, JSET = 0x05, 0x15, 0x35, 0x45
RET_K = 0x06
MAX_INSNS = 4096  # BPF_MAXINSNS
_FAR = 0xFF  # a conditional jump's offset is one byte

Insn = tuple[int, int, int, int]  # code, jt, jf, k
Leaf = int | Verdict  # a return value, or a verdict that looks at arguments


class Seccomp(NamedTuple):
    """A sandbox's filter as its unit declares it: a profile, or "unconfined" (no filter), and
    the calls its unit allows or denies on top."""

    profile: str = "default"
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()


def loader(settings: Seccomp, capabilities: Iterable[str]) -> Callable[[], None] | None:
    """A loader of the filter, built now (before the fork) and called in the child; None for
    "unconfined"."""
    if settings.profile == "unconfined":
        return None
    rules = seccomp_policy.verdicts(settings.profile, capabilities, settings.allow, settings.deny)
    return sc.SeccompFilter(compile_filter(rules, os.uname().machine))


def compile_filter(verdicts: Mapping[str, Verdict], machine: str) -> bytes:
    """The filter program for `machine`: struct sock_filter instructions, packed."""
    if machine not in AUDIT_ARCH:
        raise OSError(
            errno.ENOTSUP,
            f"seccomp profiles are built for {' and '.join(AUDIT_ARCH)}, not {machine}; "
            'set security.seccomp = "unconfined" for sandboxes on this machine',
        )
    numbers = syscall_table.NUMBERS[machine]
    leaves = {numbers[name]: _leaf(v) for name, v in verdicts.items() if name in numbers}
    program = [
        (LD_W_ABS, 0, 0, _ARCH),
        (JEQ, 1, 0, AUDIT_ARCH[machine]),
        (RET_K, 0, 0, RET_KILL_PROCESS),
        (LD_W_ABS, 0, 0, _NR),
        *_search(_segments(leaves, max(numbers.values()), machine)),
    ]
    if len(program) > MAX_INSNS:
        raise ValueError(f"the filter has {len(program)} instructions; at most {MAX_INSNS} load")
    return b"".join(struct.pack("=HBBI", *insn) for insn in program)


def _leaf(verdict: Verdict) -> Leaf:
    return _action(verdict.otherwise) if not verdict.cases else verdict


def _action(errno_value: int | None) -> int:
    return RET_ALLOW if errno_value is None else RET_ERRNO | errno_value


def _segments(leaves: Mapping[int, Leaf], last: int, machine: str) -> list[tuple[int, Leaf]]:
    """The number line from 0 cut where the verdict changes: (first number, leaf) in order.
    Past the table's last call, ENOSYS; on x86_64 the x32 numbers are killed, but -1 (the
    number a debugger uses to skip a call) gets the kernel's own ENOSYS."""
    tail: list[tuple[int, Leaf]] = [(last + 1, _action(errno.ENOSYS))]
    if machine == "x86_64":
        tail += [(X32_SYSCALL_BIT, RET_KILL_PROCESS), (0xFFFFFFFF, _action(errno.ENOSYS))]
    segments: list[tuple[int, Leaf]] = []
    for number in range(last + 1):
        leaf = leaves.get(number, RET_ALLOW)
        if not segments or segments[-1][1] != leaf:
            segments.append((number, leaf))
    return segments + tail


def _search(segments: list[tuple[int, Leaf]]) -> list[Insn]:
    """A balanced binary search over the segments; A holds the call number on entry."""
    if len(segments) == 1:
        return _code(segments[0][1])
    middle = len(segments) // 2
    below, above = _search(segments[:middle]), _search(segments[middle:])
    split = segments[middle][0]
    if len(below) <= _FAR:
        return [(JGE, len(below), 0, split), *below, *above]
    # Too far for a conditional jump: it falls onto an unconditional one that can go further.
    return [(JGE, 0, 1, split), (JA, 0, 0, len(below)), *below, *above]


def _code(leaf: Leaf) -> list[Insn]:
    if isinstance(leaf, int):
        return [(RET_K, 0, 0, leaf)]
    code: list[Insn] = []
    for case in leaf.cases:
        code += _case(case.when, _action(case.errno))
    return [*code, (RET_K, 0, 0, _action(leaf.otherwise))]


def _case(checks: tuple[seccomp_policy.Check, ...], action: int) -> list[Insn]:
    """Each check loads its argument's low word and, failing, skips the rest of the case."""
    code: list[Insn] = []
    for index, check in enumerate(checks):
        rest = 2 * (len(checks) - index - 1) + 1  # later checks and the return
        code.append((LD_W_ABS, 0, 0, _ARGS + 8 * check.arg))
        code.append((JSET if check.any_bit else JEQ, 0, rest, check.value))
    return [*code, (RET_K, 0, 0, action)]
