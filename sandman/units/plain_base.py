"""What every plain unit value (plain.py) is: immutable, compared by value, and dumped, copied
and validated as its pydantic model would be, without pydantic.

A plain value is made by pydantic-core's validator from the model's own schema (compiled.py),
which fills `__dict__` and the three attributes below as it fills a model's; the slots keep
them out of `__dict__`, which holds the fields alone, in the model's order.
"""

from __future__ import annotations

from typing import Any, TypeVar

_P = TypeVar("_P", bound="Plain")


class Plain:
    # Declared for the type checker: the slots below hold them.
    __pydantic_fields_set__: set[str]

    __slots__ = (
        "__dict__",
        "__pydantic_extra__",
        "__pydantic_fields_set__",
        "__pydantic_private__",
    )

    def __init__(self, **data: Any) -> None:
        """Validated as the model would validate the same keywords (tests and code that build
        one by hand): a ValidationError names what is wrong."""
        from sandman.units import compiled

        made = compiled.validate(type(self), data)
        for slot in ("__dict__", "__pydantic_fields_set__", "__pydantic_extra__"):
            object.__setattr__(self, slot, getattr(made, slot))
        object.__setattr__(self, "__pydantic_private__", None)

    @classmethod
    def model_validate(cls: type[_P], data: Any) -> _P:
        from sandman.units import compiled

        return compiled.validate(cls, data)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable; make a new one (model_copy)")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.__dict__ == other.__dict__

    def __hash__(self) -> int:
        return hash((type(self), *self.__dict__.values()))

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in self.__dict__.items())
        return f"{type(self).__name__}({fields})"

    @property
    def model_fields_set(self) -> set[str]:
        """The keys the unit file gave (the others hold their defaults)."""
        given: set[str] = self.__pydantic_fields_set__
        return given

    def model_dump(self, *, mode: str = "python", exclude_unset: bool = False) -> dict[str, Any]:
        from sandman.units import compiled

        return compiled.dump(self, mode=mode, exclude_unset=exclude_unset)

    def model_copy(self: _P, *, update: dict[str, Any] | None = None) -> _P:
        """A copy with UPDATE's fields replaced, as given (not validated: as pydantic's)."""
        given = self.__pydantic_fields_set__ | set(update or ())
        return assemble(type(self), {**self.__dict__, **(update or {})}, given)


def assemble(cls: type[_P], fields: dict[str, Any], given: set[str]) -> _P:
    """A CLS of these field values, as they are (not validated), GIVEN the keys a file gave."""
    made = object.__new__(cls)
    object.__setattr__(made, "__dict__", fields)
    object.__setattr__(made, "__pydantic_fields_set__", given)
    object.__setattr__(made, "__pydantic_extra__", None)
    object.__setattr__(made, "__pydantic_private__", None)
    return made
