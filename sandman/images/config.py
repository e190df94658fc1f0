"""What a container image says a container runs (its config's Entrypoint, Cmd, Env,
WorkingDir and User), kept beside an image imported from one. Light: `sandman images` reads it."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from sandman.record import record


@record(frozen=True)
class ImageConfig:
    """What a container image says a container runs, from its config's `config` object."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    workdir: str = ""
    user: str = ""
    source: str = ""  # the archive or layout, and the reference chosen in it

    def to_json(self) -> dict[str, Any]:
        return {
            "entrypoint": list(self.entrypoint),
            "cmd": list(self.cmd),
            "env": list(self.env),
            "workdir": self.workdir,
            "user": self.user,
            "source": self.source,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ImageConfig:
        return cls(
            entrypoint=tuple(data.get("entrypoint", ())),
            cmd=tuple(data.get("cmd", ())),
            env=tuple(data.get("env", ())),
            workdir=str(data.get("workdir", "")),
            user=str(data.get("user", "")),
            source=str(data.get("source", "")),
        )


def image_config(image_dir: str, name: str) -> ImageConfig | None:
    """What the container image NAME was imported from says a container runs; None for an
    image that is no container image's (or whose config cannot be read)."""
    try:
        with open(config_path(image_dir, name), "rb") as file:
            return config_of(file.read())
    except OSError:
        return None


def config_of(data: bytes) -> ImageConfig | None:
    """The config a sidecar file's bytes say; None for bytes that say none."""
    try:
        return ImageConfig.from_json(json.loads(data))
    except (ValueError, TypeError, AttributeError):
        return None


def config_path(image_dir: str, name: str) -> str:
    """Beside the image, not in it (its tree is a sandbox's root): hidden, so that no image
    name (which starts with a letter or digit) can be it."""
    return os.path.join(os.path.abspath(image_dir), f".{name}.config.json")


def configs_in(image_dir: str) -> Callable[[str], ImageConfig | None]:
    """image_config of IMAGE_DIR's images, by name: what the unit loader asks, once per image
    however many sandboxes run on it (every apply and daemon pass loads the units)."""
    read: dict[str, ImageConfig | None] = {}

    def of(name: str) -> ImageConfig | None:
        if name not in read:
            read[name] = image_config(image_dir, name)
        return read[name]

    return of
