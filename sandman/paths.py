"""Where sandman reads and writes: flags first, then environment variables, then the defaults."""

# No `from __future__ import annotations`: typing compiles each string annotation of a
# NamedTuple when the class is made (about 0.1 ms a field, at every start).
import os
from typing import NamedTuple

from sandman.units.names import DEFAULT_STATE_DIR, instance_tag

DEFAULT_IMAGE_DIR = "/var/lib/sandman/images"
DEFAULT_LOG_DIR = "/var/log/sandman"


class Paths(NamedTuple):
    state_dir: str
    image_dir: str
    log_dir: str

    @property
    def tag(self) -> str:
        return instance_tag(self.state_dir)

    def persistent_dir(self, name: str) -> str:
        """Kept across destroy: beside the image dir, /var/lib/sandman/sandboxes/NAME by default."""
        return os.path.join(os.path.dirname(self.image_dir), "sandboxes", name)

    @classmethod
    def resolve(cls, state_dir: str | None, image_dir: str | None, log_dir: str | None) -> "Paths":
        env = os.environ
        return cls(
            state_dir=os.path.abspath(
                state_dir or env.get("SANDMAN_STATE_DIR") or DEFAULT_STATE_DIR
            ),
            image_dir=os.path.abspath(
                image_dir or env.get("SANDMAN_IMAGE_DIR") or DEFAULT_IMAGE_DIR
            ),
            log_dir=os.path.abspath(log_dir or env.get("SANDMAN_LOG_DIR") or DEFAULT_LOG_DIR),
        )
