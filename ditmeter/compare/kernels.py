"""The eager kernels of one repeated unit of a stage (a DiT block) against the kernels its real
module launched: the same launches, op by op, dtype and bytes, exactly.

The analytic side sums the eager recipes (:mod:`ditmeter.analytic.eager`) over the leaves of the
unit's template (``blocks.*.…``) for the reference's flavour (diffusers: the module ``trace``
builds); the measured side is ``tracer.kernels`` run on that module: every aten op that moves
data inside the unit (``blocks.1``), SDPA as the flash kernel a GPU runs. A launch is keyed by
(op, dtype, bytes); attention kernels by ``attention`` (the recipe names the fused kernel, the
capture its aten op). Per unit, not per leaf: a unit's casts sit at module boundaries that the
recipes and the node mapping may draw differently.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import attrs

from ditmeter.analytic.eager import eager_calls
from ditmeter.analytic.tree import ModuleRow

Launch = tuple[str, str, int]  # op, dtype, bytes of one launch


@attrs.frozen
class KernelCheck:
    """One unit's launches, analytic and measured (``(op, dtype, bytes) → count``)."""

    unit: str  # the reference's module path of the unit (``blocks.1``)
    analytic: dict[Launch, int]
    measured: dict[Launch, int]

    @property
    def launches(self) -> int:
        return sum(self.measured.values())

    def mismatches(self) -> list[str]:
        """One line per launch kind whose count differs (none: exact)."""
        keys = sorted(set(self.analytic) | set(self.measured))
        return [
            f"{self.unit}: {op} {dtype} {size:,} B × {self.analytic.get(k, 0)} in the recipes, "
            f"× {self.measured.get(k, 0)} launched"
            for k in keys
            for op, dtype, size in [k]
            if self.analytic.get(k, 0) != self.measured.get(k, 0)
        ]

    def as_json(self) -> dict[str, object]:
        pairs = [(list(k), n) for k, n in sorted(self.analytic.items())]
        return {
            "unit": self.unit,
            "analytic": pairs,
            "measured": [(list(k), n) for k, n in sorted(self.measured.items())],
        }


def recipe_launches(
    rows: Iterable[ModuleRow], template: str, flavour: str, stage: str, act: str
) -> dict[Launch, int]:
    """The recipes' launches summed over the leaves under ``template`` (``blocks.*``) of a compact
    walk; a leaf with no recipe counts as one launch of its rule (so it shows as a mismatch)."""
    out: Counter[Launch] = Counter()
    for r in rows:
        if r.kind != "leaf" or not r.module_id.startswith(template + "."):
            continue
        calls = eager_calls(flavour, stage, r.module_id, r.rule, dict(r.dims), act)
        if calls is None:
            out[(f"<no recipe: {r.rule}>", "", 0)] += 1
            continue
        for c in calls:
            out[("attention" if c.kind == "attention" else c.op, c.dtype, c.bytes)] += c.count
    return dict(out)


def launched(ops: Iterable[tuple[str, str, int]]) -> dict[Launch, int]:
    """Captured launches (op, dtype, bytes) counted, attention ops under one name."""
    return dict(Counter(("attention" if "attention" in op else op, dtype, size) for op, dtype, size in ops))
