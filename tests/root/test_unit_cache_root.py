"""The unit cache against the real host: a no-op apply answered from it loads no unit,
an edit that keeps the file's size and mtime still reaches the sandbox, and an entry another
user planted is never trusted, even one that would hide an edit (units/cache.py)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import test_sandboxes as base
from test_sandboxes import Sandman, sm, unit

pytestmark = pytest.mark.root

busybox_image = base.busybox_image
__all__ = ["busybox_image", "sm"]  # the fixtures, used by name
NOBODY = 65534


def _apply_imports(sm: Sandman, *verb: str) -> tuple[str, set[str]]:
    """`sandman apply` (or VERB) under `python -X importtime`: its output, "loaded" if it loaded
    the unit files (the loader's module is imported only then: units read, validated and
    resolved), and "pydantic" if it imported pydantic (the validators' schemas were not kept)."""
    argv = sm.argv(*(verb or ("apply", str(sm.units))))
    done = subprocess.run(
        [argv[0], "-X", "importtime", *argv[1:]],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=base.RUN_LIMIT,
        check=True,
    )
    sm.note_records()
    marks = {"loaded": " sandman.units.load\n", "pydantic": " pydantic\n"}
    return done.stdout, {mark for mark, line in marks.items() if line in done.stderr}


def _entry(sm: Sandman) -> Path:
    """The unit cache's entry (beside it: the kept validators, units/compiled.py)."""
    (entry,) = (sm.state_dir / "cache").glob("units-*.cache")
    return entry


def _edit_keeping_times(path: Path, old: str, new: str) -> None:
    before = path.stat()
    path.write_text(path.read_text().replace(old, new))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size


def _cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


def test_a_no_op_apply_from_the_cache_and_an_edit_it_cannot_hide(sm: Sandman) -> None:
    sm.write("cached", unit(command=["sleep", "1001"]))
    sm.apply()
    out, imported = _apply_imports(sm)
    assert "No changes" in out and imported == set(), "a no-op apply loaded the units"
    assert _cmdline(sm.running_init("cached"))[-2:] == ["sleep", "1001"]

    _edit_keeping_times(sm.units / "cached.sandbox.toml", '"1001"', '"1002"')
    out, imported = _apply_imports(sm)
    # loaded, by the validators the first apply kept: no pydantic (units/compiled.py)
    assert "No changes" not in out and imported == {"loaded"}, out
    assert _cmdline(sm.running_init("cached"))[-2:] == ["sleep", "1002"]  # from outside
    inside = sm.exec("cached", "cat", "/proc/1/cmdline").out  # and as the sandbox sees it
    assert inside.split("\0")[:-1][-2:] == ["sleep", "1002"]


def test_an_entry_another_user_planted_is_not_trusted(sm: Sandman) -> None:
    sm.write("planted", unit(command=["sleep", "1001"]))
    sm.apply()
    sm.apply()
    stale = json.loads(_entry(sm).read_text())  # says: sleep 1001, as applied
    path = sm.units / "planted.sandbox.toml"
    _edit_keeping_times(path, '"1001"', '"1002"')
    sm.run("plan", str(sm.units))  # keeps the entry of the edited directory: its key
    key = json.loads(_entry(sm).read_text())["key"]
    # The forgery: the edited directory's key over the forms as applied, which, if believed,
    # would make the edit a no-op. Written by root here, then given to another user.
    forged = _entry(sm)
    forged.write_text(json.dumps({**stale, "key": key}))
    os.chown(forged, NOBODY, NOBODY)
    out, imported = _apply_imports(sm)
    assert "No changes" not in out and "loaded" in imported, out
    assert _cmdline(sm.running_init("planted"))[-2:] == ["sleep", "1002"]


def test_a_start_reads_its_recorded_unit_back_without_pydantic(sm: Sandman) -> None:
    """`start` validates the unit its record holds (units/desired.py) with the validators the
    first apply kept, as a load does, and the sandbox runs its recorded command again."""
    sm.write("again", unit(command=["sleep", "1003"]))
    sm.apply()
    sm.run("stop", "again")
    out, imported = _apply_imports(sm, "start", "again")
    assert "pydantic" not in imported, out
    assert _cmdline(sm.running_init("again"))[-2:] == ["sleep", "1003"]
