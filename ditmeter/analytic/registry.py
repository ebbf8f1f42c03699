"""One registry of cost rules, one source of truth.

``register_rule`` refuses a second rule under the same name (like torch's
``register_flop_formula``). ``register_zero`` marks an operation that truly
costs nothing (fvcore's ignored set), so "unknown" is never confused with
"free": a name that is in neither table is unmatched. A rule may name ``layout`` dims: how the
eager code lays its kernels out (a cache's clone, a ``stack``, a concatenation per call), which a
leaf carries for its eager recipe (``models/*/eager*.py``) and the cost does not read, so
:func:`apply_rule` passes them to the recipe only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from ditmeter.analytic.cost import Cost

RuleFn = Callable[..., Cost]
F = TypeVar("F", bound=RuleFn)

RULES: dict[str, RuleFn] = {}
ZERO_RULES: dict[str, str] = {}
#: Per rule, the dims only its eager kernels read (``register_rule(..., layout=...)``)
LAYOUT_DIMS: dict[str, frozenset[str]] = {}


def register_rule(name: str, layout: tuple[str, ...] = ()) -> Callable[[F], F]:
    """Register ``fn`` as the cost rule called ``name``; duplicates are refused. ``layout``: dims
    a leaf of this rule may carry for its eager kernels alone (never passed to ``fn``)."""

    def wrap(fn: F) -> F:
        if name in RULES or name in ZERO_RULES:
            raise ValueError(f"cost rule {name!r} is already registered")
        RULES[name] = fn
        if layout:
            LAYOUT_DIMS[name] = frozenset(layout)
        return fn

    return wrap


def register_zero(name: str, why: str) -> None:
    """Mark ``name`` as costing zero FLOPs and zero bytes, with the reason."""
    if name in RULES or name in ZERO_RULES:
        raise ValueError(f"cost rule {name!r} is already registered")
    ZERO_RULES[name] = why


def apply_rule(name: str, **dims: Any) -> Cost:
    """Cost of rule ``name`` at the given dims (its ``layout`` dims left out: the eager kernels'
    alone); zero rules return an empty cost."""
    if name in ZERO_RULES:
        return Cost()
    try:
        fn = RULES[name]
    except KeyError:
        raise KeyError(f"no cost rule named {name!r}") from None
    layout = LAYOUT_DIMS.get(name)
    return fn(**{k: v for k, v in dims.items() if k not in layout}) if layout else fn(**dims)
