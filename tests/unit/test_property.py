"""Whatever a unit directory holds, the loader either returns a Desired or raises UnitError.

Documents are built from the real models' keys mixed with random keys, and from plausible values
mixed with random values of every TOML type, then written as TOML by the small serializer below
(no TOML writer is a dependency). Random text and bytes go in as whole files too.
"""

from __future__ import annotations

import datetime
import functools
import json
import math
import os
import re
import tempfile
import tomllib
import typing
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from sandman.errors import UnitError
from sandman.units import compiled, plain
from sandman.units.desired import Desired
from sandman.units.model import MODELS
from sandman.units.read import read_units

# 200 keeps the file well under 30 s; SANDMAN_FUZZ_EXAMPLES=20000 hunts deeper.
EXAMPLES = settings(
    max_examples=int(os.environ.get("SANDMAN_FUZZ_EXAMPLES", "200")),
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# TOML serializer


_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def toml_string(text: str) -> str:
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def toml_key(key: str) -> str:
    return key if _BARE.fullmatch(key) else toml_string(key)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(value)  # "inf", "-inf", "1e+16" and "0.5" are all TOML floats
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"not a TOML value: {value!r}")


def _array_of_tables(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def toml_document(data: dict[str, Any]) -> str:
    """Top-level tables as `[table]`, arrays of tables as `[[table]]`, anything deeper inline:
    the scanner that finds key lines sees headers, dotted tables and inline tables alike."""
    lines = [f"{toml_key(k)} = {toml_value(v)}" for k, v in data.items() if not _table(v)]
    for key, value in data.items():
        if isinstance(value, dict):
            lines.append(f"[{toml_key(key)}]")
            lines.extend(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items())
        elif _array_of_tables(value):
            for item in value:
                lines.append(f"[[{toml_key(key)}]]")
                lines.extend(f"{toml_key(k)} = {toml_value(v)}" for k, v in item.items())
    return "\n".join(lines) + "\n"


def _table(value: Any) -> bool:
    return isinstance(value, dict) or _array_of_tables(value)


# Strategies

_INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
_SCALARS = st.one_of(
    st.text(max_size=20),
    _INT64,
    st.integers(),  # beyond 64 bits: tomllib reads them, the loader must refuse them
    st.floats(),
    st.booleans(),
    st.datetimes(timezones=st.none() | st.just(datetime.UTC)),
    st.dates(),
    st.times(),
)
_PLAUSIBLE_TEXT = st.sampled_from(
    [
        "auto", "lan", "wan", "services", "sandman", "web", "busybox", "default", "os",
        "unconfined", "bind", "tmpfs", "proc", "overlay", "read-only", "tcp", "udp", "no",
        "always", "on-failure", "0:0", "1000:1000", "10.88.0.0/24", "10.88.0.10/24",
        "10.88.0.1", "10.88.0.255", "10.88.0.10", "10.89.0.0/16", "10.88.0.0/30",
        "fd00:88::/64", "fd00:88::10/64", "fd00:88::1", "::1", "127.0.0.1", "0.0.0.0",
        "64M", "1G", "0", "5s", "-5s", "250ms", "2min", "1h", "50%", "0%", "200%", "/", "/tmp",
        "/srv/www", "relative", "/a/../b", "1777", "0755", "CAP_NET_RAW", "NET_RAW",
        "sm-web", "smb-lan", "x" * 40,
    ]
)  # fmt: skip
_PLAUSIBLE = st.one_of(
    _PLAUSIBLE_TEXT,
    st.integers(min_value=-2, max_value=70000),
    st.sampled_from([0, 1, 65535, 65536, 200000, 2**32 - 1, 2**32, 0o1777]),
    st.booleans(),
    st.lists(_PLAUSIBLE_TEXT, max_size=4),
)
_JUNK_KEY = st.one_of(st.text(max_size=10), st.sampled_from(["comand", "[key]", "type", ""]))
TOML_VALUES: st.SearchStrategy[Any] = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_JUNK_KEY, inner, max_size=3),
    max_leaves=8,
)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _value_for(annotation: Any, junk: bool) -> st.SearchStrategy[Any]:
    models = _models_in(annotation)
    if models:
        table = st.one_of(*(table_of(m, junk) for m in models))
        return st.one_of(table, st.lists(table, max_size=3), *([TOML_VALUES] if junk else []))
    if typing.get_origin(annotation) is dict or "dict[" in str(annotation):
        return st.dictionaries(
            st.sampled_from(["LANG", "PATH", "1X"]) | (_JUNK_KEY if junk else st.nothing()),
            _PLAUSIBLE | TOML_VALUES if junk else _PLAUSIBLE_TEXT,
            max_size=3,
        )
    return st.one_of(_PLAUSIBLE, _PLAUSIBLE, TOML_VALUES) if junk else _PLAUSIBLE


@functools.cache
def table_of(model: type[BaseModel], junk: bool) -> st.SearchStrategy[dict[str, Any]]:
    """Tables of `model`: its own keys with plausible values, and with `junk` also random keys
    and random values of any TOML type."""
    fields = model.model_fields
    key = st.sampled_from(sorted(fields))
    keys = st.lists(key | _JUNK_KEY if junk else key, max_size=len(fields) + 1, unique=True)

    def build(chosen: list[str]) -> st.SearchStrategy[dict[str, Any]]:
        return st.fixed_dictionaries(
            {
                k: _value_for(fields[k].annotation, junk) if k in fields else TOML_VALUES
                for k in chosen
            }
        )

    return keys.flatmap(build)


def _with_required(kind: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Often put in the keys a unit cannot do without, so that deeper checks run too."""
    minimals: dict[str, dict[str, Any]] = {
        "sandbox": {"sandbox": {"command": ["/bin/true"]}},
        "network": {"network": {"subnet": "10.88.0.0/24"}},
        "slice": {"slice": {}},
    }
    minimal = minimals[kind]

    def add(data: dict[str, Any]) -> dict[str, Any]:
        merged = {**minimal, **data}
        section = merged.get(kind)
        if isinstance(section, dict):
            merged[kind] = {**minimal[kind], **section}
        return merged

    return add


def _kind_and_document(kind: str) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    return unit_documents(kind).map(lambda data: (kind, data))


def unit_documents(kind: str) -> st.SearchStrategy[dict[str, Any]]:
    required = _with_required(kind)
    junk = table_of(MODELS[kind], junk=True)
    clean = table_of(MODELS[kind], junk=False)
    return st.one_of(junk, junk.map(required), clean.map(required))


_NAMES = st.sampled_from(["web", "api", "lan", "wan", "services", "sandman", "a", "b"])
UNIT_FILES = st.dictionaries(
    st.tuples(_NAMES, st.sampled_from(["sandbox", "network", "slice"])).map(
        lambda nk: f"{nk[0]}.{nk[1]}.toml"
    ),
    st.none(),
    min_size=1,
    max_size=5,
).flatmap(
    lambda files: st.fixed_dictionaries(
        {name: unit_documents(name.split(".")[1]) for name in files}
    )
)


# Properties


def _load(files: dict[str, bytes]) -> Desired | UnitError:
    with tempfile.TemporaryDirectory() as directory:
        for name, content in files.items():
            with open(os.path.join(directory, name), "wb") as handle:
                handle.write(content)
        try:
            return read_units(directory, "sm")
        except UnitError as error:
            _check_problems(error, directory, files)
            return error


def _check_problems(error: UnitError, directory: str, files: dict[str, bytes]) -> None:
    assert error.problems, "a UnitError names at least one problem"
    for problem in error.problems:
        assert problem.message
        for text in (problem.key, problem.message, problem.hint):
            assert len(text.splitlines()) <= 1, "one problem, one line"
        assert problem.file.startswith(directory)
        name = os.path.basename(problem.file)
        if problem.line is not None and name in files:
            assert 1 <= problem.line <= files[name].count(b"\n") + 1


def _check_desired(desired: Desired) -> None:
    """A valid result is complete and can be recorded."""
    for sandbox in desired.sandboxes.values():
        json.dumps(sandbox.canonical())
        if sandbox.address is not None:
            network = desired.networks[sandbox.unit.network.attach if sandbox.unit.network else ""]
            assert sandbox.address in network.gateway.network
    for network in desired.networks.values():
        json.dumps(network.canonical())
        assert len(network.bridge) <= 15
    for slice_ in desired.slices.values():
        json.dumps(slice_.canonical())
        assert slice_.path[0] == "sandman"


@EXAMPLES
@given(UNIT_FILES)
def test_random_unit_documents_fail_only_with_unit_error(files: dict[str, dict[str, Any]]) -> None:
    texts = {name: toml_document(data) for name, data in files.items()}
    for text in texts.values():
        tomllib.loads(text)  # the serializer writes valid TOML: the models are what is tested
    result = _load({name: text.encode() for name, text in texts.items()})
    if isinstance(result, Desired):
        _check_desired(result)


@EXAMPLES
@given(st.sampled_from(["sandbox", "network", "slice"]).flatmap(unit_documents))
def test_random_unit_document_alone(data: dict[str, Any]) -> None:
    text = toml_document(data)
    kind = next((k for k in ("sandbox", "network", "slice") if k in data), "sandbox")
    result = _load({f"x.{kind}.toml": text.encode()})
    assert isinstance(result, Desired | UnitError)


@EXAMPLES
@given(st.sampled_from(["sandbox", "network", "slice"]).flatmap(_kind_and_document))
def test_the_compiled_validators_answer_as_the_models(case: tuple[str, dict[str, Any]]) -> None:
    """units/compiled.py validates with the models' schemas for plain classes: any document is
    accepted by both, with the same values and dumps, or refused by both with the same errors."""
    kind, data = case
    try:
        expected: BaseModel | None = MODELS[kind].model_validate(data)
    except ValidationError as exc:
        expected, errors = None, [(e["type"], e["loc"], e["msg"]) for e in exc.errors()]
    try:
        made = compiled.validate(plain.UNITS[kind], data)
    except compiled.InvalidUnitError as exc:
        assert expected is None
        assert [(e["type"], e["loc"], e["msg"]) for e in exc.errors] == errors
        return
    assert expected is not None
    assert made == compiled.to_plain(expected)
    for mode in ("json", "python"):
        assert repr(made.model_dump(mode=mode)) == repr(expected.model_dump(mode=mode))


_TOML_ISH = st.text(
    alphabet=st.sampled_from(list("[]{}=\"'#.,\n \t\\") + list("abcdemnorstuvwxyz019_-+:")),
    max_size=80,
)


@EXAMPLES
@given(st.one_of(st.text(max_size=200), _TOML_ISH, st.binary(max_size=200)))
def test_random_text_as_a_file_fails_only_with_unit_error(content: str | bytes) -> None:
    raw = content if isinstance(content, bytes) else content.encode()
    result = _load({"web.sandbox.toml": raw, "lan.network.toml": raw})
    assert isinstance(result, Desired | UnitError)


@EXAMPLES
@given(
    st.lists(st.text(max_size=12), min_size=1, max_size=4, unique=True).filter(
        lambda names: all(n and "/" not in n and "\0" not in n and n not in ".." for n in names)
    )
)
def test_random_file_names_fail_only_with_unit_error(names: list[str]) -> None:
    files = {f"{name}.toml": b'[sandbox]\ncommand = ["/bin/true"]\n' for name in names}
    assert isinstance(_load(files), Desired | UnitError)


_ADDRESS_TEXT = st.one_of(
    st.none(),
    st.text(max_size=20),
    st.sampled_from(["10.88.0.2/24", "10.88.0.1/24", "10.88.0.255/24", "10.88.0.0/24"]),
    st.sampled_from(["10.99.0.2/24", "fd00:88::2/64", "fd00:88::1/64", "10.88.0.3", "::"]),
    st.integers(min_value=2, max_value=254).map(lambda i: f"10.88.0.{i}/24"),
)
_STICKY_UNITS = {
    "lan.network.toml": b'[network]\nsubnet = "10.88.0.0/24"\nsubnet6 = "fd00:88::/64"\n',
    **{
        f"{name}.sandbox.toml": b'[sandbox]\ncommand = ["/bin/true"]\n[network]\nattach = "lan"\n'
        for name in ("web", "api", "db")
    },
}


@EXAMPLES
@given(st.dictionaries(_NAMES, st.tuples(_ADDRESS_TEXT, _ADDRESS_TEXT), max_size=4))
def test_any_sticky_record_gives_distinct_addresses_in_the_subnet(
    sticky: dict[str, tuple[str | None, str | None]],
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        for name, content in _STICKY_UNITS.items():
            with open(os.path.join(directory, name), "wb") as handle:
                handle.write(content)
        desired = read_units(directory, "sm", sticky)
    lan = desired.networks["lan"]
    assert lan.gateway6 is not None
    for family, gateway in ((4, lan.gateway), (6, lan.gateway6)):
        got = [sb.address if family == 4 else sb.address6 for sb in desired.sandboxes.values()]
        hosts = {a.ip for a in got if a is not None}
        assert len(hosts) == 3, "every sandbox has an address of its own"
        assert gateway.ip not in hosts
        assert all(a is not None and a.network == gateway.network for a in got)
