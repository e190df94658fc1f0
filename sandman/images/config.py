"""What a container image says a container runs (its config's Entrypoint, Cmd, Env,
WorkingDir and User), kept beside an image imported from one. Light: `sandman images` reads it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
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
