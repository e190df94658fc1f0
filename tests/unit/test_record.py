"""sandman/record.py gives the cold paths' value classes what @dataclass gave them: held here to
dataclasses' own behaviour, side by side, for every feature those classes use."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from typing import Any, ClassVar

import pytest

from sandman.record import FrozenInstanceError, field, record, replace


@record(frozen=True)
class Point:
    x: int
    y: int = 0
    tags: tuple[str, ...] = field(default=())
    note: str = field(default="", compare=False, repr=False)
    KIND: ClassVar[str] = "point"


@record
class Bag:
    items: list[int] = field(default_factory=list)
    seen: dict[str, int] = field(default_factory=dict)
    cursor: int = field(default=0, init=False, repr=False)


@record(frozen=True)
class Point3(Point):
    z: int = 0


@dataclasses.dataclass(frozen=True)
class DataPoint:
    x: int
    y: int = 0
    tags: tuple[str, ...] = dataclasses.field(default=())
    note: str = dataclasses.field(default="", compare=False, repr=False)


def test_construction_and_repr_as_a_dataclass() -> None:
    cases: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
        ((1,), {}),
        ((1, 2), {}),
        ((), {"x": 1, "tags": ("a",)}),
    ]
    for args, kwargs in cases:
        ours, theirs = Point(*args, **kwargs), DataPoint(*args, **kwargs)
        assert repr(ours).replace("Point", "") == repr(theirs).replace("DataPoint", "")
        assert (ours.x, ours.y, ours.tags, ours.note) == (theirs.x, theirs.y, theirs.tags, "")
    assert Point.KIND == "point"  # a ClassVar is no field
    with pytest.raises(TypeError):
        Point()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Point(1, z=2)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Point(1, x=1)  # type: ignore[misc]


def test_equality_hash_and_frozen() -> None:
    assert Point(1, 2) == Point(1, 2, note="other")  # compare=False
    assert Point(1, 2) != Point(2, 1)
    assert Point(1) != Point3(1)  # another class is never equal
    assert hash(Point(1, 2)) == hash(Point(1, 2, note="x"))
    with pytest.raises(FrozenInstanceError):
        Point(1).x = 2  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del Point(1).x
    with pytest.raises(TypeError):
        hash(Bag())  # mutable with eq: unhashable, as a dataclass


def test_factories_give_each_instance_its_own() -> None:
    one, two = Bag(), Bag()
    one.items.append(1)
    one.cursor = 5
    assert two.items == [] and two.cursor == 0
    assert repr(one) == "Bag(items=[1], seen={})"


def test_inheritance_and_replace() -> None:
    p = Point3(1, 2, z=3)
    assert (p.x, p.y, p.z) == (1, 2, 3)
    moved = replace(p, x=9)
    assert moved == Point3(9, 2, z=3) and p.x == 1
    bag = Bag([1])
    bag.cursor = 4
    copied = replace(bag, seen={"a": 1})
    assert (copied.items, copied.seen, copied.cursor) == ([1], {"a": 1}, 4)


def test_the_cold_paths_import_no_dataclasses() -> None:
    """What `apply` loads, in a new interpreter: neither dataclasses nor inspect (8 ms)."""
    modules = "sandman.cli, sandman.reconcile, sandman.apply.applier, sandman.units.read"
    code = f"import sys, {modules}; print(sorted({{'dataclasses', 'inspect'}} & set(sys.modules)))"
    found: Any = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert found.strip() == "[]"
