"""The desired state: every unit validated, cross-checked and resolved (addresses, names)."""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import IPv4Interface, IPv6Interface
from typing import TYPE_CHECKING, Any

from sandman.record import field, record
from sandman.units.canonicals import Canonical, Canonicals

if TYPE_CHECKING:  # destroy and status use these classes without loading units
    from sandman.units.plain import NetworkUnit, SandboxUnit, SliceUnit


@record(frozen=True)
class DesiredSlice:
    """A slice unit, validated, with its path from the root slice."""

    name: str
    file: str
    unit: SliceUnit
    path: tuple[str, ...]  # from the root slice down to this one

    def canonical(self) -> dict[str, Any]:
        return {
            "slice": self.unit.slice.model_dump(mode="json"),
            "resolved": {"path": "/".join(self.path)},
        }


@record(frozen=True)
class DesiredNetwork:
    """A network unit, validated, with its bridge and gateways resolved."""

    name: str
    file: str
    unit: NetworkUnit
    bridge: str
    gateway: IPv4Interface
    gateway6: IPv6Interface | None

    def canonical(self) -> dict[str, Any]:
        resolved = {
            "bridge": self.bridge,
            "gateway": str(self.gateway),
            "gateway6": None if self.gateway6 is None else str(self.gateway6),
        }
        return {"network": self.unit.network.model_dump(mode="json"), "resolved": resolved}


@record(frozen=True)
class DesiredSandbox:
    """A sandbox unit, validated, with its names, addresses and slice path resolved."""

    name: str
    file: str
    unit: SandboxUnit
    hostname: str
    slice_path: tuple[str, ...]
    veth: str | None = None
    address: IPv4Interface | None = None
    address6: IPv6Interface | None = None
    machine_id: str | None = None  # booted sandboxes only (sandman/booting.py)
    # The [sandbox] keys its container image's config gave (image_defaults.py), for the plan
    # and validate to say; their values are in `unit`, so in the record.
    from_image: tuple[str, ...] = ()

    def canonical(self) -> dict[str, Any]:
        # A machine id only where there is one: records of sandboxes that do not boot, made
        # before booting existed, stay as they were.
        booted: dict[str, Any] = {} if self.machine_id is None else {"machine_id": self.machine_id}
        if self.from_image:  # likewise only where an image's config gave keys
            booted["from_image"] = list(self.from_image)
        resolved = {
            "hostname": self.hostname,
            "slice_path": "/".join(self.slice_path),
            "veth": self.veth,
            "address": None if self.address is None else str(self.address),
            "address6": None if self.address6 is None else str(self.address6),
            **booted,
        }
        return {**self.unit.model_dump(mode="json"), "resolved": resolved}


def sandbox_from_canonical(name: str, file: str, canonical: Mapping[str, Any]) -> DesiredSandbox:
    """The sandbox a record was applied from, its canonical unit read back: what apply brings
    back when the replacement of a running sandbox fails, and what `sandman start` runs."""
    from sandman.units.plain import SandboxUnit

    unit = SandboxUnit.model_validate(_unit_input(canonical))
    resolved = canonical["resolved"]
    address, address6 = resolved.get("address"), resolved.get("address6")
    return DesiredSandbox(
        name=name,
        file=file,
        unit=unit,
        hostname=str(resolved["hostname"]),
        slice_path=tuple(str(resolved["slice_path"]).split("/")),
        veth=resolved.get("veth"),
        address=None if address is None else IPv4Interface(address),
        address6=None if address6 is None else IPv6Interface(address6),
        machine_id=resolved.get("machine_id"),
        from_image=tuple(resolved.get("from_image", ())),
    )


def network_from_canonical(name: str, file: str, canonical: Mapping[str, Any]) -> DesiredNetwork:
    """A recorded network read back (its sandboxes' starts attach to it)."""
    from sandman.units.plain import NetworkUnit

    resolved = canonical["resolved"]
    gateway6 = resolved.get("gateway6")
    return DesiredNetwork(
        name=name,
        file=file,
        unit=NetworkUnit.model_validate(_unit_input(canonical)),
        bridge=str(resolved["bridge"]),
        gateway=IPv4Interface(resolved["gateway"]),
        gateway6=None if gateway6 is None else IPv6Interface(gateway6),
    )


def slice_from_canonical(name: str, file: str, canonical: Mapping[str, Any]) -> DesiredSlice:
    """A recorded slice read back."""
    from sandman.units.plain import SliceUnit

    path = tuple(str(canonical["resolved"]["path"]).split("/"))
    return DesiredSlice(name, file, SliceUnit.model_validate(_unit_input(canonical)), path)


def _unit_input(canonical: Mapping[str, Any]) -> dict[str, Any]:
    """A canonical unit as its file would say it. JSON's nulls are keys the file left out (TOML
    has no null), but for a sandbox's `pids_max`, whose default is a limit: null there is what
    `pids_max = "max"` dumps to, and left out it would come back as 4096."""
    data: dict[str, Any] = _without_nulls({**canonical, "resolved": None})
    resources = canonical.get("resources")
    if isinstance(resources, Mapping) and "pids_max" in resources and resources["pids_max"] is None:
        data["resources"]["pids_max"] = "max"
    return data


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


@record(frozen=True)
class Desired:
    """What the unit directory declares, ready for the planner."""

    tag: str
    sandboxes: dict[str, DesiredSandbox] = field(default_factory=dict)
    networks: dict[str, DesiredNetwork] = field(default_factory=dict)
    slices: dict[str, DesiredSlice] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()  # what the loader skipped and the user should hear of

    def names(self, kind: str) -> set[str]:
        if kind == "sandbox":
            return set(self.sandboxes)
        return set(self.networks) if kind == "network" else set(self.slices)

    def canonicals(self) -> Canonicals:
        """What the planner compares of this state (and what the unit cache keeps)."""
        return Canonicals(
            self.tag,
            sandboxes=_canonical_of(self.sandboxes),
            networks=_canonical_of(self.networks),
            slices=_canonical_of(self.slices),
            warnings=self.warnings,
        )


def _canonical_of(
    objects: Mapping[str, DesiredSandbox]
    | Mapping[str, DesiredNetwork]
    | Mapping[str, DesiredSlice],
) -> dict[str, Canonical]:
    return {name: Canonical(item.file, item.canonical()) for name, item in objects.items()}
