"""Record classes for the modules on a cold command's path: what `@dataclass` gives them
(`__init__` from the annotated fields, `__repr__`, `__eq__`, `frozen`, `field(default_factory=
..., init=False, repr=False, compare=False)`, `replace`), without the dataclasses module.

Importing dataclasses imports inspect (with ast, dis and tokenize: 4-5 ms), and each dataclass
compiles its methods from source text (about 0.25 ms a class): 8 ms of a cold `apply` of 95.
Here the methods are shared functions that read the class's field table, made once. The type
checker sees a dataclass (`dataclass_transform`), so constructors and fields are checked alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, dataclass_transform, overload

_T = TypeVar("_T")
_MISSING: Any = object()


class FrozenInstanceError(AttributeError):
    pass


class _Field:
    __slots__ = ("compare", "default", "factory", "init", "name", "repr")

    def __init__(
        self,
        default: Any = _MISSING,
        factory: Callable[[], Any] | None = None,
        init: bool = True,
        repr: bool = True,
        compare: bool = True,
    ) -> None:
        self.name = ""
        self.default, self.factory = default, factory
        self.init, self.repr, self.compare = init, repr, compare


def field(
    *,
    default: Any = _MISSING,
    default_factory: Callable[[], Any] | None = None,
    init: bool = True,
    repr: bool = True,
    compare: bool = True,
) -> Any:
    return _Field(default, default_factory, init, repr, compare)


@overload
def record(cls: type[_T], /) -> type[_T]: ...
@overload
def record(*, frozen: bool = False) -> Callable[[type[_T]], type[_T]]: ...


@dataclass_transform(field_specifiers=(field,))
def record(cls: type[_T] | None = None, /, *, frozen: bool = False) -> Any:
    """`@record` or `@record(frozen=True)`, as `@dataclass` and `@dataclass(frozen=True)`."""

    def make(target: type[_T]) -> type[_T]:
        return _make(target, frozen)

    return make if cls is None else make(cls)


def replace(obj: _T, **changes: Any) -> _T:
    """A copy of OBJ with CHANGES, built through its __init__ (as dataclasses.replace)."""
    fields: tuple[_Field, ...] = type(obj).__record_fields__  # type: ignore[attr-defined]
    given = {f.name: getattr(obj, f.name) for f in fields if f.init}
    made: _T = type(obj)(**{**given, **changes})
    for f in fields:
        if not f.init:
            object.__setattr__(made, f.name, getattr(obj, f.name))
    return made


def _make(cls: type[_T], frozen: bool) -> type[_T]:
    inherited: dict[str, _Field] = {}
    for base in reversed(cls.__mro__[1:]):
        inherited.update((f.name, f) for f in getattr(base, "__record_fields__", ()))
    own = vars(cls)
    for name, annotation in own.get("__annotations__", {}).items():
        if "ClassVar" in str(annotation):
            continue
        value = own.get(name, _MISSING)
        spec = value if isinstance(value, _Field) else _Field(default=value)
        spec.name = name
        inherited[name] = spec
        if isinstance(value, _Field):
            delattr(cls, name)  # as dataclasses: a field's default is not a class attribute
    fields = tuple(inherited.values())
    methods: dict[str, Any] = {
        "__record_fields__": fields,
        # the names __init__ takes, in order: made once, not at each construction
        "__record_init__": tuple(f.name for f in fields if f.init),
        "__init__": _init,
        "__repr__": _repr,
        "__eq__": _eq,
        # eq without frozen: unhashable, as a dataclass
        "__hash__": _hash if frozen else None,
    }
    if frozen:
        methods.update(__setattr__=_frozen_setattr, __delattr__=_frozen_delattr)
    for name, method in methods.items():
        setattr(cls, name, method)
    return cls


def _init(self: Any, *args: Any, **kwargs: Any) -> None:
    fields: tuple[_Field, ...] = type(self).__record_fields__
    taking: tuple[str, ...] = type(self).__record_init__
    if len(args) > len(taking):
        raise TypeError(f"{type(self).__name__}() takes {len(taking)} arguments, not {len(args)}")
    values = dict(zip(taking, args, strict=False))
    for name in kwargs:
        if name in values or name not in taking:
            raise TypeError(f"{type(self).__name__}() got an unexpected or repeated {name!r}")
    values.update(kwargs)
    for f in fields:
        if f.name in values:
            value = values[f.name]
        elif f.factory is not None:
            value = f.factory()
        elif f.default is not _MISSING:
            value = f.default
        else:
            raise TypeError(f"{type(self).__name__}() is missing {f.name!r}")
        object.__setattr__(self, f.name, value)
    post_init = getattr(self, "__post_init__", None)
    if post_init is not None:
        post_init()


def _repr(self: Any) -> str:
    fields: tuple[_Field, ...] = type(self).__record_fields__
    shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields if f.repr)
    return f"{type(self).__qualname__}({shown})"


def _compared(self: Any) -> tuple[Any, ...]:
    fields: tuple[_Field, ...] = type(self).__record_fields__
    return tuple(getattr(self, f.name) for f in fields if f.compare)


def _eq(self: Any, other: object) -> bool:
    return type(other) is type(self) and _compared(self) == _compared(other)


def _hash(self: Any) -> int:
    return hash(_compared(self))


def _frozen_setattr(self: Any, name: str, value: Any) -> None:
    raise FrozenInstanceError(f"cannot assign to field {name!r}")


def _frozen_delattr(self: Any, name: str) -> None:
    raise FrozenInstanceError(f"cannot delete field {name!r}")
