"""The cgroup v2 device filter: an eBPF program, built here as bytes, that allows the listed
device rules and denies every other device to the processes of one cgroup.

cgroup v2 has no devices.allow/devices.deny. Instead the kernel runs every
BPF_PROG_TYPE_CGROUP_DEVICE program attached to the cgroup of a process (and to its ancestors)
before that process makes (mknod) or opens a device node; the device is refused unless each
returns 1. runc and crun generate such a program from the container's rules; this is the same
idea, written from the kernel's interface (<linux/bpf.h>, struct bpf_cgroup_dev_ctx), with the
rules in v1's text form so that both drivers take the same tuple: `TYPE MAJOR:MINOR ACCESS`,
TYPE `a` (any), `b` or `c`, `*` for any major or minor, ACCESS letters of `rwm`.

The program, for the context in r1 (struct bpf_cgroup_dev_ctx: u32 access_type, u32 major,
u32 minor; the low 16 bits of access_type are the device type, the high 16 the access asked):

    r2 = type   r3 = access   r4 = major   r5 = minor        (the prologue, loaded once)
    per rule:   if r2 != TYPE goto next                       (left out for type a)
                r1 = r3 & ACCESS; if r1 != r3 goto next       (left out for rwm)
                if r4 != MAJOR goto next                      (left out for *)
                if r5 != MINOR goto next                      (left out for *)
                r0 = 1; exit                                  (allowed)
    next: ...   r0 = 0; exit                                  (nothing matched: denied)
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import NamedTuple

from sandman.kernel import syscalls as sc

# <linux/bpf.h>: the device types and accesses packed into bpf_cgroup_dev_ctx.access_type
BPF_DEVCG_DEV_BLOCK = 1
BPF_DEVCG_DEV_CHAR = 2
BPF_DEVCG_ACC_MKNOD = 1
BPF_DEVCG_ACC_READ = 2
BPF_DEVCG_ACC_WRITE = 4
ACCESS_ALL = BPF_DEVCG_ACC_MKNOD | BPF_DEVCG_ACC_READ | BPF_DEVCG_ACC_WRITE
_TYPES = {"a": None, "b": BPF_DEVCG_DEV_BLOCK, "c": BPF_DEVCG_DEV_CHAR}
_ACCESS = {"m": BPF_DEVCG_ACC_MKNOD, "r": BPF_DEVCG_ACC_READ, "w": BPF_DEVCG_ACC_WRITE}
# The kernel's dev_t: 12 bits of major, 20 of minor. Both then fit a positive 32-bit immediate,
# which a 64-bit compare sign-extends harmlessly (the loaded u32 fields are zero-extended).
MAJOR_MAX, MINOR_MAX = (1 << 12) - 1, (1 << 20) - 1

# eBPF opcodes (<linux/bpf_common.h>, <linux/bpf.h>): class | operation | source
_LDX_MEM_W = 0x61  # BPF_LDX | BPF_MEM | BPF_W: dst = *(u32 *)(src + off)
_ALU64_AND_K = 0x57  # BPF_ALU64 | BPF_AND | BPF_K: dst &= imm
_ALU64_RSH_K = 0x77  # BPF_ALU64 | BPF_RSH | BPF_K: dst >>= imm
_ALU64_MOV_K = 0xB7  # BPF_ALU64 | BPF_MOV | BPF_K: dst = imm
_ALU64_MOV_X = 0xBF  # BPF_ALU64 | BPF_MOV | BPF_X: dst = src
_JMP_JNE_K = 0x55  # BPF_JMP | BPF_JNE | BPF_K: if dst != imm: pc += off
_JMP_JNE_X = 0x5D  # BPF_JMP | BPF_JNE | BPF_X: if dst != src: pc += off
_JMP_EXIT = 0x95  # BPF_JMP | BPF_EXIT: return r0

# offsets in struct bpf_cgroup_dev_ctx
_CTX_ACCESS_TYPE, _CTX_MAJOR, _CTX_MINOR = 0, 4, 8
LICENSE = "Apache-2.0"  # sandman's own: the program calls no GPL-only helper (none at all)
PROGRAM_NAME = "sandman_devices"


class DeviceRule(NamedTuple):
    """One allowed rule: `kind` a BPF_DEVCG_DEV_* or None for any type, `major`/`minor` None
    for any, `access` BPF_DEVCG_ACC_* bits."""

    kind: int | None
    major: int | None
    minor: int | None
    access: int


class Insn(NamedTuple):
    """struct bpf_insn: opcode, destination and source registers, jump offset, immediate."""

    code: int
    dst: int = 0
    src: int = 0
    off: int = 0
    imm: int = 0


def parse_rule(text: str) -> DeviceRule:
    """`c 136:* rwm` -> DeviceRule(CHAR, 136, None, MKNOD|READ|WRITE); ValueError if malformed."""
    try:
        kind, numbers, access = text.split()
        major, minor = numbers.split(":")
    except ValueError:
        raise ValueError(f"device rule {text!r} is not 'TYPE MAJOR:MINOR ACCESS'") from None
    if kind not in _TYPES:
        raise ValueError(f"device rule {text!r}: type must be a, b or c")
    if not access or any(letter not in _ACCESS for letter in access):
        raise ValueError(f"device rule {text!r}: access must be letters of rwm")
    return DeviceRule(
        _TYPES[kind],
        _number(text, major, MAJOR_MAX),
        _number(text, minor, MINOR_MAX),
        sum(_ACCESS[letter] for letter in set(access)),
    )


def _number(text: str, value: str, largest: int) -> int | None:
    if value == "*":
        return None
    if not value.isdigit() or int(value) > largest:
        raise ValueError(f"device rule {text!r}: {value!r} is not * or a number up to {largest}")
    return int(value)


def instructions(rules: Sequence[DeviceRule]) -> list[Insn]:
    """The program for `rules`: the prologue, one block per rule, the default deny."""
    program = _prologue()
    for rule in rules:
        block = _rule_block(rule)
        program += block
        if len(block) == 2:
            # A rule with no condition allows everything: whatever followed could never run,
            # and the verifier refuses a program with unreachable instructions.
            return program
    return [*program, Insn(_ALU64_MOV_K, dst=0, imm=0), Insn(_JMP_EXIT)]


def _prologue() -> list[Insn]:
    # Every field is read once into its own register, so that each rule block is only compares.
    return [
        Insn(_LDX_MEM_W, dst=2, src=1, off=_CTX_ACCESS_TYPE),
        Insn(_ALU64_AND_K, dst=2, imm=0xFFFF),  # r2: the device type
        Insn(_LDX_MEM_W, dst=3, src=1, off=_CTX_ACCESS_TYPE),
        Insn(_ALU64_RSH_K, dst=3, imm=16),  # r3: the access asked for (one or more bits)
        Insn(_LDX_MEM_W, dst=4, src=1, off=_CTX_MAJOR),
        Insn(_LDX_MEM_W, dst=5, src=1, off=_CTX_MINOR),
    ]


def _rule_block(rule: DeviceRule) -> list[Insn]:
    """The compares of one rule, each jumping past the block when it fails, then `return 1`.

    A jump's offset counts instructions after the jump itself, so it is known only once the
    block is complete: the compares are collected first with the offset left at 0.
    """
    checks: list[Insn] = []
    if rule.kind is not None:
        checks.append(Insn(_JMP_JNE_K, dst=2, imm=rule.kind))
    if rule.access != ACCESS_ALL:
        # An open for reading and writing asks READ|WRITE at once: the rule matches only when it
        # grants every bit asked, i.e. when (asked & granted) == asked. r1 (the context) is free.
        checks.append(Insn(_ALU64_MOV_X, dst=1, src=3))
        checks.append(Insn(_ALU64_AND_K, dst=1, imm=rule.access))
        checks.append(Insn(_JMP_JNE_X, dst=1, src=3))
    if rule.major is not None:
        checks.append(Insn(_JMP_JNE_K, dst=4, imm=rule.major))
    if rule.minor is not None:
        checks.append(Insn(_JMP_JNE_K, dst=5, imm=rule.minor))
    block = [*checks, Insn(_ALU64_MOV_K, dst=0, imm=1), Insn(_JMP_EXIT)]
    return [
        insn._replace(off=len(block) - index - 1) if insn.code in (_JMP_JNE_K, _JMP_JNE_X) else insn
        for index, insn in enumerate(block)
    ]


def encode(program: Sequence[Insn]) -> bytes:
    """struct bpf_insn in the host's byte order: u8 code, u8 registers (dst and src nibbles, dst
    in the low one on little-endian hosts, as the C bit-field lays it out), s16 off, s32 imm."""
    little = sys.byteorder == "little"
    out = bytearray()
    for insn in program:
        regs = insn.dst | insn.src << 4 if little else insn.dst << 4 | insn.src
        out += bytes((insn.code, regs))
        out += insn.off.to_bytes(2, sys.byteorder, signed=True)
        out += insn.imm.to_bytes(4, sys.byteorder, signed=True)
    return bytes(out)


def program(rules: Sequence[str]) -> bytes:
    """The encoded program that allows exactly the device rules `rules` (v1's text form)."""
    return encode(instructions([parse_rule(rule) for rule in rules]))


def attach(cgroup_dir: str, rules: Sequence[str]) -> None:
    """Load the filter for `rules` and attach it to the cgroup directory, replacing any device
    program sandman attached there before.

    BPF_F_ALLOW_MULTI, as runc and crun use it: a program in a cgroup below adds to this one
    (both must allow), it can never override it, and a host manager's programs above (systemd
    attaches its own the same way) keep applying too. A process of the sandbox could not detach
    it anyway: that needs CAP_BPF or CAP_SYS_ADMIN in the initial user namespace. The new
    program is attached before the old ones are detached, so the cgroup is never unfiltered;
    its fd is closed after, as the attachment holds the program.
    """
    code = program(rules)
    fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        old = sc.bpf_prog_query(fd, sc.BPF_CGROUP_DEVICE)
        prog = sc.bpf_prog_load(sc.BPF_PROG_TYPE_CGROUP_DEVICE, code, LICENSE, PROGRAM_NAME)
        try:
            sc.bpf_prog_attach(fd, prog, sc.BPF_CGROUP_DEVICE, sc.BPF_F_ALLOW_MULTI)
        finally:
            os.close(prog)
        for prog_id in old:
            _detach(fd, prog_id)
    except OSError as exc:
        raise OSError(exc.errno, f"{exc.strerror} (device filter)", cgroup_dir) from None
    finally:
        os.close(fd)


def _detach(cgroup_fd: int, prog_id: int) -> None:
    try:
        prog = sc.bpf_prog_get_fd_by_id(prog_id)
    except FileNotFoundError:
        return  # detached and freed meanwhile
    try:
        sc.bpf_prog_detach(cgroup_fd, prog, sc.BPF_CGROUP_DEVICE)
    finally:
        os.close(prog)


def attached(cgroup_dir: str) -> list[int]:
    """The ids of the device programs attached to the cgroup itself (drift: none is an open
    door)."""
    fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return sc.bpf_prog_query(fd, sc.BPF_CGROUP_DEVICE)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, cgroup_dir) from None
    finally:
        os.close(fd)
