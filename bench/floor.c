/* The physical floor of sandman's spawn path, and a fork/exec/wait timer for its peers.
 *
 *   floor spawn ROOTFS COUNT   COUNT sandboxes, one after the other, each: clone3 with the
 *       namespaces sandman's default sandbox has (user, mount, pid, uts, ipc, net, cgroup), uid
 *       and gid maps written by the parent (0 -> 1000000000, 65536 ids), then in the child: the
 *       mount tree made private, ROOTFS bound onto itself, /proc mounted in it, pivot_root into
 *       it, the old root detached, exec of /bin/true; the parent waits for its exit.
 *   floor exec COUNT ARGV...   COUNT times fork, execvp ARGV, wait (a peer such as unshare(1)
 *       or bwrap, timed by the same loop).
 *
 * It prints one line per run: the wall time from before the clone (or fork) to the end of the
 * wait, in ms (CLOCK_MONOTONIC). A failing run prints the reason on stderr and exits 1.
 * Built by bench/run or spawn_path.py (gcc -O2); nothing here is sandman's code.
 */
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
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define ID_BASE "1000000000"
#define ID_COUNT "65536"

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void die(const char *what) {
    fprintf(stderr, "floor: %s: %s\n", what, strerror(errno));
    _exit(1);
}

static void write_file(const char *path, const char *text) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) die(path);
    if (write(fd, text, strlen(text)) != (ssize_t)strlen(text)) die(path);
    close(fd);
}

/* The child: wait for the maps, make the root, pivot into it, exec. */
static void child(const char *rootfs, int go) {
    char byte;
    if (read(go, &byte, 1) != 1) die("waiting for the id maps");
    close(go);
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) die("mount / private");
    if (mount(rootfs, rootfs, NULL, MS_BIND | MS_REC, NULL) != 0) die("bind the rootfs");
    if (chdir(rootfs) != 0) die("chdir rootfs");
    if (mount("proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0)
        die("mount /proc");
    if (syscall(SYS_pivot_root, ".", ".") != 0) die("pivot_root");
    if (umount2(".", MNT_DETACH) != 0) die("detach the old root");
    if (chdir("/") != 0) die("chdir /");
    char *argv[] = {"/bin/true", NULL};
    char *envp[] = {"PATH=/bin:/sbin:/usr/bin:/usr/sbin", NULL};
    execve(argv[0], argv, envp);
    die("execve /bin/true");
}

static int wait_for(pid_t pid) {
    int status;
    if (waitpid(pid, &status, 0) < 0) die("waitpid");
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static int spawn_one(const char *rootfs) {
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0) die("pipe2");
    struct clone_args args;
    memset(&args, 0, sizeof args);
    args.flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC |
                 CLONE_NEWNET | CLONE_NEWCGROUP;
    args.exit_signal = SIGCHLD;
    long pid = syscall(SYS_clone3, &args, sizeof args);
    if (pid < 0) die("clone3");
    if (pid == 0) {
        close(pipefd[1]);
        child(rootfs, pipefd[0]);
    }
    close(pipefd[0]);
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/uid_map", pid);
    write_file(path, "0 " ID_BASE " " ID_COUNT "\n");
    snprintf(path, sizeof path, "/proc/%ld/gid_map", pid);
    write_file(path, "0 " ID_BASE " " ID_COUNT "\n");
    if (write(pipefd[1], "1", 1) != 1) die("releasing the child");
    close(pipefd[1]);
    return wait_for((pid_t)pid);
}

static int exec_one(char **argv) {
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
        execvp(argv[0], argv);
        die(argv[0]);
    }
    return wait_for(pid);
}

int main(int argc, char **argv) {
    int spawn = argc >= 4 && strcmp(argv[1], "spawn") == 0;
    if (!spawn && !(argc >= 4 && strcmp(argv[1], "exec") == 0)) {
        fprintf(stderr, "usage: floor spawn ROOTFS COUNT | floor exec COUNT ARGV...\n");
        return 2;
    }
    int count = atoi(argv[spawn ? 3 : 2]);
    for (int i = 0; i < count; i++) {
        double start = now_ms();
        int status = spawn ? spawn_one(argv[2]) : exec_one(argv + 3);
        double elapsed = now_ms() - start;
        if (status != 0) {
            fprintf(stderr, "floor: %s exited with %d\n", spawn ? "the sandbox" : argv[3], status);
            return 1;
        }
        printf("%.4f\n", elapsed);
    }
    return 0;
}
