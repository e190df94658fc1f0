"""The seccomp profiles and the classic BPF program built from them, run here by a small
interpreter of the instructions the builder emits: every call number of both architectures, the
argument rules, the architecture and x32 checks, and the jumps of a program too long for one
conditional jump. The root tests (tests/root/test_seccomp.py) prove the kernel agrees."""

from __future__ import annotations

import errno
import struct
import typing
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandman.capabilities import CAPABILITIES, DEFAULT_SET, OS_SET
from sandman.kernel import seccomp as sf
from sandman.kernel import seccomp_policy as policy
from sandman.syscall_table import NUMBERS
from sandman.units.model import Security

ALLOW, KILL = sf.RET_ALLOW, sf.RET_KILL_PROCESS
EPERM, ENOSYS, EAFNOSUPPORT = (sf.RET_ERRNO | e for e in (errno.EPERM, errno.ENOSYS, 97))
ARCHES = tuple(NUMBERS)
ADMIN = ("CAP_SYS_ADMIN",)

# The x86_64 calls that moby's default profile (profiles/seccomp/default.json, 2026) leaves out
# of its allowlist, for a container without capabilities; personality and socket it allows for
# some arguments only, clone without namespace flags.
DOCKER_REFUSES = frozenset(
    {
        *("_sysctl", "acct", "add_key", "afs_syscall", "bpf", "chroot", "clock_settime"),
        *("clone", "clone3", "create_module", "delete_module", "fanotify_init", "finit_module"),
        *("fsconfig", "fsmount", "fsopen", "fspick", "get_kernel_syms", "get_mempolicy"),
        *("getpmsg", "init_module", "io_uring_enter", "io_uring_register", "io_uring_setup"),
        *("ioperm", "iopl", "kcmp", "kexec_file_load", "kexec_load", "keyctl", "lookup_dcookie"),
        *("lsm_get_self_attr", "lsm_list_modules", "lsm_set_self_attr", "mbind"),
        *("migrate_pages", "mount", "mount_setattr", "move_mount", "move_pages", "nfsservctl"),
        *("open_by_handle_at", "open_tree", "open_tree_attr", "perf_event_open", "personality"),
        *("pidfd_getfd", "pivot_root", "process_madvise", "putpmsg", "query_module", "quotactl"),
        *("quotactl_fd", "reboot", "request_key", "security", "set_mempolicy"),
        *("set_mempolicy_home_node", "setdomainname", "sethostname", "setns", "settimeofday"),
        *("socket", "swapoff", "swapon", "sysfs", "syslog", "tuxcall", "umount2", "unshare"),
        *("uselib", "userfaultfd", "ustat", "vhangup", "vserver"),
    }
)
# Newer than that profile, which therefore refuses them; sandman allows them, as the calls they
# extend (the FS_IOC_FSGETXATTR ioctls, uretprobe) are allowed.
DOCKER_NOT_YET = frozenset({"file_getattr", "file_setattr", "uprobe"})


def run(program: bytes, nr: int, arch: int, args: Iterable[int] = ()) -> int:
    """What the kernel's interpreter would return for one call: struct seccomp_data is
    nr (int), arch (u32), instruction_pointer (u64), args (6 x u64)."""
    values = [*args, 0, 0, 0, 0, 0, 0][:6]
    data = struct.pack("=iIQ6Q", nr, arch, 0, *values)
    insns = list(struct.iter_unpack("=HBBI", program))
    pc, a = 0, 0
    while True:
        code, jt, jf, k = insns[pc]
        if code == sf.LD_W_ABS:
            (a,), pc = struct.unpack_from("=I", data, k), pc + 1
        elif code == sf.JA:
            pc += 1 + k
        elif code in (sf.JEQ, sf.JGE, sf.JSET):
            taken = {sf.JEQ: a == k, sf.JGE: a >= k, sf.JSET: bool(a & k)}[code]
            pc += 1 + (jt if taken else jf)
        else:
            assert code == sf.RET_K, hex(code)
            return int(k)


def expected(rules: dict[str, policy.Verdict], machine: str, nr: int, args: list[int]) -> int:
    """The same answer worked out from the verdicts, without the program."""
    numbers = NUMBERS[machine]
    if machine == "x86_64" and sf.X32_SYSCALL_BIT <= nr < 0xFFFFFFFF:
        return KILL
    if nr > max(numbers.values()):
        return ENOSYS
    name = {v: k for k, v in numbers.items()}.get(nr)
    verdict = rules.get(name or "", policy.Verdict())
    for case in verdict.cases:
        if all(_holds(check, args) for check in case.when):
            return sf._action(case.errno)
    return sf._action(verdict.otherwise)


def _holds(check: policy.Check, args: list[int]) -> bool:
    low = args[check.arg] & 0xFFFFFFFF
    return bool(low & check.value) if check.any_bit else low == check.value


def verdict_of(
    name: str,
    profile: str = "default",
    capabilities: Iterable[str] = (),
    args: Iterable[int] = (),
    machine: str = "x86_64",
    **unit: tuple[str, ...],
) -> int:
    program = sf.compile_filter(policy.verdicts(profile, capabilities, **unit), machine)
    return run(program, NUMBERS[machine][name], sf.AUDIT_ARCH[machine], args)


@pytest.mark.parametrize("machine", ARCHES)
@pytest.mark.parametrize("profile", policy.PROFILES)
@pytest.mark.parametrize("capabilities", [(), DEFAULT_SET, OS_SET, tuple(CAPABILITIES)])
def test_every_call_gets_its_verdict(machine: str, profile: str, capabilities: tuple[str]) -> None:
    rules = policy.verdicts(profile, capabilities)
    program = sf.compile_filter(rules, machine)
    for nr in range(max(NUMBERS[machine].values()) + 2):
        for args in ([0], [0x10000000], [policy.AF_NETLINK, 3, policy.NETLINK_AUDIT], [8]):
            assert run(program, nr, sf.AUDIT_ARCH[machine], args) == expected(
                rules, machine, nr, args
            ), (nr, args)


names = st.sampled_from(sorted(NUMBERS["x86_64"]))


@settings(max_examples=150, deadline=None)
@given(
    sandbox=st.tuples(
        st.sampled_from(ARCHES),
        st.sampled_from(policy.PROFILES),
        st.frozensets(st.sampled_from(sorted(CAPABILITIES))),
    ),
    unit=st.tuples(st.frozensets(names, max_size=8), st.frozensets(names, max_size=40)),
    call=st.tuples(
        st.one_of(st.integers(0, 480), st.integers(-(2**31), 2**31 - 1)),
        st.lists(st.integers(0, 2**64 - 1), min_size=6, max_size=6),
    ),
)
def test_the_program_agrees_with_the_verdicts(
    sandbox: tuple[str, str, frozenset[str]],
    unit: tuple[frozenset[str], frozenset[str]],
    call: tuple[int, list[int]],
) -> None:
    (machine, profile, capabilities), (allow, deny), (nr, args) = sandbox, unit, call
    rules = policy.verdicts(profile, capabilities, sorted(allow - deny), sorted(deny))
    program = sf.compile_filter(rules, machine)
    got = run(program, nr, sf.AUDIT_ARCH[machine], args)
    assert got == expected(rules, machine, nr & 0xFFFFFFFF, args)


def test_the_default_profile_refuses_what_docker_refuses() -> None:
    rules = policy.verdicts("default", ())
    assert set(rules) & set(NUMBERS["x86_64"]) == DOCKER_REFUSES - DOCKER_NOT_YET
    assert set(rules) <= set(NUMBERS["x86_64"])  # no name the table does not know


def test_another_architecture_and_x32_calls_are_killed() -> None:
    for machine in ARCHES:
        program = sf.compile_filter(policy.verdicts("default", ()), machine)
        other = sf.AUDIT_ARCH["aarch64" if machine == "x86_64" else "x86_64"]
        i386, arm = 0x40000003, 0x40000028  # AUDIT_ARCH_I386, AUDIT_ARCH_ARM
        for arch in (other, i386, arm):
            assert run(program, 39, arch) == KILL
    program = sf.compile_filter(policy.verdicts("default", ()), "x86_64")
    x86_64 = sf.AUDIT_ARCH["x86_64"]
    assert run(program, sf.X32_SYSCALL_BIT | NUMBERS["x86_64"]["getpid"], x86_64) == KILL
    assert run(program, sf.X32_SYSCALL_BIT | NUMBERS["x86_64"]["keyctl"], x86_64) == KILL
    assert run(program, -1, x86_64) == ENOSYS  # a debugger's skipped call, as the kernel says
    assert run(program, 470, x86_64) == ENOSYS  # newer than the table


def test_new_user_namespaces_need_cap_sys_admin() -> None:
    newuser, newnet = 0x10000000, 0x40000000
    sigchld = 17
    assert verdict_of("clone", args=[sigchld]) == ALLOW  # fork
    assert verdict_of("clone", args=[newuser | sigchld]) == EPERM
    assert verdict_of("clone", args=[newnet]) == EPERM
    assert verdict_of("clone", args=[(1 << 32) | sigchld]) == ALLOW  # the high word is not flags
    assert verdict_of("unshare", args=[newuser]) == EPERM
    assert verdict_of("unshare", args=[0x80]) == EPERM  # CLONE_NEWTIME
    assert verdict_of("unshare", args=[0x200]) == ALLOW  # CLONE_FS: no namespace
    assert verdict_of("clone3") == ENOSYS  # so that glibc falls back to clone
    assert verdict_of("setns") == EPERM
    for name, args in (("clone", [newuser]), ("unshare", [newuser]), ("clone3", []), ("setns", [])):
        assert verdict_of(name, capabilities=ADMIN, args=args) == ALLOW
        assert verdict_of(name, capabilities=ADMIN, args=args, machine="aarch64") == ALLOW


def test_capability_gated_calls_follow_the_kept_set() -> None:
    assert verdict_of("mount") == verdict_of("pivot_root") == EPERM
    assert verdict_of("mount", capabilities=ADMIN) == ALLOW
    assert verdict_of("bpf") == verdict_of("perf_event_open") == EPERM
    assert verdict_of("bpf", capabilities=["CAP_BPF"]) == ALLOW
    assert verdict_of("perf_event_open", capabilities=["CAP_PERFMON"]) == ALLOW
    assert verdict_of("chroot", capabilities=DEFAULT_SET) == ALLOW  # CAP_SYS_CHROOT is kept
    assert verdict_of("reboot", capabilities=DEFAULT_SET) == EPERM
    assert verdict_of("reboot", capabilities=OS_SET) == ALLOW  # how `poweroff` ends an OS
    assert verdict_of("open_by_handle_at", capabilities=DEFAULT_SET) == EPERM
    assert verdict_of("open_by_handle_at", capabilities=["CAP_DAC_READ_SEARCH"]) == ALLOW
    for name in ("keyctl", "io_uring_setup", "kexec_load", "userfaultfd", "swapon"):
        assert verdict_of(name, capabilities=CAPABILITIES) == EPERM, name


def test_personality_takes_only_the_harmless_personas() -> None:
    for persona in (0, 8, 0x20000, 0x20008, 0xFFFFFFFF):
        assert verdict_of("personality", args=[persona]) == ALLOW
    assert verdict_of("personality", args=[0x0040000]) == EPERM  # ADDR_NO_RANDOMIZE
    assert verdict_of("personality", args=[0x0400000]) == EPERM  # READ_IMPLIES_EXEC


def test_socket_families() -> None:
    audit = [policy.AF_NETLINK, 3, policy.NETLINK_AUDIT]
    assert verdict_of("socket", args=[2, 1, 0]) == ALLOW  # AF_INET
    assert verdict_of("socket", args=[policy.AF_ALG]) == EAFNOSUPPORT
    assert verdict_of("socket", args=[policy.AF_VSOCK]) == EAFNOSUPPORT
    assert verdict_of("socket", args=audit) == ALLOW
    assert verdict_of("socket", "os", OS_SET, args=audit) == EAFNOSUPPORT
    assert verdict_of("socket", "os", OS_SET, args=[policy.AF_NETLINK, 3, 0]) == ALLOW


def test_os_keeps_kernel_wide_facilities_from_a_booted_system() -> None:
    assert verdict_of("name_to_handle_at", "os", OS_SET) == ALLOW  # journald
    assert verdict_of("mount", "os", OS_SET) == ALLOW
    assert verdict_of("clone3", "os", OS_SET) == ALLOW
    assert verdict_of("keyctl", "os", OS_SET) == EPERM  # systemd does without a keyring
    for name in policy.OS_ALWAYS:
        assert verdict_of(name, "os", CAPABILITIES) == EPERM, name
        assert verdict_of(name, "default", CAPABILITIES) == ALLOW, name
    assert verdict_of("syslog", "os", OS_SET) == EPERM
    assert verdict_of("syslog", "os", ["CAP_SYSLOG"]) == ALLOW


def test_a_unit_allows_and_denies_calls_on_top() -> None:
    assert verdict_of("io_uring_setup") == EPERM
    assert verdict_of("io_uring_setup", allow=("io_uring_setup",)) == ALLOW
    assert verdict_of("clone", args=[0x10000000], allow=("clone",)) == ALLOW
    assert verdict_of("getpid", deny=("getpid",)) == EPERM
    assert verdict_of("getpid", "os", deny=("getpid",), machine="aarch64") == EPERM
    # A name the architecture lacks is left out of its filter.
    assert verdict_of("getpid", machine="aarch64", deny=("open",)) == ALLOW


def test_a_program_longer_than_a_conditional_jump_still_finds_every_call() -> None:
    by_number = sorted(NUMBERS["x86_64"], key=NUMBERS["x86_64"].__getitem__)
    every_other = tuple(by_number[::2])
    rules = policy.verdicts("default", (), deny=every_other)
    program = sf.compile_filter(rules, "x86_64")
    assert any(code == sf.JA for code, *_ in struct.iter_unpack("=HBBI", program))
    for nr in range(max(NUMBERS["x86_64"].values()) + 1):
        assert run(program, nr, sf.AUDIT_ARCH["x86_64"]) == expected(rules, "x86_64", nr, [0])


def test_every_jump_lands_inside_the_program() -> None:
    for machine in ARCHES:
        program = sf.compile_filter(policy.verdicts("os", ()), machine)
        insns = list(struct.iter_unpack("=HBBI", program))
        assert insns[-1][0] == sf.RET_K
        for pc, (code, jt, jf, k) in enumerate(insns):
            targets = (
                [k] if code == sf.JA else [jt, jf] if code in (sf.JEQ, sf.JGE, sf.JSET) else []
            )
            assert all(pc + 1 + t < len(insns) for t in targets), pc


def test_an_unknown_architecture_is_refused_with_a_fix() -> None:
    with pytest.raises(OSError, match=r'set security\.seccomp = "unconfined"'):
        sf.compile_filter(policy.verdicts("default", ()), "riscv64")


def test_unconfined_loads_nothing_and_a_profile_builds_a_loader() -> None:
    assert sf.loader(sf.Seccomp("unconfined"), ()) is None
    assert callable(sf.loader(sf.Seccomp("os", ("bpf",), ("getpid",)), OS_SET))


def test_the_unit_format_names_the_kernels_profiles() -> None:
    annotation = Security.model_fields["seccomp"].annotation
    assert typing.get_args(annotation) == (*policy.PROFILES, "unconfined")
