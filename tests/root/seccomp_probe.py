"""The C source of `sysprobe`, the static probe of tests/root/test_seccomp.py: built with
`gcc -static` at test time and bind-mounted read-only at /opt/probes.

`sysprobe NAME...` makes each named call in a child of its own (a call that changes the caller,
unshare or personality, changes nothing for the next) and prints one line per call: `NAME: ok`,
`NAME: EPERM` (the errno's name) or `NAME: killed by SIGSYS`. Each call's arguments are picked so
that, let through, it fails harmlessly or does something small and undone at the child's exit.
"""

from __future__ import annotations

SOURCE = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif
#define NETLINK_AUDIT 9
#define UFFD_USER_MODE_ONLY 1

/* A child that exits at once: what a new process in a new namespace does here. */
static long child_exits(long pid) {
    if (pid == 0) _exit(0);
    if (pid > 0) waitpid(pid, NULL, 0);
    return pid;
}

static long call(const char *name) {
    if (!strcmp(name, "clone_newuser"))
        return child_exits(syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0));
    if (!strcmp(name, "clone3")) {
        struct clone_args args = {.exit_signal = SIGCHLD};
        return child_exits(syscall(SYS_clone3, &args, sizeof args));
    }
    if (!strcmp(name, "unshare_newuser")) return syscall(SYS_unshare, CLONE_NEWUSER);
    if (!strcmp(name, "unshare_fs")) return syscall(SYS_unshare, CLONE_FS);
    if (!strcmp(name, "io_uring_setup")) {
        char params[120] = {0}; /* struct io_uring_params */
        return syscall(__NR_io_uring_setup, 1, params);
    }
    if (!strcmp(name, "keyctl")) return syscall(SYS_keyctl, 0 /* GET_KEYRING_ID */, -3, 0);
    if (!strcmp(name, "add_key"))
        return syscall(SYS_add_key, "user", "sandman-probe", "x", 1, -2 /* process keyring */);
    if (!strcmp(name, "request_key"))
        return syscall(SYS_request_key, "user", "sandman-probe-absent", NULL, 0);
    if (!strcmp(name, "bpf")) return syscall(SYS_bpf, 999 /* no such command */, NULL, 0);
    if (!strcmp(name, "perf_event_open"))
        return syscall(SYS_perf_event_open, NULL /* EFAULT */, 0, -1, -1, 0);
    if (!strcmp(name, "userfaultfd"))
        return syscall(SYS_userfaultfd, O_CLOEXEC | UFFD_USER_MODE_ONLY);
    if (!strcmp(name, "swapon")) return syscall(SYS_swapon, "/nonexistent", -1 /* EINVAL */);
    /* Flags no kernel takes: refused before anything is loaded or unloaded. */
    if (!strcmp(name, "kexec_load")) return syscall(SYS_kexec_load, 0, 0, NULL, 0x8000);
    if (!strcmp(name, "kexec_file_load"))
        return syscall(SYS_kexec_file_load, -1, -1, 0, NULL, 0x8000);
    if (!strcmp(name, "personality_no_aslr")) return syscall(SYS_personality, 0x0040000);
    if (!strcmp(name, "personality_linux32")) return syscall(SYS_personality, 0x0008);
    if (!strcmp(name, "socket_vsock")) return socket(AF_VSOCK, SOCK_STREAM, 0);
    if (!strcmp(name, "socket_audit")) return socket(AF_NETLINK, SOCK_RAW, NETLINK_AUDIT);
    if (!strcmp(name, "name_to_handle_at")) {
        struct { unsigned int bytes; int type; unsigned char handle[128]; } fh = {128, 0, {0}};
        int mount_id;
        return syscall(SYS_name_to_handle_at, AT_FDCWD, "/dev", &fh, &mount_id, 0); /* tmpfs */
    }
    if (!strcmp(name, "getpid")) return syscall(SYS_getpid);
#ifdef __x86_64__
    if (!strcmp(name, "x32_getpid")) return syscall(0x40000000 | SYS_getpid);
    if (!strcmp(name, "i386_getpid")) {
        long result;
        __asm__ volatile("int $0x80" : "=a"(result) : "a"(20L /* i386 getpid */) : "memory");
        if (result < 0 && result > -4096) { errno = (int)-result; return -1; }
        return result;
    }
#endif
    fprintf(stderr, "sysprobe: unknown call %s\n", name);
    exit(2);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    for (int i = 1; i < argc; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            long result = call(argv[i]);
            if (result < 0) printf("%s: %s\n", argv[i], strerrorname_np(errno));
            else printf("%s: ok\n", argv[i]);
            _exit(0);
        }
        int status;
        if (waitpid(pid, &status, 0) < 0) return 1;
        if (WIFSIGNALED(status))
            printf("%s: killed by SIG%s\n", argv[i], sigabbrev_np(WTERMSIG(status)) ?: "?");
        else if (WEXITSTATUS(status) != 0) return WEXITSTATUS(status);
    }
    return 0;
}
"""
