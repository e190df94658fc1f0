"""The sandbox's file system view: its root, its declared mounts, /proc, /sys, /dev, pivot_root.

Two phases, run in the two processes of the spawn path:
- `mount_host_side` (first child, still the host's root user, in a private mount namespace): the
  root itself and the declared bind and overlay mounts, which read host paths with the host's
  rights. Made before the user namespace exists, they end up locked in the sandbox: its root user
  can neither unmount them nor make a read-only one writable. (A sandbox without a user namespace
  gains nothing from that lock: an OCI config's binds are then made inside, in its order.)
- `mount_inside` then `enter_root` (the init-to-be, in every new namespace): /proc, /sys, /dev,
  tmpfs and proc mounts, masks, then pivot_root, so nothing of the host stays reachable.

Every mount target is resolved inside the new root with openat2(RESOLVE_IN_ROOT) and mounted on
the resulting fd, so a symlink in an image never leads a mount onto the host.
"""

import contextlib
import os
import stat
from collections.abc import Iterator
from typing import NamedTuple

from sandman.kernel import syscalls as sc

_PATH_FLAGS = os.O_PATH | os.O_CLOEXEC
_IN_ROOT = sc.RESOLVE_IN_ROOT | sc.RESOLVE_NO_MAGICLINKS
_DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
_PROC_MASKED = ("kcore", "keys", "timer_list", "sched_debug", "sysrq-trigger", "latency_stats")
_PROC_READ_ONLY = ("sys", "irq", "bus", "fs")
_PROC_HIDDEN = ("acpi", "scsi")  # directories covered by an empty read-only tmpfs
_DEV_LINKS = {
    "fd": "/proc/self/fd",
    "stdin": "/proc/self/fd/0",
    "stdout": "/proc/self/fd/1",
    "stderr": "/proc/self/fd/2",
    "ptmx": "pts/ptmx",
}


class Mount(NamedTuple):
    """One declared mount, as the unit says it (paths absolute, target inside the sandbox)."""

    type: str
    target: str
    source: str | None = None
    read_only: bool = False
    size: int | None = None
    mode: int = 0o755
    lower: tuple[str, ...] = ()
    upper: str | None = None
    work: str | None = None
    key: str = ""  # the unit key, e.g. "mount[1]", for errors


class Device(NamedTuple):
    """A device node made in the sandbox (an OCI config's linux.devices): `kind` c, b or p."""

    path: str
    kind: str
    major: int = 0
    minor: int = 0
    mode: int = 0o666
    uid: int = 0
    gid: int = 0


# The device rules of what _mount_dev gives a sandbox's /dev (null, zero, full, random, urandom,
# tty, ptmx) and the ptys of its own devpts: what a cgroup's device filter lets it use.
DEV_RULES = (
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:0 rwm",
    "c 5:2 rwm",
    "c 136:* rwm",
)


class RootfsPlan(NamedTuple):
    """Where the sandbox's root is staged and what is mounted into it."""

    stage: str  # an empty host directory the root is mounted on, in the sandbox's namespace only
    mode: str  # "overlay" | "bind" | "read-only"
    source: str  # the image directory or the unit's rootfs.path
    upper: str | None = None
    work: str | None = None
    lower: str | None = None  # where an idmapped view of the image is attached, for overlay
    owner: tuple[int, int] = (0, 0)  # host uid and gid of the sandbox's root, for made targets
    mounts: tuple[Mount, ...] = ()
    own_proc: bool = True  # a pid namespace of its own: a fresh proc instance
    own_sys: bool = True  # a net namespace of its own: a fresh sysfs instance
    own_ipc: bool = True  # an ipc namespace of its own: a fresh mqueue instance
    # cgroup2 at /sys/fs/cgroup, rooted at the sandbox's own cgroup by its cgroup namespace:
    # "ro" (its limits and usage to read, as docker and podman show them), "rw" (a delegated
    # tree, for a booted systemd), None (cgroup v1, or the host's cgroup namespace: nothing).
    cgroup2: str | None = None
    # cgroup v1 and hybrid hosts, a booted init: a tmpfs at /sys/fs/cgroup holding these named
    # hierarchies ("systemd": name=systemd, "unified": cgroup2), each rooted at the sandbox's
    # cgroup by its cgroup namespace and writable (delegated), as nspawn's legacy and hybrid modes.
    cgroup_named: tuple[str, ...] = ()
    shm_size: int | None = 64 * 1024**2  # /dev/shm's size in bytes; None: tmpfs's half of RAM
    # Paths inside the root hidden (a file under /dev/null, a directory under an empty read-only
    # tmpfs) or made read-only after every mount, when they exist (the OCI maskedPaths and
    # readonlyPaths); a missing one is skipped, as runc does.
    masked: tuple[str, ...] = ()
    read_only_paths: tuple[str, ...] = ()
    devices: tuple[Device, ...] = ()  # made after /dev, each path resolved inside the root
    # Bind mounts made inside, among the tmpfs and proc mounts in `mounts`' order (an OCI
    # config's order, which its runtimes keep), rather than first on the host side. Only for a
    # sandbox without a user namespace: there its root could unmount any mount anyway, so the
    # lock that making them on the host side gives is worth nothing.
    binds_in_order: bool = False
    # A mount namespace of the sandbox's own. False only for an OCI config that lists none: the
    # root is then built in the caller's namespace, on `stage`, and entered by chroot (runc's
    # way); the caller's propagation is left as it is, and the runtime's delete unmounts it.
    own_mounts: bool = True


class _Owner(NamedTuple):
    """Who a target made in the root belongs to: `ids`, the host uid and gid of the sandbox's
    root. When the root itself is the idmapped image (`idmapped`: bind and read-only modes with
    a user namespace), a file made there by the host's root would have to be written with an
    on-disk owner that the mount's id map cannot express (EOVERFLOW): it is then made with the
    sandbox's root as file-system ids, which the map turns into the image's own root."""

    ids: tuple[int, int]
    idmapped: bool = False


class MountError(OSError):
    """A mount step failed; `key` names the unit key it serves."""

    def __init__(self, key: str, step: str, cause: OSError) -> None:
        super().__init__(cause.errno, f"{step}: {cause.strerror}", cause.filename)
        self.key = key
        self.step = step


@contextlib.contextmanager
def _step(key: str, step: str) -> Iterator[None]:
    try:
        yield
    except MountError:
        raise
    except OSError as exc:
        raise MountError(key, step, exc) from exc


def mount_host_side(plan: RootfsPlan, userns: int | None) -> None:
    """Run as the host's root in a fresh, private mount namespace. With a user namespace, the
    image is seen through an idmapped mount: files the host's root owns appear owned by the
    sandbox's root, which can then use its image like any root its own."""
    with _step("rootfs", f"mounting the root file system from `{plan.source}`"):
        if plan.own_mounts:
            sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
        _mount_root(plan, userns)
    # Targets are made now, with the host's rights: inside, the sandbox's root may not own the
    # image's directories (they belong to ids its user namespace does not map).
    owner = _Owner(plan.owner, idmapped=userns is not None and plan.mode != "overlay")
    for directory in ("/proc", "/sys", "/dev"):
        making = _step("rootfs", f"making `{directory}` in the root")
        with making, _target(plan.stage, directory, owner=owner):
            pass
    for mount in plan.mounts:
        step = f"mounting {mount.type} on `{mount.target}`"
        if mount.type == "bind" and plan.binds_in_order:
            continue  # mount_inside makes it, and its target
        if mount.type in ("bind", "overlay"):
            with _step(mount.key, step):
                _mount_from_host(plan.stage, mount, owner)
        else:
            with _step(mount.key, step), _target(plan.stage, mount.target, owner=owner):
                pass


def _mount_root(plan: RootfsPlan, userns: int | None) -> None:
    if plan.mode == "overlay":
        assert plan.upper and plan.work and plan.lower
        lower = plan.source
        if userns is not None:
            _attach(plan.source, plan.lower, userns=userns)
            lower = plan.lower
        data = _overlay_options((lower,), plan.upper, plan.work)
        sc.mount("overlay", plan.stage, "overlay", 0, data)
    else:
        _attach(plan.source, plan.stage, userns=userns, read_only=plan.mode == "read-only")


def _attach(source: str, target: str, userns: int | None, read_only: bool = False) -> None:
    target_fd = os.open(target, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _bind(source, target_fd, read_only, userns)
    finally:
        os.close(target_fd)


def _overlay_options(lower: tuple[str, ...], upper: str | None, work: str | None) -> str:
    for path in (*lower, upper or "", work or ""):
        if any(c in path for c in ",:\\"):
            raise OSError(22, "overlay paths cannot hold ',', ':' or '\\'", path)
    options = f"lowerdir={':'.join(lower)}"
    if upper and work:
        options += f",upperdir={upper},workdir={work}"
    return options


def _mount_from_host(stage: str, mount: Mount, owner: _Owner) -> None:
    if mount.type == "bind":
        assert mount.source is not None
        is_dir = os.path.isdir(mount.source)
        if not os.path.exists(mount.source):
            raise FileNotFoundError(2, "the source does not exist", mount.source)
        with _target(stage, mount.target, directory=is_dir, owner=owner) as fd:
            _bind(mount.source, fd, mount.read_only)
        return
    data = _overlay_options(mount.lower, mount.upper, mount.work)
    flags = sc.MS_RDONLY if mount.read_only or not mount.upper else 0
    with _target(stage, mount.target, directory=True, owner=owner) as fd:
        sc.mount("overlay", f"/proc/self/fd/{fd}", "overlay", flags, data)


def _bind(source: str, target_fd: int, read_only: bool, userns: int | None = None) -> None:
    """Bind `source` with everything below it onto the fd, its attributes (read-only, id
    mapping) set while the copy is still detached, so the target is never seen without them."""
    tree = sc.open_tree(sc.AT_FDCWD, source, sc.OPEN_TREE_CLONE | sc.AT_RECURSIVE)
    try:
        attributes = (sc.MOUNT_ATTR_RDONLY if read_only else 0) | (
            sc.MOUNT_ATTR_IDMAP if userns is not None else 0
        )
        if attributes:
            sc.mount_setattr(
                tree, "", sc.AT_EMPTY_PATH | sc.AT_RECURSIVE, attributes, userns_fd=userns or 0
            )
        flags = sc.MOVE_MOUNT_F_EMPTY_PATH | sc.MOVE_MOUNT_T_EMPTY_PATH
        sc.move_mount(tree, "", target_fd, "", flags)
    finally:
        os.close(tree)


@contextlib.contextmanager
def _target(
    root: str, path: str, directory: bool = True, owner: _Owner | None = None
) -> Iterator[int]:
    """An O_PATH fd of `path` resolved inside `root`, made (as a directory or an empty file) when
    missing. Symlinks are followed as if `root` were `/`, so they cannot lead out of it."""
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        parts = [p for p in path.split("/") if p]
        for depth in range(1, len(parts) + 1):
            last = depth == len(parts)
            _ensure(root_fd, "/".join(parts[:depth]), directory or not last, owner)
        fd = sc.openat2(root_fd, "/".join(parts) or ".", _PATH_FLAGS, 0, _IN_ROOT)
    finally:
        os.close(root_fd)
    try:
        yield fd
    finally:
        os.close(fd)


def _ensure(root_fd: int, relative: str, directory: bool, owner: _Owner | None) -> None:
    try:
        os.close(sc.openat2(root_fd, relative, _PATH_FLAGS, 0, _IN_ROOT))
        return
    except FileNotFoundError:
        pass
    parent, _, name = relative.rpartition("/")
    parent_fd = sc.openat2(root_fd, parent or ".", _PATH_FLAGS | os.O_DIRECTORY, 0, _IN_ROOT)
    try:
        if owner is not None and owner.idmapped:
            with _fs_ids(owner.ids):
                _make(parent_fd, name, directory)
            return
        _make(parent_fd, name, directory)
        if owner is not None:
            # Made by the host's root, but it is the sandbox's own, as if it had made it itself.
            os.chown(name, *owner.ids, dir_fd=parent_fd, follow_symlinks=False)
    finally:
        os.close(parent_fd)


def _make(parent_fd: int, name: str, directory: bool) -> None:
    """NAME in the directory PARENT_FD (an O_PATH fd resolved inside the root): the name is a
    single component and O_NOFOLLOW keeps a symlink raced into its place from being followed."""
    if directory:
        os.mkdir(name, 0o755, dir_fd=parent_fd)
    else:
        flags = os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW
        os.close(os.open(name, flags, 0o644, dir_fd=parent_fd))


@contextlib.contextmanager
def _fs_ids(ids: tuple[int, int]) -> Iterator[None]:
    """Create files as the host ids IDS. Changing the fsuid away from 0 drops the file-system
    capabilities from the effective set (setfsuid(2)); they are raised again so that a directory
    of the image owned by another id still takes the new entry, as it would for root."""
    effective = sc.capget().effective
    old_uid, old_gid = os.geteuid(), os.getegid()  # the fs ids follow the effective ones
    try:
        sc.setfsgid(ids[1])
        sc.setfsuid(ids[0])
        caps = sc.capget()
        sc.capset(effective, caps.permitted, caps.inheritable)
        yield
    finally:
        sc.setfsuid(old_uid)
        sc.setfsgid(old_gid)
        caps = sc.capget()
        sc.capset(effective, caps.permitted, caps.inheritable)


def open_stage(plan: RootfsPlan) -> int:
    """An fd of the mounted root, taken on the host side: inside, the sandbox's root may not be
    allowed to walk the host path that leads to it (the state dir is the host root's alone)."""
    return os.open(plan.stage, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)


def mount_inside(plan: RootfsPlan, stage_fd: int) -> None:
    """Run as the init-to-be, inside every new namespace: the root becomes the working directory
    and every path below is relative to it."""
    with _step("rootfs", "attaching the root in the sandbox's mount namespace"):
        _attach_stage(plan, stage_fd)
    with _step("namespaces.pid", "mounting /proc"):
        _mount_proc(plan)
    # /dev before /sys: the order of the OCI runtimes' default mounts, which an OCI runtime's
    # validation checks in /proc/self/mountinfo.
    with _step("rootfs", "building /dev"):
        _mount_dev(plan)
    with _step("namespaces.net", "mounting /sys"):
        _mount_sys(plan)
    for mount in plan.mounts:
        if mount.type in ("tmpfs", "proc"):
            with _step(mount.key, f"mounting {mount.type} on `{mount.target}`"):
                _mount_virtual(".", mount)
        elif mount.type == "bind" and plan.binds_in_order:
            with _step(mount.key, f"mounting bind on `{mount.target}`"):
                _mount_from_host(".", mount, _Owner(plan.owner))
    for path in plan.read_only_paths:
        with _step("readonlyPaths", f"making `{path}` read-only"):
            _restrict(path, mask=False)
    for path in plan.masked:
        with _step("maskedPaths", f"masking `{path}`"):
            _restrict(path, mask=True)


def _restrict(path: str, mask: bool) -> None:
    """Mask or make read-only `path`, resolved inside the root (the working directory) without
    leaving it; a path that does not exist is left alone."""
    root_fd = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = sc.openat2(root_fd, path.lstrip("/") or ".", _PATH_FLAGS, 0, _IN_ROOT)
    except FileNotFoundError:
        return
    finally:
        os.close(root_fd)
    try:
        is_dir = os.path.isdir(f"/proc/self/fd/{fd}")
        if not mask:
            _bind(f"/proc/self/fd/{fd}", fd, read_only=True)
        elif is_dir:
            _empty_read_only(fd)
        else:
            _bind("/dev/null", fd, read_only=True)
    finally:
        os.close(fd)


def _mount_proc(plan: RootfsPlan) -> None:
    with _target(".", "/proc") as fd:
        target = f"/proc/self/fd/{fd}"
        if plan.own_proc:
            sc.mount("proc", target, "proc", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
        else:
            _bind("/proc", fd, read_only=False)
    proc = "proc"
    for name in _PROC_MASKED:
        if os.path.isfile(os.path.join(proc, name)):
            with _target(proc, name, directory=False) as fd:
                _bind("/dev/null", fd, read_only=True)
    for name in _PROC_READ_ONLY:
        if os.path.isdir(os.path.join(proc, name)):
            with _target(proc, name) as fd:
                _bind(os.path.join(proc, name), fd, read_only=True)
    for name in _PROC_HIDDEN:
        if os.path.isdir(os.path.join(proc, name)):
            with _target(proc, name) as fd:
                _empty_read_only(fd)


def _empty_read_only(fd: int) -> None:
    flags = sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC
    sc.mount("tmpfs", f"/proc/self/fd/{fd}", "tmpfs", flags, "size=0,mode=555")


def _mount_sys(plan: RootfsPlan) -> None:
    with _target(".", "/sys") as fd:
        if plan.own_sys:
            flags = sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC
            sc.mount("sysfs", f"/proc/self/fd/{fd}", "sysfs", flags)
        else:
            _bind("/sys", fd, read_only=True)
    if plan.cgroup2 is not None:
        # Mounted from inside the sandbox's cgroup and user namespaces: the kernel roots the
        # view at the cgroup the namespace was made in, the sandbox's, never the host's root.
        # MS_RDONLY makes this mount read-only, not the hierarchy (as runc mounts it).
        flags = sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC
        if not plan.own_sys:
            # The host's /sys came in with its cgroup2 mount, and the kernel refuses (EBUSY) a
            # file system mounted on the root of a mount of the same one: a small tmpfs between.
            with _target(".", "/sys/fs/cgroup") as fd:
                sc.mount("tmpfs", f"/proc/self/fd/{fd}", "tmpfs", flags, "size=4k,nr_inodes=4")
        flags |= sc.MS_RDONLY if plan.cgroup2 == "ro" else 0
        with _target(".", "/sys/fs/cgroup") as fd:
            sc.mount("cgroup2", f"/proc/self/fd/{fd}", "cgroup2", flags)
    if plan.cgroup_named:
        _mount_named_cgroups(plan.cgroup_named)
    if os.path.isdir("sys/firmware"):
        # Firmware tables (ACPI, DMI, EFI variables) say much about the host and nothing the
        # sandbox needs.
        with _target(".", "/sys/firmware") as fd:
            _empty_read_only(fd)


# name=systemd is a v1 hierarchy without controllers; mounting it again (in the cgroup namespace)
# shows the same hierarchy, rooted where the namespace was made.
_NAMED_MOUNTS = {"systemd": ("cgroup", "none,name=systemd"), "unified": ("cgroup2", "")}


def _mount_named_cgroups(names: tuple[str, ...]) -> None:
    """A tmpfs at /sys/fs/cgroup with the named hierarchies in it, then the tmpfs read-only: how
    systemd recognises a legacy (systemd/ is cgroup) or hybrid (unified/ is cgroup2) host. Done
    inside the sandbox's user and cgroup namespaces: the kernel roots each at the sandbox's own
    cgroup, never the host's root, and lets it mount no hierarchy the host does not have."""
    flags = sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC
    with _target(".", "/sys/fs/cgroup") as fd:
        where = f"/proc/self/fd/{fd}"
        sc.mount("tmpfs", where, "tmpfs", flags, "mode=755,size=4k,nr_inodes=16")
    with _target(".", "/sys/fs/cgroup") as fd:
        for name in names:
            os.mkdir(name, 0o755, dir_fd=fd)
    for name in names:
        fstype, options = _NAMED_MOUNTS[name]
        with _target(".", f"/sys/fs/cgroup/{name}") as fd:
            sc.mount("cgroup", f"/proc/self/fd/{fd}", fstype, flags, options or None)
    with _target(".", "/sys/fs/cgroup") as fd:
        sc.mount("", f"/proc/self/fd/{fd}", "", sc.MS_REMOUNT | sc.MS_RDONLY | flags)


def _mount_dev(plan: RootfsPlan) -> None:
    dev = "dev"
    with _target(".", "/dev") as fd:
        sc.mount(
            "tmpfs",
            f"/proc/self/fd/{fd}",
            "tmpfs",
            sc.MS_NOSUID | sc.MS_NOEXEC,
            "mode=755,size=65536k",
        )
    for name in _DEVICES:
        with _target(dev, name, directory=False) as fd:
            _bind(f"/dev/{name}", fd, read_only=False)
    with _target(dev, "pts") as fd:
        sc.mount(
            "devpts",
            f"/proc/self/fd/{fd}",
            "devpts",
            sc.MS_NOSUID | sc.MS_NOEXEC,
            "newinstance,ptmxmode=0666,mode=0620",
        )
    with _target(dev, "shm") as fd:
        size = f",size={plan.shm_size}" if plan.shm_size else ""
        options = f"mode=1777{size}"
        # Named "shm", as every container runtime names it (and tools look for).
        sc.mount("shm", f"/proc/self/fd/{fd}", "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, options)
    if plan.own_ipc:
        with _target(dev, "mqueue") as fd:
            sc.mount(
                "mqueue", f"/proc/self/fd/{fd}", "mqueue", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC
            )
    for name, points_to in _DEV_LINKS.items():
        os.symlink(points_to, os.path.join(dev, name))
    for device in plan.devices:
        with _step("linux.devices", f"making the device `{device.path}`"):
            _make_device(device)


_DEVICE_KINDS = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}


def _make_device(device: Device) -> None:
    """mknod in the root (the working directory), its parent resolved inside it; a node already
    there (one of the defaults) is replaced only when it is not a directory."""
    parent, _, name = device.path.strip("/").rpartition("/")
    if not name or name in (".", ".."):
        raise OSError(22, "not a device path", device.path)
    with _target(".", "/" + parent) as parent_fd:
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            os.unlink(name, dir_fd=parent_fd)
        mode = _DEVICE_KINDS[device.kind] | (device.mode & 0o7777)
        os.mknod(name, mode, os.makedev(device.major, device.minor), dir_fd=parent_fd)
        os.chown(name, device.uid, device.gid, dir_fd=parent_fd, follow_symlinks=False)
        # The mode exactly, whatever the umask: the node was just made, no symlink is there.
        os.chmod(name, device.mode & 0o7777, dir_fd=parent_fd)


def _mount_virtual(stage: str, mount: Mount) -> None:
    with _target(stage, mount.target) as fd:
        target = f"/proc/self/fd/{fd}"
        flags = sc.MS_NOSUID | sc.MS_NODEV
        if mount.type == "proc":
            sc.mount("proc", target, "proc", flags | sc.MS_NOEXEC)
            return
        options = f"mode={mount.mode:o}" + (f",size={mount.size}" if mount.size else "")
        sc.mount(
            "tmpfs", target, "tmpfs", flags | (sc.MS_RDONLY if mount.read_only else 0), options
        )


def _attach_stage(plan: RootfsPlan, stage_fd: int) -> None:
    if not plan.own_mounts:
        os.fchdir(stage_fd)  # the caller's namespace: nothing is locked, nothing to copy
        return
    # Mounts made before the user namespace are locked in it, and pivot_root refuses a locked
    # new root: a copy attached here is the sandbox's own (what lies below stays locked).
    tree = sc.open_tree(stage_fd, "", sc.OPEN_TREE_CLONE | sc.AT_RECURSIVE | sc.AT_EMPTY_PATH)
    try:
        flags = sc.MOVE_MOUNT_F_EMPTY_PATH | sc.MOVE_MOUNT_T_EMPTY_PATH
        sc.move_mount(tree, "", stage_fd, "", flags)
        os.fchdir(tree)
    finally:
        os.close(tree)


def enter_root(plan: RootfsPlan) -> None:
    """pivot_root into the working directory (the root, see mount_inside) and let go of the old
    root, so no host path stays reachable. In the caller's mount namespace (`own_mounts` off)
    chroot instead: a pivot_root there would move the root of every process of the host."""
    if not plan.own_mounts:
        with _step("rootfs", "chroot into the root file system"):
            os.chroot(".")
            os.chdir("/")
        return
    with _step("rootfs", "pivot_root into the root file system"):
        # pivot_root(".", ".") stacks the old root under the new one; detaching it leaves only
        # the sandbox's tree, with no directory needed for the old root.
        sc.pivot_root(".", ".")
        sc.umount2(".", sc.MNT_DETACH)
        os.chdir("/")
