"""Typed records from config sections: attrs validators that name the bad field.

A record class declares its fields with the validators below; :func:`parse`
builds it from one config section (a mapping) and turns the first failure
into a :class:`~ditmeter.errors.ConfigError` naming ``section.field``
(``workload.num_frames: must be a positive integer, got 0``). Validators raise
:class:`FieldError`, which knows only the field's own name; the section is
added where the record is parsed, so one record class serves wherever it sits
in the config tree.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, TypeVar

import attrs

from ditmeter.errors import ConfigError

T = TypeVar("T")
Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]


class FieldError(ValueError):
    """A field of a record holds a value that is not allowed (``field`` is relative to the record)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _whole(value: Any) -> int | None:
    """The whole number ``value`` is: an int (not a bool), or a float without a fraction (``1e9``
    from the command line or YAML, which read it as a float); None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if not isinstance(value, float) or not value.is_integer():
        return None
    return int(Decimal(repr(value)))  # as written: 1e23, not the float's 99999999999999991611392


def _exact(name: str, value: Any, number: int) -> None:
    """Refuse a float that is a whole number (``1e9``), naming the integer to write: an int field
    never converts, so no float reaches the counts computed from it."""
    if not isinstance(value, int):
        raise FieldError(name, f"write it as an integer: {number}")


def _positive(name: str, value: Any) -> int:
    """The positive whole number ``value`` is (a float such as ``1e9`` included, for the bounds to
    be checked before :func:`_exact` refuses it); anything else is refused."""
    number = _whole(value)
    if number is None or number <= 0:
        raise FieldError(name, f"must be a positive integer, got {value!r}")
    return number


def positive_int(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    _exact(attribute.name, value, _positive(attribute.name, value))


def whole_number(minimum: int, maximum: int | None = None) -> Validator:
    """An int (not a bool) of at least ``minimum`` (and at most ``maximum``)."""

    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        number = _whole(value)
        if number is None or number < minimum or (maximum is not None and number > maximum):
            allowed = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum:,}"
            raise FieldError(attribute.name, f"must be a whole number {allowed}, got {value!r}")
        _exact(attribute.name, value, number)

    return check


def positive_int_at_most(maximum: int, why: str | None = None) -> Validator:
    """A positive int no larger than ``maximum``: beyond it a run cannot answer fast, or its files
    grow without need. Refused as ``N exceeds MAX (why)``, or without ``why`` as ``N not allowed;
    allowed: 1 to MAX``."""

    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        number = _positive(attribute.name, value)
        if number > maximum and why:
            raise FieldError(attribute.name, f"{number:,} exceeds {maximum:,} ({why})")
        if number > maximum:
            raise FieldError(attribute.name, f"{number} not allowed; allowed: 1 to {maximum:,}")
        _exact(attribute.name, value, number)

    return check


def finite_number(
    minimum: float, *, strict: bool = False, maximum: float | None = None, hint: str = ""
) -> Validator:
    """A finite real number >= ``minimum`` (> with ``strict``; <= ``maximum`` when given);
    ``hint`` is added to the message."""

    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        number = isinstance(value, int | float) and not isinstance(value, bool)
        low = number and (value < minimum or (strict and value == minimum))
        high = number and maximum is not None and value > maximum
        if not number or not math.isfinite(value) or low or high:
            bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
            if maximum is not None:
                bound += f" and <= {maximum:g}"
            raise FieldError(attribute.name, f"must be a finite number {bound}{hint}, got {value!r}")

    return check


def printable(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """One line of printable text: a name from a file that the terminal, tables and plots show (a line
    break or a terminal escape in it would break them)."""
    if not str(value).isprintable():
        raise FieldError(attribute.name, f"{value!r} must be one line of printable text")


def one_of(*allowed: str) -> Validator:
    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value not in allowed:
            raise FieldError(attribute.name, f"{value!r} not allowed; allowed: {', '.join(allowed)}")

    return check


def int_tuple(length: int | None = None, max_length: int | None = None) -> Validator:
    """A tuple of positive integers (``length`` of them, or at most ``max_length``, when given)."""

    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        ok = isinstance(value, tuple) and (length is None or len(value) == length) and len(value) > 0
        if ok and (max_length is None or len(value) <= max_length):
            for i, item in enumerate(value):
                _exact(f"{attribute.name}[{i}]", item, _positive(f"{attribute.name}[{i}]", item))
            return
        what = f"a list of {length} positive integers" if length else "a list of positive integers"
        if max_length is not None:
            what += f" (at most {max_length})"
        raise FieldError(attribute.name, f"must be {what}, got {_plain(value)!r}")

    return check


def boolean(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, bool):
        raise FieldError(attribute.name, f"{_plain(value)!r} not allowed; allowed: true, false")


def bool_tuple(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, tuple) or not all(isinstance(v, bool) for v in value):
        raise FieldError(attribute.name, f"must be a list of booleans, got {_plain(value)!r}")


def as_tuple(value: Any) -> Any:
    """Converter: a list from YAML becomes a tuple; anything else is left for the validator to refuse."""
    return tuple(value) if isinstance(value, list | tuple) else value


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


class _Null:
    """What a validator is shown for a key given as null: its message then reads ``got null``."""

    def __repr__(self) -> str:
        return "null"


def _null_refused(field: attrs.Attribute[Any], name: str) -> ConfigError:
    """A key given as null whose field has a non-null default: null would silently mean the
    default, so it is refused, the field's validator naming what is allowed."""
    message = "null not allowed; leave the key out for its default"
    if field.validator is not None:
        try:
            field.validator(None, field, _Null())
        except FieldError as exc:
            message = exc.message
        except (AttributeError, TypeError):  # a validator that reads the record: the plain message
            pass
    return ConfigError(name, message)


def parse(
    cls: type[T], raw: Any, section: str, *, hidden: Mapping[str, str] | None = None, **given: Any
) -> T:
    """Build ``cls`` from the mapping ``raw`` (the config section ``section``; "" for top-level keys).

    Every key of ``raw`` must be a field of ``cls`` (a key that would do
    nothing is refused); ``given`` supplies fields that do not come from
    ``raw``; ``hidden`` maps keys a user may not set here (fields that are
    ``given`` only, retired keys) to why: such a key of ``raw`` is refused with
    that reason, and never listed as allowed. A required field that is missing or null, a null
    where the field's default is not null (null means nothing there), or any validator failure,
    raises :class:`ConfigError` naming ``section.field``.
    """

    def name(field: str) -> str:
        return f"{section}.{field}" if section else field

    if not isinstance(raw, Mapping):
        keys = ", ".join(f.name for f in attrs.fields(cls) if f.init)  # type: ignore[arg-type]
        what = "missing or null" if raw is None else f"got {raw!r}"
        raise ConfigError(section, f"{what}; must be a section of keys ({keys})")
    fields = {f.name: f for f in attrs.fields(cls) if f.init}  # type: ignore[arg-type]
    hidden = hidden or {}
    for key in raw:
        if key in hidden:
            raise ConfigError(name(str(key)), hidden[key])
    allowed = [f for f in fields if f not in hidden]
    unknown = [str(k) for k in raw if k not in allowed]
    if unknown:
        raise ConfigError(name(unknown[0]), f"not a known key; allowed: {', '.join(allowed)}")
    values: dict[str, Any] = {}
    for field in fields.values():
        if field.name in given:
            values[field.name] = given[field.name]
        elif raw.get(field.name) is not None:
            values[field.name] = raw[field.name]
        elif field.name in raw and field.default is not None:
            raise _null_refused(field, name(field.name))
        elif field.default is attrs.NOTHING:
            raise ConfigError(name(field.name), "missing (required key)")
    try:
        return cls(**values)
    except FieldError as exc:
        raise ConfigError(name(exc.field), exc.message) from None
