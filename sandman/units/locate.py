"""Find the line of a dotted key in TOML source, which tomllib does not report.

The scanner walks a document that tomllib already accepted, so it only needs to follow TOML's
structure (headers, keys, inline tables, arrays, strings, comments), not to validate it. It maps
every key path it sees, at any depth, to the line where that key (or array item) starts.
"""

from __future__ import annotations

import json
import re

Path = tuple[str | int, ...]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.line = 1
        self.lines: dict[Path, int] = {}
        self.array_tables: dict[Path, int] = {}

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def advance(self, count: int = 1) -> None:
        for _ in range(count):
            if self.pos < len(self.text) and self.text[self.pos] == "\n":
                self.line += 1
            self.pos += 1

    def skip_blank(self, newlines: bool) -> None:
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == "#":
                while self.pos < len(self.text) and self.text[self.pos] != "\n":
                    self.pos += 1
            elif char in " \t\r" or (newlines and char == "\n"):
                self.advance()
            else:
                return

    def record(self, path: Path, line: int) -> None:
        self.lines.setdefault(path, line)

    def scan(self) -> dict[Path, int]:
        table: Path = ()
        while self.pos < len(self.text):
            self.skip_blank(newlines=True)
            if self.pos >= len(self.text):
                break
            if self.text.startswith("[[", self.pos):
                table = self.array_header()
            elif self.peek() == "[":
                self.advance()
                table = self.in_arrays(self.key_path())
                self.record(table, self.line)
                self.skip_to_eol()
            else:
                self.key_value(table)
        return self.lines

    def array_header(self) -> Path:
        self.advance(2)
        keys = self.key_path()
        name = (*self.in_arrays(keys[:-1]), keys[-1])
        index = self.array_tables.get(name, 0)
        self.array_tables[name] = index + 1
        self.record(name, self.line)
        self.record((*name, index), self.line)
        self.skip_to_eol()
        return (*name, index)

    def in_arrays(self, keys: list[str]) -> Path:
        """`[mount.x]` after `[[mount]]` is a table in the last element of that array, as
        pydantic's locations say (`mount[0].x`)."""
        path: list[str | int] = []
        for key in keys:
            path.append(key)
            count = self.array_tables.get(tuple(path))
            if count is not None:
                path.append(count - 1)
        return tuple(path)

    def skip_to_eol(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] != "\n":
            self.pos += 1

    def key_path(self) -> list[str]:
        keys: list[str] = []
        while True:
            self.skip_blank(newlines=False)
            keys.append(self.key())
            self.skip_blank(newlines=False)
            if self.peek() != ".":
                return keys
            self.advance()

    def key(self) -> str:
        char = self.peek()
        if char in "\"'":
            return self.string()
        match = _BARE_KEY.match(self.text, self.pos)
        if not match:
            self.advance()
            return ""
        self.pos = match.end()
        return match.group()

    def key_value(self, table: Path) -> None:
        line = self.line
        keys = self.key_path()
        path = (*table, *keys)
        for depth in range(len(table) + 1, len(path) + 1):
            self.record(path[:depth], line)
        self.skip_blank(newlines=False)
        if self.peek() == "=":
            self.advance()
        self.value(path)

    def value(self, path: Path) -> None:
        self.skip_blank(newlines=False)
        char = self.peek()
        if char == "{":
            self.inline_table(path)
        elif char == "[":
            self.array(path)
        elif char in "\"'":
            self.string()
        else:
            while self.pos < len(self.text) and self.text[self.pos] not in ",]}\n#":
                self.pos += 1

    def inline_table(self, path: Path) -> None:
        self.advance()
        while True:
            self.skip_blank(newlines=True)
            if self.peek() in ("}", ""):
                self.advance()
                return
            if self.peek() == ",":
                self.advance()
                continue
            self.key_value(path)

    def array(self, path: Path) -> None:
        self.advance()
        index = 0
        while True:
            self.skip_blank(newlines=True)
            if self.peek() in ("]", ""):
                self.advance()
                return
            if self.peek() == ",":
                self.advance()
                continue
            self.record((*path, index), self.line)
            self.value((*path, index))
            index += 1

    def string(self) -> str:
        quote = self.peek()
        if self.text.startswith(quote * 3, self.pos):
            end = self.text.find(quote * 3, self.pos + 3)
            end = len(self.text) if end < 0 else end + 3
            while self.pos < end:
                self.advance()
            return ""
        self.advance()
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in (quote, "\n"):
            if quote == '"' and self.text[self.pos] == "\\":
                self.pos += 1
            self.pos += 1
        value = self.text[start : self.pos]
        self.advance()
        return value


def key_lines(text: str) -> dict[Path, int]:
    """Every key path of the document and the line it starts on (1-based)."""
    try:
        return _Scanner(text).scan()
    except RecursionError:
        return {}


def line_of(lines: dict[Path, int], path: Path) -> int | None:
    """The line of `path`, or of its nearest ancestor that the document spells out."""
    for depth in range(len(path), 0, -1):
        line = lines.get(path[:depth])
        if line is not None:
            return line
    return None


def dotted(path: Path) -> str:
    """`("network", "ports", 0, "host")` -> `network.ports[0].host`; a key that is not bare is
    quoted as TOML quotes it (`environment."A.B"`), so that a key holding a dot or a newline
    neither reads as two keys nor breaks the one-line report."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            key = part if _BARE_KEY.fullmatch(part) else _quoted(part)
            text += f".{key}" if text else key
    return text


def _quoted(key: str) -> str:
    """A TOML basic string: quotes, backslashes and unprintable characters (a newline, U+2028)
    escaped, everything else kept as written."""
    escaped = (c if c.isprintable() and c not in '"\\' else json.dumps(c)[1:-1] for c in key)
    return '"' + "".join(escaped) + '"'


class KeyLines:
    """The key lines of one document, worked out only when a problem asks for one: a valid
    directory never pays for the scan (it costs as much as parsing the TOML)."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._lines: dict[Path, int] | None = None

    def line(self, path: Path) -> int | None:
        if self._lines is None:
            self._lines = key_lines(self._text)
        return line_of(self._lines, path)
