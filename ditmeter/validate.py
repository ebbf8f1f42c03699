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


def _positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise FieldError(name, f"must be a positive integer, got {value!r}")


def positive_int(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    _positive(attribute.name, value)


def whole_number(minimum: int) -> Validator:
    """An int (not a bool) of at least ``minimum``."""

    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise FieldError(attribute.name, f"must be a whole number >= {minimum}, got {value!r}")

    return check


def finite_number(minimum: float, *, strict: bool = False, hint: str = "") -> Validator:
    """A finite real number >= ``minimum`` (> with ``strict``); ``hint`` is added to the message."""

    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not math.isfinite(value) or value < minimum or (strict and value == minimum):
            bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
            raise FieldError(attribute.name, f"must be a finite number {bound}{hint}, got {value!r}")

    return check


def one_of(*allowed: str) -> Validator:
    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value not in allowed:
            raise FieldError(attribute.name, f"{value!r} not allowed; allowed: {', '.join(allowed)}")

    return check


def int_tuple(length: int | None = None) -> Validator:
    """A tuple of positive integers (``length`` of them when given)."""

    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        ok = isinstance(value, tuple) and (length is None or len(value) == length) and len(value) > 0
        if ok:
            for i, item in enumerate(value):
                _positive(f"{attribute.name}[{i}]", item)
            return
        what = f"a list of {length} positive integers" if length else "a list of positive integers"
        raise FieldError(attribute.name, f"must be {what}, got {_plain(value)!r}")

    return check


def bool_tuple(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, tuple) or not all(isinstance(v, bool) for v in value):
        raise FieldError(attribute.name, f"must be a list of booleans, got {_plain(value)!r}")


def as_tuple(value: Any) -> Any:
    """Converter: a list from YAML becomes a tuple; anything else is left for the validator to refuse."""
    return tuple(value) if isinstance(value, list | tuple) else value


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def parse(cls: type[T], raw: Any, section: str, **given: Any) -> T:
    """Build ``cls`` from the mapping ``raw`` (the config section ``section``).

    Keys of ``raw`` that are not fields of ``cls`` are ignored (Hydra refuses
    unknown keys on the command line); ``given`` supplies fields that do not
    come from ``raw``. A required field that is missing or null, or any
    validator failure, raises :class:`ConfigError` naming ``section.field``.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(section, "missing (required section)")
    values: dict[str, Any] = {}
    for field in attrs.fields(cls):  # type: ignore[arg-type]
        if not field.init:
            continue
        if field.name in given:
            values[field.name] = given[field.name]
        elif raw.get(field.name) is not None:
            values[field.name] = raw[field.name]
        elif field.default is attrs.NOTHING:
            raise ConfigError(f"{section}.{field.name}", "missing (required key)")
    try:
        return cls(**values)
    except FieldError as exc:
        raise ConfigError(f"{section}.{exc.field}", exc.message) from None
