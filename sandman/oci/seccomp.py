"""The OCI seccomp object (linux.seccomp) translated into sandman's own seccomp verdicts
(kernel/seccomp_policy.py), compiled by kernel/seccomp.py: one filter compiler for both.

sandman's verdicts are an errno or "allowed" per call, with cases on an argument's low word
being equal to a value or having any bit of a mask set. What translates: the actions ALLOW,
ERRNO (with errnoRet) and LOG (allowed: the kernel's log is not a confinement), the operators
SCMP_CMP_EQ and SCMP_CMP_MASKED_EQ where the mask test is "no bit set" or "the bit set" (what
Podman's and Docker's default profiles use). Anything else is refused with an error naming it,
never loaded as something weaker."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Mapping
from typing import Any

from sandman import syscall_table
from sandman.kernel import seccomp as seccomp_filter
from sandman.kernel import syscalls as sc
from sandman.kernel.seccomp_policy import Case, Check, Verdict
from sandman.oci.errors import OciError

_ALLOWING = ("SCMP_ACT_ALLOW", "SCMP_ACT_LOG")


def loader(seccomp: Mapping[str, Any] | None) -> Callable[[], None] | None:
    """A loader of the filter for the child, built now (before the fork); None without one."""
    if not seccomp:
        return None
    verdicts = translate(seccomp, os.uname().machine)
    return sc.SeccompFilter(seccomp_filter.compile_filter(verdicts, os.uname().machine))


def translate(seccomp: Mapping[str, Any], machine: str) -> dict[str, Verdict]:
    default_errno = seccomp.get("defaultErrnoRet")
    default = _outcome(str(seccomp.get("defaultAction")), default_errno, "defaultAction")
    rules: dict[str, list[tuple[int | None, list[Mapping[str, Any]]]]] = {}
    for index, rule in enumerate(seccomp.get("syscalls") or []):
        where = f"linux.seccomp.syscalls[{index}]"
        outcome = _outcome(str(rule.get("action")), rule.get("errnoRet"), where)
        for name in rule.get("names") or []:
            rules.setdefault(str(name), []).append((outcome, list(rule.get("args") or [])))
    names = syscall_table.NUMBERS.get(machine, {})
    verdicts = {name: Verdict(otherwise=default) for name in names} if default is not None else {}
    for name, entries in rules.items():
        if name in names:
            verdicts[name] = _verdict(name, entries, default)
    return verdicts


def _outcome(action: str, errno_ret: object, where: str) -> int | None:
    if action in _ALLOWING:
        return None
    if action == "SCMP_ACT_ERRNO":
        return int(str(errno_ret)) if errno_ret is not None else errno.EPERM
    raise OciError(
        f"{where}: the seccomp action {action} is not supported by sandman-oci "
        "(ALLOW, ERRNO and LOG are)"
    )


def _verdict(
    name: str, entries: list[tuple[int | None, list[Mapping[str, Any]]]], default: int | None
) -> Verdict:
    cases: list[Case] = []
    otherwise = default
    for outcome, args in entries:
        if not args:
            return Verdict(tuple(cases), outcome)  # unconditional: later rules never apply
        negated = [a for a in args if _is_no_bit_set(a)]
        if negated:
            # "no bit of the mask set" is the opposite of a check sandman has: any bit set gets
            # what the call would get without this rule, everything else the rule's outcome.
            if len(args) != 1:
                raise OciError(
                    f"seccomp rule of {name}: a mask test with other tests is not supported"
                )
            cases.append(
                Case((Check(int(args[0]["index"]), int(args[0]["value"]), True),), otherwise)
            )
            otherwise = outcome
            continue
        cases.append(Case(tuple(_check(name, a) for a in args), outcome))
    return Verdict(tuple(cases), otherwise)


def _is_no_bit_set(arg: Mapping[str, Any]) -> bool:
    return arg.get("op") == "SCMP_CMP_MASKED_EQ" and int(arg.get("valueTwo") or 0) == 0


def _check(name: str, arg: Mapping[str, Any]) -> Check:
    op, index, value = arg.get("op"), int(arg["index"]), int(arg.get("value") or 0)
    second = int(arg.get("valueTwo") or 0)
    if op == "SCMP_CMP_EQ" and value < 2**32:
        return Check(index, value)
    if op == "SCMP_CMP_MASKED_EQ" and second == value and bin(value).count("1") == 1:
        return Check(index, value, any_bit=True)
    raise OciError(
        f"seccomp rule of {name}: the test {op} of argument {index} is not supported by "
        "sandman-oci (SCMP_CMP_EQ and SCMP_CMP_MASKED_EQ on one bit or none are)"
    )
