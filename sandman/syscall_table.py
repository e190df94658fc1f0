"""Linux system call names and numbers of the architectures sandman runs on: pure data, shared by
the unit models (which check the names a unit gives) and the kernel side (which needs numbers).

Each line of a table starts with the number of its first name; the names after it take the next
numbers. x86_64 is arch/x86/entry/syscalls/syscall_64.tbl (the 64-bit ABI: no x32 entries),
aarch64 the generic table (include/uapi/asm-generic/unistd.h, scripts/syscall.tbl) as arm64 builds
it. Both run to file_setattr (469, Linux 6.17); tests/unit/test_syscall_table.py holds them to the
installed kernel headers. A call the kernel adds later is unknown here until it is added.
"""

from __future__ import annotations

_X86_64 = """
0 read write open close stat fstat lstat poll lseek mmap mprotect munmap brk
13 rt_sigaction rt_sigprocmask rt_sigreturn ioctl pread64 pwrite64 readv writev access
22 pipe select sched_yield mremap msync mincore madvise shmget shmat shmctl dup dup2
34 pause nanosleep getitimer alarm setitimer getpid sendfile socket connect accept
44 sendto recvfrom sendmsg recvmsg shutdown bind listen getsockname getpeername
53 socketpair setsockopt getsockopt clone fork vfork execve exit wait4 kill uname semget
65 semop semctl shmdt msgget msgsnd msgrcv msgctl fcntl flock fsync fdatasync truncate
77 ftruncate getdents getcwd chdir fchdir rename mkdir rmdir creat link unlink symlink
89 readlink chmod fchmod chown fchown lchown umask gettimeofday getrlimit getrusage
99 sysinfo times ptrace getuid syslog getgid setuid setgid geteuid getegid setpgid
110 getppid getpgrp setsid setreuid setregid getgroups setgroups setresuid getresuid
119 setresgid getresgid getpgid setfsuid setfsgid getsid capget capset rt_sigpending
128 rt_sigtimedwait rt_sigqueueinfo rt_sigsuspend sigaltstack utime mknod uselib
135 personality ustat statfs fstatfs sysfs getpriority setpriority sched_setparam
143 sched_getparam sched_setscheduler sched_getscheduler sched_get_priority_max
147 sched_get_priority_min sched_rr_get_interval mlock munlock mlockall munlockall
153 vhangup modify_ldt pivot_root _sysctl prctl arch_prctl adjtimex setrlimit chroot
162 sync acct settimeofday mount umount2 swapon swapoff reboot sethostname setdomainname
172 iopl ioperm create_module init_module delete_module get_kernel_syms query_module
179 quotactl nfsservctl getpmsg putpmsg afs_syscall tuxcall security gettid readahead
188 setxattr lsetxattr fsetxattr getxattr lgetxattr fgetxattr listxattr llistxattr
196 flistxattr removexattr lremovexattr fremovexattr tkill time futex sched_setaffinity
204 sched_getaffinity set_thread_area io_setup io_destroy io_getevents io_submit
210 io_cancel get_thread_area lookup_dcookie epoll_create epoll_ctl_old epoll_wait_old
216 remap_file_pages getdents64 set_tid_address restart_syscall semtimedop fadvise64
222 timer_create timer_settime timer_gettime timer_getoverrun timer_delete clock_settime
228 clock_gettime clock_getres clock_nanosleep exit_group epoll_wait epoll_ctl tgkill
235 utimes vserver mbind set_mempolicy get_mempolicy mq_open mq_unlink mq_timedsend
243 mq_timedreceive mq_notify mq_getsetattr kexec_load waitid add_key request_key keyctl
251 ioprio_set ioprio_get inotify_init inotify_add_watch inotify_rm_watch migrate_pages
257 openat mkdirat mknodat fchownat futimesat newfstatat unlinkat renameat linkat
266 symlinkat readlinkat fchmodat faccessat pselect6 ppoll unshare set_robust_list
274 get_robust_list splice tee sync_file_range vmsplice move_pages utimensat epoll_pwait
282 signalfd timerfd_create eventfd fallocate timerfd_settime timerfd_gettime accept4
289 signalfd4 eventfd2 epoll_create1 dup3 pipe2 inotify_init1 preadv pwritev
297 rt_tgsigqueueinfo perf_event_open recvmmsg fanotify_init fanotify_mark prlimit64
303 name_to_handle_at open_by_handle_at clock_adjtime syncfs sendmmsg setns getcpu
310 process_vm_readv process_vm_writev kcmp finit_module sched_setattr sched_getattr
316 renameat2 seccomp getrandom memfd_create kexec_file_load bpf execveat userfaultfd
324 membarrier mlock2 copy_file_range preadv2 pwritev2 pkey_mprotect pkey_alloc
331 pkey_free statx io_pgetevents rseq uretprobe uprobe
424 pidfd_send_signal io_uring_setup io_uring_enter io_uring_register open_tree
429 move_mount fsopen fsconfig fsmount fspick pidfd_open clone3 close_range openat2
438 pidfd_getfd faccessat2 process_madvise epoll_pwait2 mount_setattr quotactl_fd
444 landlock_create_ruleset landlock_add_rule landlock_restrict_self memfd_secret
448 process_mrelease futex_waitv set_mempolicy_home_node cachestat fchmodat2
453 map_shadow_stack futex_wake futex_wait futex_requeue statmount listmount
459 lsm_get_self_attr lsm_set_self_attr lsm_list_modules mseal setxattrat getxattrat
465 listxattrat removexattrat open_tree_attr file_getattr file_setattr
"""

_AARCH64 = """
0 io_setup io_destroy io_submit io_cancel io_getevents setxattr lsetxattr fsetxattr
8 getxattr lgetxattr fgetxattr listxattr llistxattr flistxattr removexattr lremovexattr
16 fremovexattr getcwd lookup_dcookie eventfd2 epoll_create1 epoll_ctl epoll_pwait dup
24 dup3 fcntl inotify_init1 inotify_add_watch inotify_rm_watch ioctl ioprio_set
31 ioprio_get flock mknodat mkdirat unlinkat symlinkat linkat renameat umount2 mount
41 pivot_root nfsservctl statfs fstatfs truncate ftruncate fallocate faccessat chdir
50 fchdir chroot fchmod fchmodat fchownat fchown openat close vhangup pipe2 quotactl
61 getdents64 lseek read write readv writev pread64 pwrite64 preadv pwritev sendfile
72 pselect6 ppoll signalfd4 vmsplice splice tee readlinkat newfstatat fstat sync fsync
83 fdatasync sync_file_range timerfd_create timerfd_settime timerfd_gettime utimensat
89 acct capget capset personality exit exit_group waitid set_tid_address unshare futex
99 set_robust_list get_robust_list nanosleep getitimer setitimer kexec_load init_module
106 delete_module timer_create timer_gettime timer_getoverrun timer_settime timer_delete
112 clock_settime clock_gettime clock_getres clock_nanosleep syslog ptrace
118 sched_setparam sched_setscheduler sched_getscheduler sched_getparam
122 sched_setaffinity sched_getaffinity sched_yield sched_get_priority_max
126 sched_get_priority_min sched_rr_get_interval restart_syscall kill tkill tgkill
132 sigaltstack rt_sigsuspend rt_sigaction rt_sigprocmask rt_sigpending rt_sigtimedwait
138 rt_sigqueueinfo rt_sigreturn setpriority getpriority reboot setregid setgid setreuid
146 setuid setresuid getresuid setresgid getresgid setfsuid setfsgid times setpgid
155 getpgid getsid setsid getgroups setgroups uname sethostname setdomainname getrlimit
164 setrlimit getrusage umask prctl getcpu gettimeofday settimeofday adjtimex getpid
173 getppid getuid geteuid getgid getegid gettid sysinfo mq_open mq_unlink mq_timedsend
183 mq_timedreceive mq_notify mq_getsetattr msgget msgctl msgrcv msgsnd semget semctl
192 semtimedop semop shmget shmctl shmat shmdt socket socketpair bind listen accept
203 connect getsockname getpeername sendto recvfrom setsockopt getsockopt shutdown
211 sendmsg recvmsg readahead brk munmap mremap add_key request_key keyctl clone execve
222 mmap fadvise64 swapon swapoff mprotect msync mlock munlock mlockall munlockall
232 mincore madvise remap_file_pages mbind get_mempolicy set_mempolicy migrate_pages
239 move_pages rt_tgsigqueueinfo perf_event_open accept4 recvmmsg
260 wait4 prlimit64 fanotify_init fanotify_mark name_to_handle_at open_by_handle_at
266 clock_adjtime syncfs setns sendmmsg process_vm_readv process_vm_writev kcmp
273 finit_module sched_setattr sched_getattr renameat2 seccomp getrandom memfd_create
280 bpf execveat userfaultfd membarrier mlock2 copy_file_range preadv2 pwritev2
288 pkey_mprotect pkey_alloc pkey_free statx io_pgetevents rseq kexec_file_load
424 pidfd_send_signal io_uring_setup io_uring_enter io_uring_register open_tree
429 move_mount fsopen fsconfig fsmount fspick pidfd_open clone3 close_range openat2
438 pidfd_getfd faccessat2 process_madvise epoll_pwait2 mount_setattr quotactl_fd
444 landlock_create_ruleset landlock_add_rule landlock_restrict_self memfd_secret
448 process_mrelease futex_waitv set_mempolicy_home_node cachestat fchmodat2
453 map_shadow_stack futex_wake futex_wait futex_requeue statmount listmount
459 lsm_get_self_attr lsm_set_self_attr lsm_list_modules mseal setxattrat getxattrat
465 listxattrat removexattrat open_tree_attr file_getattr file_setattr
"""


def _numbers(table: str) -> dict[str, int]:
    numbers: dict[str, int] = {}
    for line in table.strip().splitlines():
        first, *names = line.split()
        numbers.update((name, int(first) + offset) for offset, name in enumerate(names))
    return numbers


NUMBERS: dict[str, dict[str, int]] = {"x86_64": _numbers(_X86_64), "aarch64": _numbers(_AARCH64)}
# The names a unit may give: a call of either architecture (a unit file is not tied to one).
NAMES: frozenset[str] = frozenset(name for table in NUMBERS.values() for name in table)
