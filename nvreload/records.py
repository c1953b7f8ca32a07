"""Typed records for the values on the --status path, at a fraction of dataclasses' start-up cost.

`@record` takes a class written as a dataclass is (annotated fields, defaults, `field(...)`) and
gives it what nvreload's values use of a dataclass: an __init__ taking the fields by position or
name, __eq__ and __repr__ over them, `frozen` (with a __hash__), `field(default_factory=...,
compare=False)`, `fields()`, and dataclasses.replace() works on them. It does this with a few
shared functions instead of compiling new source per class: importing `dataclasses` costs the
status path about 11 ms (it imports inspect, ast and dis), and creating the classes with it another
8 ms, on every `nvreload --status --json` monitoring runs on every node. Type checkers read the
classes as dataclasses (typing.dataclass_transform). No order, slots, kw_only or __post_init__:
nvreload's values use none of them."""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: importing typing costs the --status path
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    from typing_extensions import dataclass_transform

    T = TypeVar("T")
else:

    def dataclass_transform(**_kwargs):
        return lambda decorator: decorator


_MISSING = object()


class Field:
    """One field of a record: its name, its default (or a factory for one), and whether it counts
    in equality and hashing. Its `_field_type` and `init` are what dataclasses.replace() reads."""

    __slots__ = ("name", "default", "default_factory", "compare", "hash", "repr", "init", "_field_type")

    def __init__(
        self,
        default: object = _MISSING,
        default_factory: Callable[[], object] | object = _MISSING,
        compare: bool = True,
        hash: bool | None = None,
        repr: bool = True,
    ) -> None:
        self.name = ""
        self.default = default
        self.default_factory = default_factory
        self.compare = compare
        self.hash = compare if hash is None else hash
        self.repr = repr
        self.init = True
        self._field_type = None  # neither a ClassVar nor an InitVar, for dataclasses.replace


def field(
    *,
    default: Any = _MISSING,
    default_factory: Any = _MISSING,
    compare: bool = True,
    hash: bool | None = None,
    repr: bool = True,
) -> Any:
    return Field(default, default_factory, compare, hash, repr)


def fields(instance_or_class: object) -> tuple[Field, ...]:
    return tuple(type.__getattribute__(_class_of(instance_or_class), "__record_fields__"))


def replace(instance: T, **changes: Any) -> T:
    """A copy of the record `instance` with `changes` (dataclasses.replace, typed for records)."""
    values = {s.name: getattr(instance, s.name) for s in fields(instance)}
    values.update(changes)
    return type(instance)(**values)


def _class_of(value: object) -> type:
    return value if isinstance(value, type) else type(value)


def _is_class_var(annotation: object) -> bool:
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    return isinstance(text, str) and text.replace("typing.", "").startswith("ClassVar")


def _collect(cls: type) -> tuple[Field, ...]:
    found: dict[str, Field] = {}
    for base in reversed(cls.__mro__[1:]):
        for inherited in base.__dict__.get("__record_fields__", ()):
            found[inherited.name] = inherited
    for name, annotation in cls.__dict__.get("__annotations__", {}).items():
        if _is_class_var(annotation):
            continue
        value = cls.__dict__.get(name, _MISSING)
        spec = value if isinstance(value, Field) else Field(default=value)
        spec.name = name
        if isinstance(value, Field):  # the class keeps a plain default, as a dataclass does
            if spec.default is _MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, spec.default)
        found[name] = spec
    ordered = tuple(found.values())
    seen_default = False
    for spec in ordered:
        has_default = spec.default is not _MISSING or spec.default_factory is not _MISSING
        if seen_default and not has_default:
            raise TypeError(f"{cls.__name__}: non-default field {spec.name!r} follows a default one")
        seen_default = seen_default or has_default
    return ordered


def _init(self: object, *args: object, **kwargs: object) -> None:
    specs = type(self).__record_fields__  # type: ignore[attr-defined]
    if len(args) > len(specs):
        raise TypeError(f"{type(self).__name__}() takes {len(specs)} arguments, {len(args)} given")
    put = object.__setattr__
    for index, spec in enumerate(specs):
        name = spec.name
        if index < len(args):
            if name in kwargs:
                raise TypeError(f"{type(self).__name__}() got two values for {name!r}")
            value = args[index]
        elif name in kwargs:
            value = kwargs.pop(name)
        elif spec.default is not _MISSING:
            value = spec.default
        elif spec.default_factory is not _MISSING:
            value = spec.default_factory()
        else:
            raise TypeError(f"{type(self).__name__}() missing the argument {name!r}")
        put(self, name, value)
    if kwargs:  # what is left named no field
        raise TypeError(f"{type(self).__name__}() got an unexpected argument {next(iter(kwargs))!r}")


def _compared(self: object) -> tuple:
    return tuple(getattr(self, s.name) for s in type(self).__record_fields__ if s.compare)  # type: ignore[attr-defined]


def _eq(self: object, other: object) -> bool:
    if other.__class__ is not self.__class__:
        return NotImplemented
    return _compared(self) == _compared(other)


def _hash(self: object) -> int:
    return hash(tuple(getattr(self, s.name) for s in type(self).__record_fields__ if s.hash))  # type: ignore[attr-defined]


def _repr(self: object) -> str:
    shown = ", ".join(f"{s.name}={getattr(self, s.name)!r}" for s in type(self).__record_fields__ if s.repr)  # type: ignore[attr-defined]
    return f"{type(self).__qualname__}({shown})"


class FrozenRecordError(AttributeError):
    """A field of a frozen record was assigned (dataclasses' FrozenInstanceError is one too)."""


def _frozen_setattr(self: object, name: str, value: object) -> None:
    raise FrozenRecordError(f"cannot assign to field {name!r}")


def _frozen_delattr(self: object, name: str) -> None:
    raise FrozenRecordError(f"cannot delete field {name!r}")


@dataclass_transform(field_specifiers=(field, Field))
def record(cls: type[T] | None = None, /, *, frozen: bool = False) -> Any:
    """@record or @record(frozen=True) on a class written as a dataclass."""

    def wrap(klass: type[T]) -> type[T]:
        specs = _collect(klass)
        klass.__record_fields__ = specs  # type: ignore[attr-defined]
        # what dataclasses.replace() and is_dataclass() look for
        klass.__dataclass_fields__ = {s.name: s for s in specs}  # type: ignore[attr-defined]
        klass.__init__ = _init  # type: ignore[method-assign]
        if "__eq__" not in klass.__dict__:
            klass.__eq__ = _eq  # type: ignore[method-assign]
        if "__repr__" not in klass.__dict__:
            klass.__repr__ = _repr  # type: ignore[method-assign]
        if frozen:
            klass.__setattr__ = _frozen_setattr  # type: ignore[method-assign]
            klass.__delattr__ = _frozen_delattr  # type: ignore[method-assign]
            klass.__hash__ = _hash  # type: ignore[method-assign]
        elif "__hash__" not in klass.__dict__:
            # mutable and compared by value: unhashable, as a dataclass
            klass.__hash__ = None  # type: ignore[assignment]
        return klass

    return wrap if cls is None else wrap(cls)
