"""The seccomp profiles from inside a sandbox: each test runs the same calls under the profile and
without it (or with the unit's own exception), so that it fails if the filter's rule is removed.

The calls are made by `sysprobe` (seccomp_probe.py), built static at test time. Inside a user
namespace some calls the profile refuses (kexec, module loading, mounts) are refused by the kernel
as well; those are shown refused here and shown refused *by the filter* in
tests/unit/test_seccomp_filter.py, which runs the program itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from seccomp_probe import SOURCE
from test_sandboxes import DEFAULT_CAPS, Sandman, busybox_image, probe_unit, sm

__all__ = ["busybox_image", "sm"]  # the fixtures, used by name

PROBE = "/opt/probes/sysprobe"
# Calls an unprivileged root of a user namespace reaches (with these arguments, the kernel
# answers something other than EPERM): refused, they show the filter at work.
REACHABLE = (
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "swapon",
    "io_uring_setup",
    "personality_no_aslr",
)
# Reached or not as the host is set: kernel.io_uring_disabled, and before Linux 6.5
# kernel.unprivileged_bpf_disabled, which refused every bpf() of an unprivileged caller.
HOST_SETTING = ("bpf", "io_uring_setup")
# Refused by the profile; the kernel may refuse them to the sandbox anyway (see above).
KERNEL_WIDE = ("kexec_load", "kexec_file_load")


@pytest.fixture(scope="module")
def probes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    compiler = shutil.which("gcc")
    assert compiler, "gcc is needed to build the seccomp probe; `sh contrib/setup.sh --test`"
    directory = tmp_path_factory.mktemp("seccomp-probes")
    directory.chmod(0o755)  # the sandbox's root is not the host's root: it needs the x bit
    source = directory / "sysprobe.c"
    source.write_text(SOURCE)
    binary = str(directory / "sysprobe")
    subprocess.run([compiler, "-static", "-O1", "-o", binary, str(source)], check=True)
    return directory


def _probe(sm: Sandman, name: str, *calls: str) -> dict[str, str]:
    """What each call gave inside sandbox `name`: "ok", an errno's name, "killed by SIGSYS"."""
    result = sm.exec(name, PROBE, *calls)
    answers = dict(line.split(": ", 1) for line in result.out.splitlines())
    assert list(answers) == list(calls), result
    return answers


@pytest.mark.root
def test_a_default_sandbox_makes_no_user_namespace_and_unconfined_does(
    sm: Sandman, probes: Path
) -> None:
    """What issue #18 found: `unshare -U -r -n` gave a full capability set and a tmpfs mount."""
    sm.write("confined", probe_unit(probes))
    sm.write("unconfined", probe_unit(probes, seccomp="unconfined"))
    sm.apply()
    escape = "unshare -U -r -n -m sh -c 'mount -t tmpfs none /tmp && echo mounted'"
    refused = sm.sh("confined", escape, expect=None)
    assert refused.code != 0 and "Operation not permitted" in refused.err, refused
    assert "mounted" not in refused.out, refused
    assert sm.sh("unconfined", escape).out.strip() == "mounted"
    calls = ("clone_newuser", "unshare_newuser", "clone3", "unshare_fs")
    assert _probe(sm, "confined", *calls) == {
        "clone_newuser": "EPERM",
        "unshare_newuser": "EPERM",
        "clone3": "ENOSYS",  # its flags are out of the filter's reach: glibc falls back to clone
        "unshare_fs": "ok",  # no namespace asked for
    }
    assert set(_probe(sm, "unconfined", *calls).values()) == {"ok"}


@pytest.mark.root
def test_a_sandbox_that_keeps_cap_sys_admin_may_make_user_namespaces(
    sm: Sandman, probes: Path
) -> None:
    capabilities = [*DEFAULT_CAPS, "CAP_SYS_ADMIN"]
    sm.write("admin", probe_unit(probes, capabilities=capabilities))
    sm.apply()
    assert sm.sh("admin", "unshare -U -r id -u").out.strip() == "0"
    answers = _probe(sm, "admin", "clone_newuser", "unshare_newuser", "clone3")
    assert set(answers.values()) == {"ok"}, answers


@pytest.mark.root
def test_io_uring_is_refused_unless_the_unit_allows_it(sm: Sandman, probes: Path) -> None:
    """The init (its log) and an exec'd command alike: both run under the filter."""
    disabled = Path("/proc/sys/kernel/io_uring_disabled")
    if disabled.exists() and disabled.read_text().strip() != "0":
        pytest.skip("kernel.io_uring_disabled is set: the host refuses io_uring itself")
    command = ("sh", "-c", f"{PROBE} io_uring_setup; exec sleep 1000")
    sm.write("confined", probe_unit(probes, command=command))
    sm.write("allowed", probe_unit(probes, syscalls_allow=["io_uring_setup"]))
    sm.apply()
    assert _probe(sm, "confined", "io_uring_setup") == {"io_uring_setup": "EPERM"}
    assert _probe(sm, "allowed", "io_uring_setup") == {"io_uring_setup": "ok"}
    log = sm.run("logs", "confined").out
    assert "io_uring_setup: EPERM" in log, log


@pytest.mark.root
def test_the_default_profile_refuses_the_calls_docker_refuses(sm: Sandman, probes: Path) -> None:
    sm.write("confined", probe_unit(probes))
    sm.write("unconfined", probe_unit(probes, seccomp="unconfined"))
    sm.apply()
    confined = _probe(sm, "confined", *REACHABLE, *KERNEL_WIDE, "socket_vsock", "getpid")
    assert confined == {
        **dict.fromkeys((*REACHABLE, *KERNEL_WIDE), "EPERM"),
        "socket_vsock": "EAFNOSUPPORT",  # a VM's channel to its host: as a kernel without it
        "getpid": "ok",
    }
    unconfined = _probe(sm, "unconfined", *REACHABLE, "socket_vsock")
    refused_anyway = {
        call
        for call, answer in unconfined.items()
        if answer == "EPERM" and call not in HOST_SETTING
    }
    assert refused_anyway == set(), "the kernel refuses these itself: pick other arguments"
    if "VSOCK" not in Path("/proc/net/protocols").read_text():
        pytest.skip("this kernel has no AF_VSOCK: the socket family rule is not shown")
    assert unconfined["socket_vsock"] == "ok"


@pytest.mark.root
@pytest.mark.skipif(os.uname().machine != "x86_64", reason="x32 and i386 are x86_64's")
def test_calls_of_another_abi_are_killed(sm: Sandman, probes: Path) -> None:
    """Their numbers are not the x86_64 numbers the profile is written for."""
    sm.write("confined", probe_unit(probes))
    sm.write("unconfined", probe_unit(probes, seccomp="unconfined"))
    sm.apply()
    calls = ("x32_getpid", "i386_getpid", "getpid")
    assert _probe(sm, "confined", *calls) == {
        "x32_getpid": "killed by SIGSYS",
        "i386_getpid": "killed by SIGSYS",
        "getpid": "ok",
    }
    unconfined = _probe(sm, "unconfined", *calls)
    assert "killed by SIGSYS" not in unconfined.values(), unconfined


@pytest.mark.root
def test_the_os_profile_lets_journald_take_handles_and_answers_audit_as_absent(
    sm: Sandman, probes: Path
) -> None:
    """For systemd as PID 1 (`capabilities = "os"` holds CAP_SYS_ADMIN): file handles and user
    namespaces work, an audit socket is EAFNOSUPPORT (as nspawn answers, so that systemd does
    without audit), and the keyring and bpf stay refused whatever the capabilities."""
    sm.write("os", probe_unit(probes, seccomp="os", capabilities="os"))
    sm.write("default", probe_unit(probes, seccomp="default", capabilities="os"))
    sm.apply()
    calls = ("name_to_handle_at", "clone_newuser", "socket_audit", "keyctl", "bpf")
    assert _probe(sm, "os", *calls) == {
        "name_to_handle_at": "ok",
        "clone_newuser": "ok",
        "socket_audit": "EAFNOSUPPORT",
        "keyctl": "EPERM",
        "bpf": "EPERM",
    }
    default = _probe(sm, "default", "name_to_handle_at", "socket_audit", "bpf")
    assert default == {"name_to_handle_at": "ok", "socket_audit": "ok", "bpf": "EINVAL"}


@pytest.mark.root
def test_a_unit_denies_a_call_the_profile_allows(sm: Sandman, probes: Path) -> None:
    sm.write("denied", probe_unit(probes, syscalls_deny=["name_to_handle_at"]))
    sm.write("default", probe_unit(probes))
    sm.apply()
    assert _probe(sm, "denied", "name_to_handle_at") == {"name_to_handle_at": "EPERM"}
    assert _probe(sm, "default", "name_to_handle_at") == {"name_to_handle_at": "ok"}
