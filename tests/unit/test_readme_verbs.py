"""The README's command line table has a row for every verb of the parser."""

from __future__ import annotations

import pathlib
import re

from sandman.cli import VERBS

README = (pathlib.Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_verb_has_a_row_in_the_command_line_table() -> None:
    section = README.split("## Command line", 1)[1].split("\n## ", 1)[0]
    rows = set(re.findall(r"^\| `sandman (\w+)", section, re.MULTILINE))
    # `stats` is `top` under podman's name, and its row says so.
    assert set(VERBS) - {"stats"} <= rows, sorted(set(VERBS) - rows)
    assert rows <= set(VERBS), sorted(rows - set(VERBS))
    assert "also `sandman stats`" in section
