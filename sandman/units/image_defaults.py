"""What a container image's config gives a sandbox on it whose unit leaves it out: the command
(Entrypoint then Cmd), the working directory and the user; its Env under the unit's own
environment (a key the unit sets wins), as podman and docker do.

The config is the image's, so untrusted: what it gives is validated by the unit model's own
rules, and a value the model refuses is a problem naming the image and the key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sandman.images.config import ImageConfig
from sandman.units.compiled import InvalidUnitError
from sandman.units.plain import SandboxSection, SandboxUnit

ImageConfigs = Callable[[str], ImageConfig | None]  # an image's config by name, None if none


def with_defaults(model: SandboxUnit, config: ImageConfig) -> tuple[SandboxUnit, list[str]]:
    """MODEL with what CONFIG gives for the keys its unit left out, and those keys' names.
    Raises ValueError naming the first value of the image the model refuses."""
    sandbox = model.sandbox
    given = sandbox.model_fields_set
    update: dict[str, Any] = {}
    if "command" not in given and not sandbox.boot and (config.entrypoint or config.cmd):
        update["command"] = [*config.entrypoint, *config.cmd]
    if config.env:
        environment = dict(_pairs(config.env))
        environment.update(sandbox.environment)
        update["environment"] = environment
    if "working_directory" not in given and config.workdir:
        update["working_directory"] = config.workdir
    if "user" not in given and config.user:
        update["user"] = config.user
    if not update:
        return model, []
    data = sandbox.model_dump(mode="python", exclude_unset=True) | update
    try:
        section = SandboxSection.model_validate(data)
    except InvalidUnitError as exc:
        first = exc.errors[0]
        key = ".".join(str(part) for part in first["loc"])
        raise ValueError(f"its config's {key}: {first['msg']}") from None
    keys: list[str] = [
        k for k in ("command", "environment", "working_directory", "user") if k in update
    ]
    return model.model_copy(update={"sandbox": section}), keys


def _pairs(env: tuple[str, ...]) -> list[tuple[str, str]]:
    """`NAME=value` entries; one without `=` is a name with an empty value (as docker reads it)."""
    return [(name, value) for name, _, value in (entry.partition("=") for entry in env)]
