"""The key locator finds the line of any dotted key, however the TOML spells it."""

from __future__ import annotations

import tomllib

from sandman.units.locate import dotted, key_lines, line_of

DOCUMENT = """\
# a comment with [brackets] and key = "value"
[sandbox]
command = [
  "/bin/sh",   # the shell
  "-c", "echo '[not a table]'",
]
environment = { LANG = "C", "QUOTED.KEY" = 'x' }

[network]
attach = "lan"
ports = [
  { host = 8080, sandbox = 80 },

  { host = 8081, sandbox = 81 },
]
resources.memory_max = "1G"

[[mount]]
type = "tmpfs"
target = "/tmp"

[[mount]]
type = "bind"
source = \"\"\"/srv/
www\"\"\"
target = "/www"
"""


def test_document_is_valid_toml() -> None:
    tomllib.loads(DOCUMENT)


def test_lines_of_keys_at_every_depth() -> None:
    lines = key_lines(DOCUMENT)
    assert lines[("sandbox",)] == 2
    assert lines[("sandbox", "command")] == 3
    assert lines[("sandbox", "command", 0)] == 4
    assert lines[("sandbox", "command", 2)] == 5
    assert lines[("sandbox", "environment", "LANG")] == 7
    assert lines[("sandbox", "environment", "QUOTED.KEY")] == 7
    assert lines[("network", "ports", 0, "host")] == 12
    assert lines[("network", "ports", 1, "sandbox")] == 14
    assert lines[("network", "ports", 1)] == 14
    assert lines[("network", "resources", "memory_max")] == 16
    assert lines[("mount", 0, "target")] == 20
    assert lines[("mount", 1)] == 22
    assert lines[("mount", 1, "target")] == 26


def test_missing_key_falls_back_to_nearest_ancestor() -> None:
    lines = key_lines(DOCUMENT)
    assert line_of(lines, ("network", "address")) == 9
    assert line_of(lines, ("mount", 1, "read_only")) == 22
    assert line_of(lines, ("idmap", "uid")) is None


def test_dotted_paths() -> None:
    assert dotted(("network", "ports", 0, "host")) == "network.ports[0].host"
    assert dotted(("mount", 2)) == "mount[2]"
    assert dotted(()) == ""
