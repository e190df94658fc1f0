"""Unit limits (a sandbox's [resources], a slice's [slice]) as the cgroup drivers take them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sandman.kernel.cgroup_common import LIMIT_KEYS, CgroupLimits

if TYPE_CHECKING:
    from sandman.units.plain import Limits


def cgroup_limits(limits: Limits) -> CgroupLimits:
    """The model's values are already the kernel's units (bytes, percent, weights, counts)."""
    return CgroupLimits(**{key: getattr(limits, key) for key in LIMIT_KEYS})
