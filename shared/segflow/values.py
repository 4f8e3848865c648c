"""`Value`, the base of the layer's immutable value types, and `replace` / `as_dict` for them.

A subclass declares its fields as annotations with optional defaults, as a frozen dataclass does, and mypy
checks it as one (constructor calls, read-only fields, `replace`). At run time it is a plain `__slots__`
class: nothing is compiled when it is defined (why that matters: shared/ARCHITECTURE.md, "Cold start").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from dataclasses import replace as replace  # mypy checks each field's name and type, as for a dataclass

    from typing_extensions import dataclass_transform
else:

    def dataclass_transform(**_: object) -> Callable[[type], type]:
        return lambda cls: cls

    def replace(value: Value, /, **changes: Any) -> Value:
        """A copy of `value` with `changes`, built (and checked) by its constructor."""
        return type(value)(**{**as_dict(value), **changes})


def _is_class_var(annotation: object) -> bool:
    text = annotation if isinstance(annotation, str) else repr(annotation)
    return text.startswith(("ClassVar", "typing.ClassVar"))


class _ValueType(type):
    """Turns a class body's annotations into `__slots__` and its defaults into `_defaults`."""

    def __new__(mcs, name: str, bases: tuple[type, ...], namespace: dict[str, Any]) -> _ValueType:
        annotations = namespace.get("__annotations__", {})
        own = tuple(field for field, kind in annotations.items() if not _is_class_var(kind))
        inherited: tuple[str, ...] = ()
        defaults: dict[str, Any] = {}
        for base in bases:
            inherited += getattr(base, "_fields", ())
            defaults.update(getattr(base, "_defaults", {}))
        defaults.update({field: namespace.pop(field) for field in own if field in namespace})
        fields = inherited + own
        first_default = next((i for i, field in enumerate(fields) if field in defaults), len(fields))
        if any(field not in defaults for field in fields[first_default:]):
            raise TypeError(f"{name}: a field without a default follows one with a default")
        namespace.update(__slots__=own, _fields=fields, _defaults=defaults, __match_args__=fields)
        return super().__new__(mcs, name, bases, namespace)


@dataclass_transform(eq_default=True, frozen_default=True)
class Value(metaclass=_ValueType):
    """Fields set once by the constructor (positionally or by name); compared, hashed and shown by value."""

    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]]
    _defaults: ClassVar[dict[str, Any]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        fields = self._fields
        if args:
            if len(args) > len(fields) or kwargs.keys() & fields[: len(args)]:
                raise TypeError(f"{type(self).__name__}() got too many or repeated arguments")
            kwargs.update(zip(fields, args, strict=False))
        values = self._defaults | kwargs
        try:
            for field in fields:
                object.__setattr__(self, field, values[field])
        except KeyError as missing:
            raise TypeError(f"{type(self).__name__}() missing argument {missing}") from None
        if len(values) > len(fields):
            raise TypeError(
                f"{type(self).__name__}() got unexpected arguments {sorted(values.keys() - fields)}"
            )

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, field) for field in self._fields)

    def _key(self) -> tuple[Any, ...]:
        """What equality and hashing compare: every field, unless a subclass says otherwise."""
        return self._values()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Value) or type(other) is not type(self):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        shown = ", ".join(f"{field}={getattr(self, field)!r}" for field in self._fields)
        return f"{type(self).__name__}({shown})"

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable: use replace() for a changed copy")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __reduce__(self) -> tuple[type[Value], tuple[Any, ...]]:
        return type(self), self._values()  # copy and pickle go through the constructor


def as_dict(value: Value) -> dict[str, Any]:
    """The fields of `value` by name, in declaration order."""
    return {field: getattr(value, field) for field in value._fields}
