"""A container image's config as the defaults of a sandbox on it (sandman.units.image_defaults,
through read_units): what the unit leaves out comes from the image, what it sets wins, and a
value of the (untrusted) image the unit model refuses is a problem naming the image."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandman.errors import UnitError
from sandman.images.config import ImageConfig
from sandman.units.read import read_units

CONFIG = ImageConfig(
    entrypoint=("/bin/tool",),
    cmd=("--serve",),
    env=("PATH=/bin", "MODE=image", "BARE"),
    workdir="/srv",
    user="1000:1000",
)


def load(tmp_path: Path, sandbox: str, config: ImageConfig | None = CONFIG) -> object:
    (tmp_path / "app.sandbox.toml").write_text(f'[sandbox]\n{sandbox}\n[rootfs]\nimage = "app"\n')
    images = {"app": config} if config is not None else {}
    return read_units(str(tmp_path), "t", images=images.get).sandboxes["app"]


def test_what_the_unit_leaves_out_comes_from_the_image(tmp_path: Path) -> None:
    sandbox = load(tmp_path, "")
    section = sandbox.unit.sandbox  # type: ignore[attr-defined]
    assert section.command == ("/bin/tool", "--serve")
    assert section.environment == {"PATH": "/bin", "MODE": "image", "BARE": ""}
    assert (section.working_directory, section.user) == ("/srv", "1000:1000")
    assert sandbox.from_image == ("command", "environment", "working_directory", "user")  # type: ignore[attr-defined]
    assert sandbox.canonical()["resolved"]["from_image"] == list(sandbox.from_image)  # type: ignore[attr-defined]


def test_what_the_unit_sets_wins(tmp_path: Path) -> None:
    sandbox = load(
        tmp_path,
        'command = ["/bin/sh"]\nuser = "0:0"\nworking_directory = "/"\n'
        'environment = { MODE = "unit" }',
    )
    section = sandbox.unit.sandbox  # type: ignore[attr-defined]
    assert (section.command, section.user, section.working_directory) == (("/bin/sh",), "0:0", "/")
    assert section.environment == {"PATH": "/bin", "MODE": "unit", "BARE": ""}
    assert sandbox.from_image == ("environment",)  # type: ignore[attr-defined]


def test_an_image_without_a_config_still_needs_a_command(tmp_path: Path) -> None:
    with pytest.raises(UnitError, match=r"sandbox\.command: is missing"):
        load(tmp_path, "", config=None)
    with pytest.raises(UnitError, match=r"sandbox\.command: is missing"):
        load(tmp_path, "", config=ImageConfig(env=("A=b",)))


def test_a_booted_sandbox_takes_no_command_from_its_image(tmp_path: Path) -> None:
    sandbox = load(tmp_path, "boot = true", config=ImageConfig(cmd=("/bin/sh",)))
    assert sandbox.unit.sandbox.command is None  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("config", "refused"),
    [
        (ImageConfig(cmd=("/bin/sh",), user="nginx"), "user"),
        (ImageConfig(cmd=("/bin/sh",), workdir="relative"), "working_directory"),
        (ImageConfig(cmd=("/bin/sh",), env=("BAD NAME=x",)), "environment"),
        (ImageConfig(cmd=("/bin/sh\0",)), "command"),
    ],
)
def test_a_value_of_the_image_the_model_refuses_names_the_image(
    tmp_path: Path, config: ImageConfig, refused: str
) -> None:
    with pytest.raises(UnitError) as raised:
        load(tmp_path, "", config=config)
    text = str(raised.value)
    assert "rootfs.image: image 'app' cannot be run as it says: its config's" in text
    assert refused in text
