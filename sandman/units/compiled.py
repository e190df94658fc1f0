"""Unit validation without pydantic: the models' own pydantic-core schemas, kept between runs.

Importing pydantic and building the unit models costs a cold `apply` about 70 ms, more than
all its other work; the validation itself is pydantic-core's, which needs only the schemas the
models compile to. So the first run that validates builds them from the models (model.py), with
each model class swapped for its plain twin (plain.py) and each parser named by module and
name, and keeps them as JSON in the state dir; later runs load that and pydantic-core's
extension alone. The same schema validates, so every unit is accepted or refused exactly as
the models would; a refusal's errors are worded by the models, as before (messages.py reads
them, so only a unit with a problem imports pydantic).

The kept file is read only through units/cache.py's private-file checks, and names only
functions and classes of the modules in _NAMEABLE: loading it calls nothing else, even if it
were forged. Its name carries the hash of the unit modules' source and the pydantic release
(cache.code_hash), so an upgrade or an edit of a model builds it again.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from typing import TYPE_CHECKING, Any, TypeVar

from sandman.units import parsers, plain
from sandman.units.plain_base import Plain, assemble

if TYPE_CHECKING:
    from pydantic import BaseModel
    from pydantic_core import SchemaValidator

_P = TypeVar("_P", bound=Plain)
SCHEMA_VERSION = 1
# The modules whose own functions and classes a kept schema may name (never what they import),
# and of builtins only the default factory of a dict; nothing here acts beyond its arguments.
_NAMEABLE = (
    "sandman.units.parsers",
    "sandman.units.scalars",
    "sandman.units.plain",
    "ipaddress",
)
_BUILTINS = {"builtins:dict": dict}
_CORE = "pydantic_core._pydantic_core"
_PREFIX = "schemas-"  # of the kept files

# Where the schemas are kept: the state dir's cache dir, set once per run before a validation.
_kept: dict[str, str] = {}


def keep_in(directory: str) -> None:
    """Keep the compiled schemas in DIRECTORY (the state dir's cache dir). A run that never
    says where builds them in memory from the models, as `validate` without a state dir."""
    _kept["dir"] = directory


class InvalidUnitError(ValueError):
    """What the validator found wrong: pydantic's error dicts (type, loc, msg, input, ctx)."""

    def __init__(self, title: str, errors: list[Any]):
        super().__init__(f"{title}: {errors[0]['msg'] if errors else 'invalid'}")
        self.errors = errors


def validate(cls: type[_P], data: Any) -> _P:
    """DATA validated as CLS's model would validate it; InvalidUnitError if not."""
    compiled = _compiled()
    try:
        made: _P = compiled.validator(cls.__name__).validate_python(data)
    except compiled.core.ValidationError as exc:
        raise InvalidUnitError(cls.__name__, exc.errors()) from None
    return made


def dump(value: Plain, *, mode: str = "python", exclude_unset: bool = False) -> dict[str, Any]:
    """VALUE as its model's model_dump gives it: nested values as dicts, the keys with a
    serializer of their own (durations, CPU shares, file modes) as their text, and in "json"
    mode tuples as lists. Ours, not pydantic-core's serializer: its first use imports 16 ms of
    modules (uuid, pathlib, pydantic_core's package) that nothing here needs."""
    as_json = mode == "json"
    serializers = _compiled().field_serializers(type(value).__name__)
    names = value.model_fields_set if exclude_unset else value.__dict__
    dumped = {}
    for name in value.__dict__:
        if name in names:
            item = value.__dict__[name]
            text = serializers.get(name) if item is not None else None
            dumped[name] = text(item) if text else _dumped(item, as_json, exclude_unset)
    return dumped


def _dumped(item: Any, as_json: bool, exclude_unset: bool) -> Any:
    if isinstance(item, Plain):
        return dump(item, mode="json" if as_json else "python", exclude_unset=exclude_unset)
    if isinstance(item, tuple):
        items = [_dumped(i, as_json, exclude_unset) for i in item]
        return items if as_json else tuple(items)
    if isinstance(item, dict):
        return {k: _dumped(v, as_json, exclude_unset) for k, v in item.items()}
    return item


class _Compiled:
    """The schemas by plain class name; each class's validator and field serializers made on
    first use."""

    def __init__(self, schemas: dict[str, Any], kept: bool) -> None:
        self.schemas = schemas
        self.kept = kept  # read from a kept file, not built from the models in this process
        self.core = _core_module()

    @functools.cache  # noqa: B019 - one instance per process
    def validator(self, name: str) -> SchemaValidator:
        try:
            made: SchemaValidator = self.core.SchemaValidator(self.schemas[name])
        except (self.core.SchemaError, KeyError):
            if not self.kept:
                raise
            # A kept file this pydantic-core cannot take (one it did not write): the models'.
            self.schemas, self.kept = schemas_from_models(), False
            made = self.core.SchemaValidator(self.schemas[name])
        return made

    @functools.cache  # noqa: B019 - one instance per process
    def field_serializers(self, name: str) -> dict[str, Any]:
        """The fields of class NAME whose schema has a plain serializer function, and it."""
        fields = _model_fields(self.schemas[name], name)
        return {f: fn for f, schema in fields.items() if (fn := _serializer_in(schema))}


def _model_fields(schema: Any, name: str) -> dict[str, Any]:
    """The field schemas of the model schema of class NAME within SCHEMA."""
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("type") == "model" and getattr(node.get("cls"), "__name__", "") == name:
                inner = node["schema"]
                while inner["type"] != "model-fields":  # under a model validator
                    inner = inner["schema"]
                fields: dict[str, Any] = inner["fields"]
                return fields
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    raise KeyError(name)


def _serializer_in(schema: Any) -> Any:
    """A field's own serializer: looked for down its wrappers (default, nullable, validators),
    not into the models it holds."""
    while isinstance(schema, dict):
        found = schema.get("serialization")
        if isinstance(found, dict) and found.get("type") == "function-plain":
            return found["function"]
        if schema.get("type") in ("model", "definition-ref", "definitions", "tagged-union"):
            return None
        schema = schema.get("schema")
    return None


@functools.cache
def _compiled() -> _Compiled:
    # JSON, but not named `.json` (as the unit cache's entries): no reader of records takes it
    name = f"{_PREFIX}{_key()[:16]}.cache"
    kept_dir = _kept.get("dir")
    if kept_dir is not None:
        from sandman.units import cache

        kept = cache.read_private(kept_dir, name)
        if kept is not None:
            try:
                return _Compiled(decode(json.loads(kept)), kept=True)
            except (ValueError, KeyError, TypeError, AttributeError):
                pass  # damaged or forged: built again below
    schemas = schemas_from_models()
    if kept_dir is not None:
        # A read-only state dir only means the next run builds them again.
        with contextlib.suppress(OSError):
            _keep(kept_dir, name, json.dumps(encode(schemas), separators=(",", ":")))
    return _Compiled(schemas, kept=False)


def _keep(directory: str, name: str, text: str) -> None:
    """NAME in DIRECTORY, and no other release's schemas left beside it (each is 50 kB)."""
    from sandman.units import cache

    cache.write_private(directory, name, text.encode())
    for other in os.listdir(directory):
        if other.startswith(_PREFIX) and other != name:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, other))


def _key() -> str:
    from sandman.units import cache

    return f"{SCHEMA_VERSION}-{cache.code_hash()}"


def _core_module() -> Any:
    """pydantic-core's extension module, loaded without its package: `import pydantic_core`
    runs the package's __init__, whose typing imports cost 11 ms of the 14; the extension
    alone takes 2.5. Registered under its own name, so a later import of pydantic (the error
    path, `schema`) finds the same module and its classes stay the same."""
    loaded = sys.modules.get(_CORE)
    if loaded is not None:
        return loaded
    import importlib.machinery

    path = _extension_path()
    if path is None:  # an unusual install: the package's own way
        import pydantic_core

        return pydantic_core._pydantic_core
    loader = importlib.machinery.ExtensionFileLoader(_CORE, path)
    spec = importlib.machinery.ModuleSpec(_CORE, loader, origin=path)
    module = loader.create_module(spec)
    loader.exec_module(module)
    sys.modules[_CORE] = module
    return module


def _extension_path() -> str | None:
    """The extension file as the import system would find the package, first on sys.path."""
    for entry in sys.path:
        directory = os.path.join(entry or ".", "pydantic_core")
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        suffixes = _extension_suffixes()
        found = [n for n in names if n.startswith("_pydantic_core.") and n.endswith(suffixes)]
        return os.path.join(directory, found[0]) if len(found) == 1 else None
    return None


def _extension_suffixes() -> tuple[str, ...]:
    import importlib.machinery

    return tuple(importlib.machinery.EXTENSION_SUFFIXES)


# --- built from the models (imports pydantic) -------------------------------------------------


def schemas_from_models() -> dict[str, Any]:
    """Each model's core schema, its classes swapped for the plain ones."""
    from sandman.units.plain_gen import model_classes

    return {cls.__name__: _plain_schema(cls.__pydantic_core_schema__) for cls in model_classes()}


def _plain_schema(value: Any) -> Any:
    """A model's core schema for plain classes: `cls` and defaults plain, the model validator of
    SandboxUnit its parser, pydantic's JSON-schema hooks (metadata) left out."""
    from pydantic import BaseModel

    if isinstance(value, dict):
        return {k: _plain_schema(v) for k, v in value.items() if k != "metadata"}
    if isinstance(value, list):
        return [_plain_schema(v) for v in value]
    if isinstance(value, type) and issubclass(value, BaseModel):
        return getattr(plain, value.__name__)
    if isinstance(value, BaseModel):
        return to_plain(value)
    if getattr(value, "__self__", None) is not None and getattr(value, "__name__", "") in _METHODS:
        return _METHODS[value.__name__]
    return value


def to_plain(model: BaseModel) -> Plain:
    """A model instance as its plain twin (the loader's fallback, and defaults)."""
    from pydantic import BaseModel

    def value(item: Any) -> Any:
        if isinstance(item, BaseModel):
            return to_plain(item)
        if isinstance(item, tuple):
            return tuple(value(i) for i in item)
        return item

    cls: type[Plain] = getattr(plain, type(model).__name__)
    fields = {k: value(v) for k, v in model.__dict__.items()}
    return assemble(cls, fields, set(model.model_fields_set))


# The model validators, by name, and the parser each only calls.
_METHODS = {"_boot_defaults": parsers.boot_defaults}


# --- the kept form ---------------------------------------------------------------------------


def encode(value: Any) -> Any:
    """A schema as JSON: functions and classes by module and name, partials, tuples, sets and
    plain values tagged (`$`-keys, which no core schema uses)."""
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, tuple):
        return {"$tuple": [encode(v) for v in value]}
    if isinstance(value, (set, frozenset)):
        return {"$set": sorted(encode(v) for v in value)}
    if isinstance(value, Plain):
        return {
            "$plain": type(value).__name__,
            "fields": encode(dict(value.__dict__)),
            "set": sorted(value.model_fields_set),
        }
    if isinstance(value, functools.partial):
        return {"$partial": _name_of(value.func), "args": encode(list(value.args))}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return {"$name": _name_of(value)}


def _name_of(thing: Any) -> str:
    module, name = getattr(thing, "__module__", None), getattr(thing, "__qualname__", "")
    text = f"{module}:{name}"
    if text in _BUILTINS:
        return text
    if module not in _NAMEABLE or "." in name or getattr(_module(module), name, None) is not thing:
        raise ValueError(f"a unit schema names {thing!r}, which is no parser of {_NAMEABLE}")
    return text


def decode(value: Any) -> Any:
    if isinstance(value, list):
        return [decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "$tuple" in value:
        return tuple(decode(v) for v in value["$tuple"])
    if "$set" in value:
        return set(decode(v) for v in value["$set"])
    if "$name" in value:
        return _named(value["$name"])
    if "$partial" in value:
        return functools.partial(_named(value["$partial"]), *decode(value["args"]))
    if "$plain" in value:
        return _plain_value(value)
    return {k: decode(v) for k, v in value.items()}


def _named(text: str) -> Any:
    """The function or class TEXT names, if it is one a schema may name (see _NAMEABLE)."""
    if text in _BUILTINS:
        return _BUILTINS[text]
    module, _, name = str(text).partition(":")
    found = getattr(_module(module), name, None) if module in _NAMEABLE else None
    if not callable(found) or getattr(found, "__module__", None) != module:
        raise ValueError(f"a kept unit schema names {text!r}, which is no parser")
    return found


def _plain_value(value: dict[str, Any]) -> Plain:
    cls: Any = getattr(plain, str(value["$plain"]), None)
    if not (isinstance(cls, type) and issubclass(cls, Plain)):
        raise ValueError(f"a kept unit schema names {value['$plain']!r}")
    return assemble(cls, decode(value["fields"]), set(value["set"]))


def _module(name: str) -> Any:
    import importlib

    return importlib.import_module(name)
