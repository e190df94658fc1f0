"""The cgroup v2 device filter's program, without loading it: the rule parser, the encoding
against bytes worked out by hand from <linux/bpf.h>, and the program's verdicts from a small
interpreter of the instructions it uses, for every device and access a rule set could meet."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import pytest

from sandman.apply.sandboxes import ALLOWED_DEVICES
from sandman.kernel import cgroup as cg
from sandman.kernel import device_filter as df

CHAR, BLOCK = df.BPF_DEVCG_DEV_CHAR, df.BPF_DEVCG_DEV_BLOCK
M, R, W = df.BPF_DEVCG_ACC_MKNOD, df.BPF_DEVCG_ACC_READ, df.BPF_DEVCG_ACC_WRITE
SANDBOX_RULES = ALLOWED_DEVICES  # the set the sandboxes get


def test_rules_parse_into_types_numbers_and_access_bits() -> None:
    assert df.parse_rule("c 1:3 rwm") == df.DeviceRule(CHAR, 1, 3, M | R | W)
    assert df.parse_rule("b 8:* r") == df.DeviceRule(BLOCK, 8, None, R)
    assert df.parse_rule("a *:* mw") == df.DeviceRule(None, None, None, M | W)
    assert df.parse_rule("c 4095:1048575 rr") == df.DeviceRule(CHAR, 4095, 1048575, R)


@pytest.mark.parametrize(
    "text",
    ["c 1:3", "c 1 rwm", "x 1:3 rwm", "c 1:3 rwx", "c 1:3 ", "c -1:3 rwm", "c 4096:0 r",
     "c 1:1048576 r", "c 1:3 rwm extra", "c a:3 r"],
)  # fmt: skip
def test_malformed_rules_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="device rule"):
        df.parse_rule(text)


@pytest.mark.skipif(sys.byteorder != "little", reason="the bytes below are little-endian")
def test_one_rule_encodes_to_the_bytes_worked_out_by_hand() -> None:
    expected = [
        "61 12 0000 00000000",  # r2 = *(u32 *)(r1 + 0)       ldx|mem|w, dst 2 src 1
        "57 02 0000 ffff0000",  # r2 &= 0xffff                 alu64|and|k
        "61 13 0000 00000000",  # r3 = *(u32 *)(r1 + 0)
        "77 03 0000 10000000",  # r3 >>= 16                    alu64|rsh|k
        "61 14 0400 00000000",  # r4 = *(u32 *)(r1 + 4)        major
        "61 15 0800 00000000",  # r5 = *(u32 *)(r1 + 8)        minor
        "55 02 0400 02000000",  # if r2 != 2 (char) goto +4    jmp|jne|k: past the block
        "55 04 0300 01000000",  # if r4 != 1 goto +3
        "55 05 0200 03000000",  # if r5 != 3 goto +2
        "b7 00 0000 01000000",  # r0 = 1                       alu64|mov|k
        "95 00 0000 00000000",  # exit                         jmp|exit
        "b7 00 0000 00000000",  # r0 = 0: nothing matched
        "95 00 0000 00000000",  # exit
    ]
    assert df.program(["c 1:3 rwm"]) == bytes.fromhex("".join(expected).replace(" ", ""))


def test_an_access_subset_rule_compares_the_asked_bits() -> None:
    block = df.instructions([df.parse_rule("b *:* r")])[6:]
    assert [(i.code, i.dst, i.src, i.off, i.imm) for i in block] == [
        (0x55, 2, 0, 5, BLOCK),  # if type != block goto next (5 instructions on)
        (0xBF, 1, 3, 0, 0),  # r1 = r3 (the access asked)
        (0x57, 1, 0, 0, R),  # r1 &= READ
        (0x5D, 1, 3, 2, 0),  # if r1 != r3 goto next: something beyond READ was asked
        (0xB7, 0, 0, 0, 1),
        (0x95, 0, 0, 0, 0),
        (0xB7, 0, 0, 0, 0),
        (0x95, 0, 0, 0, 0),
    ]


def test_a_rule_that_allows_everything_ends_the_program() -> None:
    """The verifier refuses unreachable instructions: nothing may follow an unconditional allow."""
    program = df.instructions([df.parse_rule("c 1:3 r"), df.parse_rule("a *:* rwm")])
    assert [(i.code, i.imm) for i in program[-2:]] == [(0xB7, 1), (0x95, 0)]
    assert sum(i.code == 0x95 for i in program) == 2


def run(program: list[df.Insn], kind: int, access: int, major: int, minor: int) -> int:
    """Interpret the instructions the filter uses, as the kernel would on this context."""
    context = {0: kind | access << 16, 4: major, 8: minor}
    regs = dict.fromkeys(range(11), 0)
    pc = 0
    for _ in range(len(program)):  # no backward jumps: each instruction runs at most once
        insn = program[pc]
        pc += 1
        if insn.code == 0x61:
            assert insn.src == 1, "only the context is read"
            regs[insn.dst] = context[insn.off]
        elif insn.code == 0x57:
            regs[insn.dst] &= insn.imm
        elif insn.code == 0x77:
            regs[insn.dst] >>= insn.imm
        elif insn.code == 0xB7:
            regs[insn.dst] = insn.imm
        elif insn.code == 0xBF:
            regs[insn.dst] = regs[insn.src]
        elif insn.code in (0x55, 0x5D):
            other = insn.imm if insn.code == 0x55 else regs[insn.src]
            assert insn.off > 0, "jumps only go forward"
            pc += insn.off if regs[insn.dst] != other else 0
        elif insn.code == 0x95:
            return regs[0]
        else:
            raise AssertionError(f"unexpected opcode {insn.code:#x}")
    raise AssertionError("ran off the end of the program")


def allowed_by(rules: list[df.DeviceRule], kind: int, access: int, major: int, minor: int) -> int:
    """The verdict v1's devices.allow gives: some rule covers the type, numbers and access."""
    return int(
        any(
            rule.kind in (None, kind)
            and rule.major in (None, major)
            and rule.minor in (None, minor)
            and access & rule.access == access
            for rule in rules
        )
    )


RULE_SETS = [
    SANDBOX_RULES,
    ("c 1:5 r", "b 8:* rw", "c *:7 m"),
    ("a 7:* w", "c 1:3 rwm"),
    (),
    ("a *:* rwm",),
]


@pytest.mark.parametrize("rules", RULE_SETS)
def test_the_program_allows_exactly_what_the_rules_allow(rules: tuple[str, ...]) -> None:
    parsed = [df.parse_rule(r) for r in rules]
    program = df.instructions(parsed)
    accesses = [M, R, W, R | W, M | R | W]
    numbers = [0, 1, 3, 5, 7, 8, 136, 254, 4095]
    for kind, access, major, minor in itertools.product((CHAR, BLOCK), accesses, numbers, numbers):
        got = run(program, kind, access, major, minor)
        assert got == allowed_by(parsed, kind, access, major, minor), (kind, access, major, minor)


def test_the_host_root_disk_and_mem_are_refused_to_a_sandbox() -> None:
    """The escape issue #16 reported: mknod b 254:0 and opening it, and /dev/mem (c 1:1)."""
    program = df.instructions([df.parse_rule(r) for r in SANDBOX_RULES])
    for access in (M, R, W, R | W):
        assert run(program, BLOCK, access, 254, 0) == 0
        assert run(program, CHAR, access, 1, 1) == 0
        assert run(program, CHAR, access, 1, 3) == 1
        assert run(program, CHAR, access, 136, 4) == 1


def test_jumps_stay_inside_the_program() -> None:
    program = df.instructions([df.parse_rule(r) for r in (*SANDBOX_RULES, "b 8:* r")])
    for index, insn in enumerate(program):
        if insn.code in (0x55, 0x5D):
            assert 0 < index + 1 + insn.off < len(program)
    assert program[-1].code == 0x95


def test_v2_restrict_devices_attaches_the_filter_to_the_cgroup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sandman/web").mkdir(parents=True)
    calls: list[tuple[str, tuple[str, ...]]] = []
    monkeypatch.setattr(df, "attach", lambda d, rules: calls.append((d, tuple(rules))))
    driver = cg.V2Driver(str(tmp_path), "sandman")
    assert driver.restrict_devices("sandman/web", ["c 1:3 rwm"]) == []
    assert calls == [(str(tmp_path / "sandman/web"), ("c 1:3 rwm",))]


def test_v2_restrict_devices_of_a_missing_cgroup_is_an_error(tmp_path: Path) -> None:
    driver = cg.V2Driver(str(tmp_path), "sandman")
    with pytest.raises(FileNotFoundError) as caught:
        driver.restrict_devices("sandman/gone", ["c 1:3 rwm"])
    assert caught.value.filename == str(tmp_path / "sandman/gone")
