"""The one entry point from a unit directory to the desired state."""

from __future__ import annotations

from sandman.errors import UnitError
from sandman.record import replace
from sandman.units.addresses import Sticky
from sandman.units.checks import check_each
from sandman.units.desired import Desired
from sandman.units.image_defaults import ImageConfigs
from sandman.units.load import read_directory
from sandman.units.resolve import resolve
from sandman.units.snapshot import Snapshot


def read_units(
    directory: str,
    tag: str,
    sticky: Sticky | None = None,
    images: ImageConfigs | None = None,
    snapshot: Snapshot | None = None,
) -> Desired:
    """Load, validate, cross-check and resolve (a container image's config giving what a
    sandbox on it leaves out); raises UnitError with every problem found. SNAPSHOT: the
    directory as the unit cache read it (units/snapshot.py)."""
    units = read_directory(directory, snapshot)
    check_each(units)
    desired = resolve(units, tag, sticky, images)
    if units.problems:
        raise UnitError(units.problems)
    return replace(desired, warnings=tuple(units.warnings)) if units.warnings else desired
