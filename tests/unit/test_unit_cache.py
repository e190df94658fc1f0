"""The unit cache (sandman/units/cache.py) is never stale and never trusted blindly: after every
kind of edit a run gives what loading the units afresh gives, and an entry that is damaged,
open to others, or reached through a symlink is a miss. (Another user's entry: tests/root.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sandman.commands import validate
from sandman.images.config import ImageConfig, config_path, configs_in
from sandman.paths import Paths
from sandman.units import cache as unit_cache
from sandman.units.cache import Sticky, UnitCache
from sandman.units.canonicals import Canonicals
from sandman.units.read import read_units

WEB = '[sandbox]\ncommand = ["/bin/sleep", "100"]\n[rootfs]\nimage = "app"\n'
APP = '[sandbox]\n[rootfs]\nimage = "app"\n[network]\nattach = "lan"\naddress = "auto"\n'
LAN = '[network]\nsubnet = "10.9.0.0/24"\n'


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    state, images, units = tmp_path / "state", tmp_path / "images", tmp_path / "units"
    for directory in (state, images, units):
        directory.mkdir(mode=0o700)
    (units / "web.sandbox.toml").write_text(WEB)
    (units / "app.sandbox.toml").write_text(APP)
    (units / "lan.network.toml").write_text(LAN)
    _config(str(images), ["/bin/app", "--serve"])
    return Paths(str(state), str(images), str(tmp_path / "logs"))


def _config(image_dir: str, cmd: list[str]) -> None:
    with open(config_path(image_dir, "app"), "w", encoding="utf-8") as file:
        json.dump(ImageConfig(cmd=tuple(cmd)).to_json(), file)


def _units(paths: Paths) -> str:
    return os.path.join(os.path.dirname(paths.state_dir), "units")


def _fresh(paths: Paths, sticky: Sticky | None = None) -> Canonicals:
    desired = read_units(
        _units(paths), paths.tag, sticky=sticky, images=configs_in(paths.image_dir)
    )
    return desired.canonicals()


def _cache(paths: Paths, sticky: Sticky | None = None) -> UnitCache:
    return UnitCache(paths.state_dir, paths.image_dir, _units(paths), paths.tag, sticky)


def _entry(paths: Paths) -> str:
    (name,) = os.listdir(os.path.join(paths.state_dir, "cache"))
    return os.path.join(paths.state_dir, "cache", name)


def _validated(paths: Paths) -> Canonicals:
    """What validate resolves, from the cache or not, checked against a fresh load."""
    result = validate._desired(paths, _units(paths))
    assert result == _fresh(paths)
    return result


def test_a_second_run_is_answered_from_the_cache(paths: Paths) -> None:
    assert _cache(paths).lookup() is None
    first = _validated(paths)
    assert _cache(paths).lookup() == first
    assert first.sandboxes["web"].form["sandbox"]["command"] == ["/bin/sleep", "100"]
    assert first.sandboxes["app"].form["sandbox"]["command"] == ["/bin/app", "--serve"]
    info = os.stat(_entry(paths))
    assert info.st_mode & 0o777 == 0o600
    assert os.stat(os.path.dirname(_entry(paths))).st_mode & 0o777 == 0o700


def _edit_keeping_times(path: str, old: str, new: str) -> None:
    """An edit of the same length that leaves mtime (and size) as they were."""
    before = os.stat(path)
    text = Path(path).read_text()
    assert len(old) == len(new) and old in text
    Path(path).write_text(text.replace(old, new))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(path).st_size == before.st_size


def _rename(units: str) -> None:
    os.rename(os.path.join(units, "web.sandbox.toml"), os.path.join(units, "www.sandbox.toml"))


def _add(units: str) -> None:
    Path(units, "db.sandbox.toml").write_text(WEB)


def _remove(units: str) -> None:
    os.unlink(os.path.join(units, "web.sandbox.toml"))


def _add_ignored(units: str) -> None:
    Path(units, "db.sandbox.TOML").write_text(WEB)  # not read, but warned of


def _content(units: str) -> None:
    _edit_keeping_times(os.path.join(units, "web.sandbox.toml"), '"100"', '"200"')


EDITS = {
    "content, same size and mtime": _content,
    "renamed file": _rename,
    "added file": _add,
    "removed file": _remove,
    "added file the loader only warns of": _add_ignored,
}


@pytest.mark.parametrize("edit", EDITS)
def test_no_edit_of_the_directory_is_missed(paths: Paths, edit: str) -> None:
    before = _validated(paths)
    EDITS[edit](_units(paths))
    assert _cache(paths).lookup() is None
    after = _validated(paths)
    assert after != before
    assert _cache(paths).lookup() == after  # and the new state is kept in its place


def test_an_edit_that_makes_a_unit_invalid_is_an_error_again(paths: Paths) -> None:
    from sandman.errors import UnitError

    _validated(paths)
    _edit_keeping_times(os.path.join(_units(paths), "web.sandbox.toml"), "[rootfs]", "[rootfx]")
    with pytest.raises(UnitError, match=r"rootfx"):
        validate._desired(paths, _units(paths))


def test_a_changed_image_config_is_not_missed(paths: Paths) -> None:
    _validated(paths)
    _config(paths.image_dir, ["/bin/app", "--other"])
    assert _cache(paths).lookup() is None
    after = _validated(paths)
    assert after.sandboxes["app"].form["sandbox"]["command"] == ["/bin/app", "--other"]
    os.unlink(config_path(paths.image_dir, "app"))  # the config gone: the image gives nothing
    assert _cache(paths).lookup() is None


def test_kept_addresses_the_tag_and_the_code_are_in_the_key(
    paths: Paths, monkeypatch: pytest.MonkeyPatch
) -> None:
    sticky: Sticky = {"app": ("10.9.0.7/24", None)}
    cache = _cache(paths, sticky)
    cache.store(read_units(_units(paths), paths.tag, sticky=sticky, images=cache.images))
    hit = _cache(paths, sticky).lookup()
    assert hit == _fresh(paths, sticky)
    assert hit is not None and hit.sandboxes["app"].form["resolved"]["address"] == "10.9.0.7/24"
    assert _cache(paths, {"app": ("10.9.0.8/24", None)}).lookup() is None
    assert _cache(paths, {"app": ("10.9.0.7/24", "fd00::7/64")}).lookup() is None
    assert _cache(paths, None).lookup() is None  # validate's entry is not apply's
    other_tag = UnitCache(paths.state_dir, paths.image_dir, _units(paths), "other", sticky)
    assert other_tag.lookup() is None
    monkeypatch.setattr(unit_cache, "code_hash", lambda: "another sandman")
    assert _cache(paths, sticky).lookup() is None


def _damage(path: str) -> None:
    Path(path).write_text('{"version": 1, "key": ')


def _open_to_others(path: str) -> None:
    os.chmod(path, 0o644)


def _dir_open_to_others(path: str) -> None:
    os.chmod(os.path.dirname(path), 0o755)


def _symlink(path: str) -> None:
    elsewhere = f"{path}.elsewhere"
    os.rename(path, elsewhere)
    os.symlink(elsewhere, path)


def _another_version(path: str) -> None:
    entry = json.loads(Path(path).read_text())
    Path(path).write_text(json.dumps({**entry, "version": 99}))


def _wrong_shape(path: str) -> None:
    entry = json.loads(Path(path).read_text())
    Path(path).write_text(json.dumps({**entry, "objects": {"sandbox": []}}))


DAMAGE = {
    "torn JSON": _damage,
    "entry open to others": _open_to_others,
    "dir open to others": _dir_open_to_others,
    "entry is a symlink": _symlink,
    "another version": _another_version,
    "wrong shape": _wrong_shape,
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_an_entry_not_beyond_doubt_is_a_miss(paths: Paths, damage: str) -> None:
    _validated(paths)
    DAMAGE[damage](_entry(paths))
    assert _cache(paths).lookup() is None
    _validated(paths)  # and the run is right all the same


def test_a_state_dir_that_cannot_hold_the_cache_only_costs_the_cache(tmp_path: Path) -> None:
    units = tmp_path / "units"
    units.mkdir()
    (units / "web.sandbox.toml").write_text('[sandbox]\ncommand = ["/bin/true"]\n')
    paths = Paths(str(tmp_path / "missing" / "state"), str(tmp_path / "images"), str(tmp_path))
    assert validate._desired(paths, str(units)).names("sandbox") == {"web"}
    assert not os.path.exists(paths.state_dir)  # validate makes no state dir


def test_a_repeated_validate_imports_no_pydantic(paths: Paths) -> None:
    script = (
        "import sys; from sandman.cli import main; "
        "code = main(['validate', '--state-dir', sys.argv[1], '--image-dir', sys.argv[2], "
        "sys.argv[3]]); print(code, 'pydantic' in sys.modules)"
    )
    argv = [sys.executable, "-c", script, paths.state_dir, paths.image_dir, _units(paths)]
    first = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split()[-2:]
    again = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split()[-2:]
    assert first == ["0", "True"]
    assert again == ["0", "False"]


def test_an_entry_holds_what_its_key_hashed_even_if_a_file_changes_during_the_load(
    paths: Paths,
) -> None:
    cache = _cache(paths)  # the directory read and hashed here
    web = os.path.join(_units(paths), "web.sandbox.toml")
    _edit_keeping_times(web, '"100"', '"300"')  # changed before the loader runs
    loaded = read_units(_units(paths), paths.tag, images=cache.images, snapshot=cache.snapshot)
    cache.store(loaded)
    assert loaded.sandboxes["web"].canonical()["sandbox"]["command"] == ["/bin/sleep", "100"]
    assert _cache(paths).lookup() is None  # the edited file is another key
    _edit_keeping_times(web, '"300"', '"100"')  # and back: the entry is right for it
    assert _cache(paths).lookup() == _fresh(paths)


def test_the_cache_reads_the_config_file_the_images_module_names(paths: Paths) -> None:
    with open(config_path(paths.image_dir, "app"), "rb") as file:
        assert unit_cache._config_bytes(paths.image_dir, "app") == file.read()
    assert unit_cache._config_bytes(paths.image_dir, "none") is None


def test_the_key_names_the_pydantic_that_validates() -> None:
    import hashlib

    import pydantic.version

    with open(pydantic.version.__file__, "rb") as file:
        assert unit_cache._pydantic_release() == hashlib.sha256(file.read()).hexdigest()


def test_a_sandbox_kept_without_addresses_is_one_not_kept(paths: Paths) -> None:
    """What `auto` keeps of a sandbox without a network is nothing: the same resolution, the
    same key, so the apply after the one that made it is a hit."""
    sticky: Sticky = {"web": (None, None)}
    cache = _cache(paths, {})
    cache.store(read_units(_units(paths), paths.tag, sticky={}, images=cache.images))
    assert _cache(paths, sticky).lookup() == _fresh(paths, sticky) == _fresh(paths, {})
