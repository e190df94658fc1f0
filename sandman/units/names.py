"""Names of the kernel objects sandman makes, derived from unit names and the instance.

Every link, cgroup and rule carries the instance's tag, so that observe can tell its own objects
(orphans included) from everyone else's, and two instances with different state dirs never touch
each other's objects. Interface names are cut to the kernel's 15 characters with a hash suffix, so
they stay unique and stable across runs.
"""

from __future__ import annotations

import os

from sandman.hashing import sha256

DEFAULT_STATE_DIR = "/run/sandman"
DEFAULT_TAG = "sm"
IFNAME_MAX = 15
_HASH_CHARS = 4


def instance_tag(state_dir: str) -> str:
    """`sm` for the default state dir, `s` + 3 hex digits for any other (a test run, a second
    instance). Hex digits never spell `m`, so no other instance's tag starts like the default's."""
    path = os.path.normpath(os.path.abspath(state_dir))
    if path == DEFAULT_STATE_DIR:
        return DEFAULT_TAG
    return "s" + sha256(path.encode()).hexdigest()[:3]


def shorten(name: str, limit: int = IFNAME_MAX) -> str:
    if len(name) <= limit:
        return name
    digest = sha256(name.encode()).hexdigest()[:_HASH_CHARS]
    return name[: limit - _HASH_CHARS] + digest


def veth_name(tag: str, sandbox: str) -> str:
    """The host end of a sandbox's veth pair."""
    return shorten(f"{tag}-{sandbox}")


def bridge_name(tag: str, network: str) -> str:
    return shorten(f"{tag}b-{network}")


def cgroup_root(tag: str) -> str:
    """The top cgroup directory of an instance: `sandman` for the default one."""
    return "sandman" if tag == DEFAULT_TAG else f"sandman-{tag}"
