"""The desired state as the planner compares it: each declared object's canonical form (units/
desired.py says its shape) by kind and name. Made from a Desired, or read back from the unit
cache (units/cache.py) without loading a unit model, so that a no-op `apply` and a repeated
`validate` need no pydantic. NamedTuples, not dataclasses: that import alone costs a cached
validate 10 ms."""

# No `from __future__ import annotations`: typing compiles each string annotation of a
# NamedTuple when the class is made (about 0.1 ms a field, at every start).
from typing import Any, NamedTuple


class Canonical(NamedTuple):
    """One declared object: the unit file it comes from and its canonical form."""

    file: str
    form: dict[str, Any]


class Canonicals(NamedTuple):
    tag: str
    sandboxes: dict[str, Canonical]
    networks: dict[str, Canonical]
    slices: dict[str, Canonical]
    warnings: tuple[str, ...] = ()  # what the loader skipped and the user should hear of

    def of_kind(self, kind: str) -> dict[str, Canonical]:
        return {"sandbox": self.sandboxes, "network": self.networks, "slice": self.slices}[kind]

    def names(self, kind: str) -> set[str]:
        return set(self.of_kind(kind))
