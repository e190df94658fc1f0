"""Read a unit directory into validated models, collecting every problem of the run.

Nothing here touches the kernel; the loader's only error is UnitError, whatever the input.
"""

from __future__ import annotations

import os
import re
from typing import Any

from sandman.record import field, record

try:  # tomli's compiled wheels parse about 3x faster than the stdlib's pure-Python copy
    import tomli as toml
except ImportError:  # pragma: no cover - the same parser, slower
    import tomllib as toml  # type: ignore[no-redef]

from sandman.errors import UnitError, UnitProblem
from sandman.units import compiled, plain
from sandman.units.constants import KINDS
from sandman.units.locate import KeyLines, Path, dotted
from sandman.units.plain import NetworkUnit, SandboxUnit, SliceUnit
from sandman.units.plain_base import Plain
from sandman.units.scalars import INT64_MAX, NAME_MAX, NAME_RE, is_int
from sandman.units.snapshot import MAX_UNIT_BYTES, Snapshot, is_unit_file, read_bounded

# Only a long run of (hex) digits or underscores can spell an integer beyond 64 bits: documents
# without one skip the walk.
_LONG_NUMBER = re.compile(r"[0-9A-Fa-f_]{16,}")
_TOML_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)")


@record(frozen=True)
class UnitFile:
    """One parsed, validated unit file."""

    name: str
    kind: str
    file: str
    lines: KeyLines = field(repr=False, compare=False)
    model: Plain

    def problem(self, path: Path, message: str, hint: str = "") -> UnitProblem:
        return UnitProblem(self.file, dotted(path), message, self.lines.line(path), hint)


@record
class UnitSet:
    """Every unit of a directory by kind and name, and what was wrong on the way."""

    sandboxes: dict[str, UnitFile] = field(default_factory=dict)
    networks: dict[str, UnitFile] = field(default_factory=dict)
    slices: dict[str, UnitFile] = field(default_factory=dict)
    problems: list[UnitProblem] = field(default_factory=list)
    # Units whose file exists but failed to load: references to them are not reported again.
    broken: set[tuple[str, str]] = field(default_factory=set)
    # Files that look like units but are not read (`web.sandbox.TOML`): said, never fatal.
    warnings: list[str] = field(default_factory=list)

    def of_kind(self, kind: str) -> dict[str, UnitFile]:
        return {"sandbox": self.sandboxes, "network": self.networks, "slice": self.slices}[kind]


def sandbox_model(unit: UnitFile) -> SandboxUnit:
    assert isinstance(unit.model, SandboxUnit)
    return unit.model


def network_model(unit: UnitFile) -> NetworkUnit:
    assert isinstance(unit.model, NetworkUnit)
    return unit.model


def slice_model(unit: UnitFile) -> SliceUnit:
    assert isinstance(unit.model, SliceUnit)
    return unit.model


def read_directory(directory: str, snapshot: Snapshot | None = None) -> UnitSet:
    """Parse and validate every `NAME.KIND.toml` in `directory` (cross-unit checks come after).
    SNAPSHOT: the directory's entries and unit files' bytes as the unit cache read and hashed
    them, loaded instead of reading again, so that what a cache entry keys is what it holds."""
    units = UnitSet()
    try:
        entries = sorted(os.listdir(directory)) if snapshot is None else list(snapshot.entries)
    except FileNotFoundError:
        raise UnitError(
            [_dir_problem(directory, "does not exist", "give the directory of your units")]
        ) from None
    except NotADirectoryError:
        raise UnitError(
            [
                _dir_problem(
                    directory,
                    "is not a directory",
                    "give the directory that holds NAME.KIND.toml files",
                )
            ]
        ) from None
    except OSError as exc:
        raise UnitError(
            [_dir_problem(directory, f"cannot be read ({exc.strerror})", "check its permissions")]
        ) from None
    files = [e for e in entries if is_unit_file(e)]
    units.warnings += [
        f"{os.path.join(directory, e)}: ignored, unit files end in `.toml` (lower case); "
        f"rename it to {e[: -len('.toml')]}.toml if it is a unit"
        for e in entries
        if _looks_like_a_unit(e) and e not in files
    ]
    if not files:
        raise UnitError(
            [
                _dir_problem(
                    directory,
                    "holds no unit files",
                    "add NAME.sandbox.toml, NAME.network.toml or NAME.slice.toml files; an empty "
                    "directory is never taken to mean 'destroy everything'",
                )
            ]
        )
    for entry in files:
        _read_file(units, directory, entry, None if snapshot is None else snapshot.files[entry])
    return units


def _looks_like_a_unit(entry: str) -> bool:
    """NAME.KIND.toml in another case (`web.sandbox.TOML`, `web.Sandbox.Toml`): a unit the user
    meant, that a loader keyed on the exact suffix would skip without a word."""
    parts = entry.lower().split(".")
    return (
        len(parts) == 3 and parts[1] in KINDS and parts[2] == "toml" and not entry.startswith(".")
    )


def _dir_problem(directory: str, message: str, hint: str) -> UnitProblem:
    return UnitProblem(directory, "", message, None, hint)


def _read_file(units: UnitSet, directory: str, entry: str, raw: bytes | None) -> None:
    shown = os.path.join(directory, entry)
    name, kind = _split_name(units, shown, entry)
    if not name:
        return
    text = _read_text(units, shown, raw)
    if text is None:
        units.broken.add((kind, name))
        return
    data = _parse_toml(units, shown, text)
    if data is None:
        units.broken.add((kind, name))
        return
    lines = KeyLines(text)
    if _LONG_NUMBER.search(text) and _out_of_range(units, shown, lines, data):
        units.broken.add((kind, name))
        return
    try:
        model = compiled.validate(plain.UNITS[kind], data)
    except compiled.InvalidUnitError as exc:
        units.problems.extend(_problems(kind, shown, lines, exc.errors))
        units.broken.add((kind, name))
        return
    units.of_kind(kind)[name] = UnitFile(name, kind, shown, lines, model)


def _split_name(units: UnitSet, shown: str, entry: str) -> tuple[str, str]:
    parts = entry.split(".")
    if len(parts) != 3:
        # The example reuses the name only when it is one: echoing "\r" would break the report.
        example = parts[0] if NAME_RE.fullmatch(parts[0]) else "web"
        units.problems.append(
            UnitProblem(
                shown,
                "",
                "is not named NAME.KIND.toml",
                None,
                f"rename it, e.g. {example}.sandbox.toml; KIND is one of {', '.join(KINDS)}",
            )
        )
        return "", ""
    name, kind, _ = parts
    if kind not in KINDS:
        units.problems.append(
            UnitProblem(
                shown,
                "",
                f"{kind!r} is not a unit kind",
                None,
                f"KIND is one of {', '.join(KINDS)}",
            )
        )
        return "", ""
    if NAME_RE.fullmatch(name) and len(name) > NAME_MAX:
        units.problems.append(
            UnitProblem(
                shown,
                "",
                f"{name!r} is {len(name)} characters long",
                None,
                f"a unit name has at most {NAME_MAX} characters; rename the file",
            )
        )
        return "", ""
    if not NAME_RE.fullmatch(name):
        units.problems.append(
            UnitProblem(
                shown,
                "",
                f"{name!r} is not a valid unit name",
                None,
                f"use lowercase letters, digits and '-', starting with a letter or digit, at most "
                f"{NAME_MAX} characters",
            )
        )
        return "", ""
    return name, kind


def _read_text(units: UnitSet, shown: str, raw: bytes | None) -> str | None:
    try:
        if raw is None:
            with open(shown, "rb") as handle:
                raw = read_bounded(handle)
    except OSError as exc:
        units.problems.append(
            UnitProblem(
                shown,
                "",
                f"cannot be read ({exc.strerror})",
                None,
                "check that it is a readable file",
            )
        )
        return None
    if len(raw) > MAX_UNIT_BYTES:
        units.problems.append(
            UnitProblem(
                shown,
                "",
                "is larger than 1 MiB",
                None,
                "a unit file is a few lines of TOML; check the file",
            )
        )
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        units.problems.append(
            UnitProblem(
                shown,
                "",
                "is not valid UTF-8",
                line,
                "TOML files are UTF-8 text; re-save it as UTF-8",
            )
        )
        return None


def _parse_toml(units: UnitSet, shown: str, text: str) -> dict[str, Any] | None:
    try:
        return toml.loads(text)
    except RecursionError:
        # tomllib recurses once per level of nesting; a few hundred `[` exhaust the stack.
        units.problems.append(
            UnitProblem(
                shown,
                "",
                "nests arrays or tables too deeply to read",
                None,
                "a unit needs at most a few levels of nesting; check the file",
            )
        )
        return None
    except toml.TOMLDecodeError as exc:
        message = str(exc)
        position = _TOML_POSITION.search(message)
        line = int(position.group(1)) if position else None
        what = _TOML_POSITION.sub("", message).strip()
        column = f" (column {position.group(2)})" if position else ""
        units.problems.append(
            UnitProblem(
                shown,
                "",
                f"TOML syntax error: {what}{column}",
                line,
                "fix the syntax; see https://toml.io for the format",
            )
        )
        return None


def _out_of_range(units: UnitSet, shown: str, lines: KeyLines, data: Any) -> bool:
    """TOML integers are 64-bit and a larger one must be an error (toml.io), but tomllib takes
    any size; no kernel interface would. Walked with a stack: nesting can be hundreds deep."""
    found = False
    stack: list[tuple[Path, Any]] = [((), data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            stack.extend(((*path, k), v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend(((*path, i), v) for i, v in enumerate(value))
        elif is_int(value) and not -INT64_MAX - 1 <= value <= INT64_MAX:
            found = True
            units.problems.append(
                UnitProblem(
                    shown,
                    dotted(path),
                    "is out of TOML's 64-bit integer range",
                    lines.line(path),
                    f"integers run from {-INT64_MAX - 1} to {INT64_MAX}",
                )
            )
    return found


def _problems(kind: str, shown: str, lines: KeyLines, errors: list[Any]) -> list[UnitProblem]:
    """The validator's errors as problems, said by the models (messages.py reads them: only a
    unit with a problem imports pydantic)."""
    from sandman.units import messages
    from sandman.units.model import MODELS

    model_class = MODELS[kind]
    problems = []
    for error in errors:
        path = messages.problem_path(model_class, error)
        message, hint = messages.describe(model_class, error)
        problems.append(UnitProblem(shown, dotted(path), message, lines.line(path), hint))
    return problems
