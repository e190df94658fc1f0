"""The "default" seccomp filter: syscalls that act on the whole kernel, not on the sandbox, fail
with EPERM; everything else is allowed.

Built with libseccomp through pyseccomp (a ctypes binding from PyPI, so it installs in any venv;
Debian's python3-seccomp lives in the system interpreter's dist-packages only). The filter is
built in apply and loaded by the init-to-be just before it drops its capabilities: loading needs
CAP_SYS_ADMIN in its user namespace or no_new_privs, and a filter outlives exec.
"""

from __future__ import annotations

import errno
from collections.abc import Callable

# The kernel-wide ones that Docker's and nspawn's default profiles also refuse: new kernels and
# modules, the kernel keyring, the machine's power and swap, its clocks, its accounting and
# tracing facilities, handles that bypass the mount namespace, and obsolete or dangerous calls.
DENIED = (
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "create_module",
    "query_module",
    "get_kernel_syms",
    "keyctl",
    "add_key",
    "request_key",
    "reboot",
    "swapon",
    "swapoff",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "stime",
    "acct",
    "bpf",
    "perf_event_open",
    "lookup_dcookie",
    "quotactl",
    "nfsservctl",
    "syslog",
    "open_by_handle_at",
    "name_to_handle_at",
    "iopl",
    "ioperm",
    "uselib",
    "vm86",
    "vm86old",
    "_sysctl",
    "userfaultfd",
)


def default_filter() -> Callable[[], None]:
    """A loader of the default filter, built now (before the fork) and loaded in the child."""
    import pyseccomp

    rules = pyseccomp.SyscallFilter(defaction=pyseccomp.ALLOW)
    # libseccomp sets no_new_privs when it loads a filter; whether the sandbox gets it is the
    # unit's `security.no_new_privileges`, set apart (the loader still holds CAP_SYS_ADMIN).
    rules.set_attr(pyseccomp.Attr.CTL_NNP, 0)
    for name in DENIED:
        try:
            rules.add_rule(pyseccomp.ERRNO(errno.EPERM), name)
        except (ValueError, OSError, RuntimeError):
            continue  # not a syscall on this architecture (vm86 off x86-32, ...)

    def load() -> None:
        rules.load()

    return load
