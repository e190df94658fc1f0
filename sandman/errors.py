"""Exceptions of sandman. Library code raises these; only `cli.py` turns them into exit codes."""

# No `from __future__ import annotations`: a NamedTuple's string annotations are each compiled
# by typing at class creation (1 ms of every start for UnitProblem's five).
from collections.abc import Iterable
from typing import NamedTuple


class SandmanError(Exception):
    """Base of every error sandman reports to a user."""


class UnitProblem(NamedTuple):
    """One thing wrong with one unit file: where it is, what it is, how to fix it."""

    file: str
    key: str
    message: str
    line: int | None = None
    hint: str = ""

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        key = f" {self.key}:" if self.key else ""
        hint = f"; {self.hint}" if self.hint else ""
        return f"{where}:{key} {self.message}{hint}"

    def to_json(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "key": self.key,
            "message": self.message,
            "hint": self.hint,
        }


class UnitError(SandmanError):
    """Every problem found in a unit directory, reported together."""

    def __init__(self, problems: Iterable[UnitProblem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.file, p.line or 0, p.key, p.message))
        super().__init__("\n".join(str(p) for p in self.problems))


class UsageError(SandmanError):
    """A bad command-line argument (exit code 2, like a bad unit)."""


class StateError(SandmanError):
    """A record under the state directory cannot be read or written."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        super().__init__(f"`{path}`: {message}")


class ImageError(SandmanError):
    """An image cannot be built, imported, listed or removed; names the image and its directory."""

    def __init__(self, name: str, path: str, message: str) -> None:
        self.name = name
        self.path = path
        super().__init__(f"image {name} (`{path}`): {message}")


class ApplyError(SandmanError):
    """An action failed while changing the host; names the object and the step."""

    def __init__(self, obj: str, step: str, cause: BaseException | None = None) -> None:
        self.obj = obj
        self.step = step
        detail = f": {cause}" if cause is not None else ""
        super().__init__(f"{obj}: {step}{detail}")
