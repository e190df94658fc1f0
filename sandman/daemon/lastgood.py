"""The unit files of the last pass that read them without a problem, kept under the state dir.

While the unit directory holds a bad file, the daemon goes on repairing drift and restarting
inits from this copy: "the rest keeps running as before" includes its restart policies. The copy
is taken right after a good pass; a file edited in between may slip in, and then the next pass
(which its inotify event brings) sorts it out.
"""

from __future__ import annotations

import os
import shutil

from sandman.daemon.restarts import daemon_dir


def units_dir(state_dir: str) -> str:
    return os.path.join(daemon_dir(state_dir), "units")


def is_unit_file(name: str) -> bool:
    """The files the loader reads (units/load.py): NAME.KIND.toml, hidden ones left out."""
    return name.endswith(".toml") and not name.startswith(".")


def save(directory: str, state_dir: str) -> None:
    """Replace the copy with the unit files of `directory`, whole or not at all."""
    target = units_dir(state_dir)
    fresh, old = f"{target}.new", f"{target}.old"
    for leftover in (fresh, old):
        shutil.rmtree(leftover, ignore_errors=True)
    os.makedirs(fresh, mode=0o700)
    for name in os.listdir(directory):
        if is_unit_file(name):
            shutil.copyfile(os.path.join(directory, name), os.path.join(fresh, name))
    if os.path.isdir(target):
        os.rename(target, old)
    os.rename(fresh, target)
    shutil.rmtree(old, ignore_errors=True)


def saved(state_dir: str) -> str | None:
    """The copy's directory, or None when no good pass has been seen in this boot."""
    target = units_dir(state_dir)
    return target if os.path.isdir(target) else None


def remove(state_dir: str) -> None:
    shutil.rmtree(units_dir(state_dir), ignore_errors=True)
