"""What booting an OS in a sandbox (`[sandbox] boot = true`) means, as data both sides read: the
loader and preflight (no kernel), apply and the init's last steps (the kernel side).

As systemd-nspawn -b does: the image's own init is PID 1, /run, /run/lock and /tmp are fresh
tmpfs, the init is told it runs in a container (`container`, `container_uuid`,
/run/host/container-manager) and gets a machine id.
"""

from __future__ import annotations

# Where an image's init is looked for, in order (nspawn's order, less the /sbin/init of
# distributions without systemd, which /sbin/init already covers).
INIT_PATHS = ("/sbin/init", "/lib/systemd/systemd", "/usr/lib/systemd/systemd")

# (target, mode, size) of each tmpfs a booted sandbox gets, in mount order: /run before what
# lies in it. The sizes bound what writes there take of memory (charged to the sandbox's
# cgroup); fixed, where nspawn takes a share of the host's RAM, so that a sandbox gets the same on
# every host. 5M for /run/lock is Debian's. A unit's own mount on one of these targets wins.
TMPFS = (
    ("/run", 0o755, 64 * 1024**2),
    ("/run/lock", 0o1777, 5 * 1024**2),
    ("/tmp", 0o1777, 512 * 1024**2),
)

CONTAINER_MANAGER = "sandman"
CONTAINER_MANAGER_FILE = "/run/host/container-manager"

# The key of the machine ids sandman derives: any fixed 16 bytes, as systemd's app ids are.
_MACHINE_ID_KEY = bytes.fromhex("5d0a8b1c4f3e47a2b6c9e1f07a3d5b28")


def machine_id(name: str, tag: str) -> str:
    """The machine id of sandbox `name` of the instance `tag`: 32 lowercase hex digits, the same
    at every start of that sandbox in that instance, different for any other. Made as systemd
    makes app-specific ids (sd_id128_get_app_specific): HMAC-SHA256, its first 16 bytes marked
    as a random (v4) UUID, which is what /etc/machine-id holds."""
    import hmac  # with hashlib: only for a booted sandbox

    digest = bytearray(hmac.new(_MACHINE_ID_KEY, f"{tag}/{name}".encode(), "sha256").digest())
    digest[6] = (digest[6] & 0x0F) | 0x40
    digest[8] = (digest[8] & 0x3F) | 0x80
    return digest[:16].hex()


def uuid_text(machine: str) -> str:
    """The machine id as `container_uuid` carries it: the UUID form, with dashes."""
    return f"{machine[:8]}-{machine[8:12]}-{machine[12:16]}-{machine[16:20]}-{machine[20:]}"
