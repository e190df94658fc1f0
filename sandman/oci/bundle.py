"""A bundle's config.json turned into sandman's own spawn spec (kernel/spawn.py SpawnSpec):
namespaces, id maps, the root and its mounts, masked and read-only paths, the process (args, env,
cwd, user, capabilities, no_new_privs, rlimits, seccomp). The engine that writes the bundle is
trusted (it runs as root); the root file system is not, and the kernel layer resolves every path
in it without leaving it."""

import json
import os
import resource
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from sandman.capabilities import CAPABILITIES
from sandman.kernel import security
from sandman.kernel import syscalls as sc
from sandman.kernel.rootfs import Device, Mount, RootfsPlan
from sandman.kernel.spawn import IdMapping
from sandman.oci.errors import OciError
from sandman.oci.seccomp import loader as seccomp_loader

NAMESPACES = {
    "pid": sc.CLONE_NEWPID,
    "network": sc.CLONE_NEWNET,
    "ipc": sc.CLONE_NEWIPC,
    "uts": sc.CLONE_NEWUTS,
    "mount": sc.CLONE_NEWNS,
    "user": sc.CLONE_NEWUSER,
    "cgroup": sc.CLONE_NEWCGROUP,
    "time": sc.CLONE_NEWTIME,
}
# What the kernel layer mounts itself in every root (rootfs.mount_inside): the bundle's mounts
# of these are the same thing and are left to it.
_MADE_BY_ROOTFS = {
    "/proc",
    "/dev",
    "/dev/pts",
    "/dev/shm",
    "/dev/mqueue",
    "/sys",
    "/sys/fs/cgroup",
}
_RLIMITS = {
    name: getattr(resource, name.replace("RLIMIT_", "RLIMIT_"))
    for name in dir(resource)
    if name.startswith("RLIMIT_")
}

Config = Mapping[str, Any]


def load(bundle: str) -> Config:
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, encoding="utf-8") as handle:
            config = json.load(handle)
    except FileNotFoundError:
        raise OciError(f"{path}: no such file or directory: not an OCI bundle") from None
    except (OSError, ValueError) as exc:
        raise OciError(f"{path}: cannot read the bundle's config: {exc}") from None
    if not isinstance(config, dict) or not isinstance(config.get("process"), dict):
        raise OciError(f"{path}: the config has no `process` object")
    return config


class Namespaces(NamedTuple):
    flags: int  # the namespaces to make
    joined: tuple[tuple[int, str], ...]  # (flag, path) of existing ones to join

    @property
    def shares_mounts(self) -> bool:
        """No mount namespace made nor joined: the container lives in the caller's."""
        return not self.flags & sc.CLONE_NEWNS and all(f != sc.CLONE_NEWNS for f, _ in self.joined)


def namespaces(config: Config) -> Namespaces:
    flags, joined = 0, []
    for entry in config.get("linux", {}).get("namespaces") or []:
        kind = entry.get("type")
        if kind not in NAMESPACES:
            raise OciError(f"linux.namespaces: unknown namespace type {kind!r}")
        if entry.get("path"):
            if kind == "user":
                raise OciError(
                    "linux.namespaces: joining an existing user namespace is not supported"
                )
            joined.append((NAMESPACES[kind], str(entry["path"])))
        else:
            flags |= NAMESPACES[kind]
    found = Namespaces(flags, tuple(joined))
    if flags & sc.CLONE_NEWUSER and not flags & sc.CLONE_NEWNS:
        # The root is built in a mount namespace the new user namespace would not own (a joined
        # one, or the caller's): its root could not mount /proc there.
        if not found.shares_mounts:
            raise OciError(
                "linux.namespaces: joining a mount namespace together with a new user namespace "
                "is not supported"
            )
        raise OciError(
            "linux.namespaces: a new user namespace needs a new mount namespace too: add "
            '{"type": "mount"}'
        )
    return found


# A user namespace asked for without mappings maps every id to itself: a namespace of its own,
# whose root is still the host's root for files (what runc gives such a config).
IDENTITY = IdMapping(uid=((0, 0, 2**32 - 1),), gid=((0, 0, 2**32 - 1),))


def id_mapping(config: Config, flags: int) -> IdMapping | None:
    """The id map of the container's user namespace; None without one."""
    linux = config.get("linux", {})
    uids, gids = linux.get("uidMappings") or [], linux.get("gidMappings") or []
    if not flags & sc.CLONE_NEWUSER:
        if uids or gids:
            raise OciError(
                "linux.uidMappings: id mappings need a user namespace in linux.namespaces"
            )
        return None
    if not uids and not gids:
        return IDENTITY

    def ranges(entries: list[dict[str, int]]) -> tuple[tuple[int, int, int], ...]:
        return tuple((int(e["containerID"]), int(e["hostID"]), int(e["size"])) for e in entries)

    return IdMapping(uid=ranges(uids), gid=ranges(gids))


def host_root_ids(idmap: IdMapping | None) -> tuple[int, int]:
    """The host uid and gid the container's root maps to."""
    if idmap is None:
        return (0, 0)

    def outside(ranges: tuple[tuple[int, int, int], ...]) -> int:
        for inside, host, count in ranges:
            if inside <= 0 < inside + count:
                return host - inside
        return 65534

    return (outside(idmap.uid), outside(idmap.gid))


def rootfs_plan(
    config: Config, bundle: str, stage: str, namespaces: Namespaces, owner: tuple[int, int]
) -> RootfsPlan:
    flags = namespaces.flags
    root = config.get("root") or {}
    source = os.path.join(bundle, root.get("path") or "rootfs")
    if not os.path.isdir(source):
        raise OciError(f"root.path: {source}: no such file or directory")
    masked = tuple(config.get("linux", {}).get("maskedPaths") or ())
    read_only = tuple(config.get("linux", {}).get("readonlyPaths") or ())
    return RootfsPlan(
        stage=stage,
        mode="read-only" if root.get("readonly") else "bind",
        source=os.path.realpath(source),
        owner=owner,
        mounts=tuple(_mounts(config, bundle)),
        own_proc=bool(flags & sc.CLONE_NEWPID),
        own_sys=bool(flags & sc.CLONE_NEWNET),
        own_ipc=bool(flags & sc.CLONE_NEWIPC),
        masked=masked,
        read_only_paths=read_only,
        devices=tuple(_devices(config)),
        binds_in_order=not flags & sc.CLONE_NEWUSER,
        own_mounts=not namespaces.shares_mounts,
    )


def _devices(config: Config) -> list[Device]:
    devices = []
    for index, entry in enumerate(config.get("linux", {}).get("devices") or []):
        kind = str(entry.get("type", "c"))
        if kind not in ("c", "u", "b", "p"):
            raise OciError(f"linux.devices[{index}]: unknown device type {kind!r}")
        devices.append(
            Device(
                path="/" + os.path.normpath(str(entry["path"])).lstrip("/"),
                kind=kind,
                major=int(entry.get("major") or 0),
                minor=int(entry.get("minor") or 0),
                mode=int(entry.get("fileMode", 0o666)),
                uid=int(entry.get("uid") or 0),
                gid=int(entry.get("gid") or 0),
            )
        )
    return devices


def _mounts(config: Config, bundle: str) -> list[Mount]:
    mounts = []
    for index, entry in enumerate(config.get("mounts") or []):
        target = "/" + os.path.normpath(str(entry.get("destination", ""))).lstrip("/")
        kind = entry.get("type") or ("bind" if "bind" in (entry.get("options") or []) else "")
        options = list(entry.get("options") or [])
        key = f"mounts[{index}]"
        if target in _MADE_BY_ROOTFS:
            continue
        if kind in ("bind", "none") or "bind" in options or "rbind" in options:
            source = os.path.join(bundle, str(entry.get("source", "")))
            mounts.append(Mount("bind", target, source=source, read_only="ro" in options, key=key))
        elif kind == "tmpfs":
            mounts.append(_tmpfs(target, options, key))
        elif kind == "proc":
            mounts.append(Mount("proc", target, key=key))
        elif kind in ("cgroup", "cgroup2", "sysfs", "devpts", "mqueue"):
            continue  # under /sys or /dev, which the kernel layer makes
        else:
            raise OciError(f"{key}: mount type {kind!r} on {target} is not supported")
    return mounts


def _tmpfs(target: str, options: list[str], key: str) -> Mount:
    size, mode = None, 0o1777
    for option in options:
        name, _, value = option.partition("=")
        if name == "size":
            size = _size(value)
        elif name == "mode":
            mode = int(value, 8)
    return Mount("tmpfs", target, size=size, mode=mode, read_only="ro" in options, key=key)


def _size(text: str) -> int:
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    if text and text[-1].lower() in units:
        return int(text[:-1]) * units[text[-1].lower()]
    return int(text)


def confinement(process: Config, config: Config) -> security.Confinement:
    user = process.get("user") or {}
    caps = process.get("capabilities") or {}
    sets = security.CapabilitySets(
        **{name: _known(caps.get(name) or ()) for name in security.CapabilitySets._fields}
    )
    nnp = bool(process.get("noNewPrivileges"))
    uid = int(user.get("uid", 0))
    before: list[Callable[[], None]] = []
    load = seccomp_loader(config.get("linux", {}).get("seccomp"))
    if load is not None:
        before.append(load)
    before.append(lambda: security.drop_bounding(sets.bounding))
    if uid != 0:
        before.append(security.keep_capabilities)
    env = dict(_env_pair(item) for item in process.get("env") or ())
    env.setdefault("PATH", security.DEFAULT_PATH)
    return security.Confinement(
        uid=uid,
        gid=int(user.get("gid", 0)),
        working_directory=str(process.get("cwd") or "/"),
        environment=env,
        setup_inside=tuple(before),
        finish_inside=(lambda: security.set_exact(sets, nnp),),
        groups=tuple(int(g) for g in user.get("additionalGids") or ()),
    )


def _known(names: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Capabilities this machine's table names; newer ones cannot be kept by a kernel that lacks
    them either (runc warns and drops them the same way)."""
    return tuple(name for name in names if name in CAPABILITIES)


def _env_pair(item: str) -> tuple[str, str]:
    name, _, value = str(item).partition("=")
    return name, value


def rlimits(process: Config) -> tuple[tuple[int, int, int], ...]:
    out = []
    for entry in process.get("rlimits") or []:
        name = str(entry.get("type"))
        if name not in _RLIMITS:
            raise OciError(f"process.rlimits: unknown rlimit {name!r}")
        out.append((_RLIMITS[name], int(entry["soft"]), int(entry["hard"])))
    return tuple(out)


def command(process: Config) -> tuple[str, ...]:
    args = tuple(str(a) for a in process.get("args") or ())
    if not args:
        raise OciError("process.args: empty: the container has no command to run")
    return args
