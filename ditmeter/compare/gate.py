"""Relative error and the gate: analytic tensor FLOPs vs FlopCounterMode, per module.

``rel_error = |analytic - measured| / measured``. When ``measured`` is 0 the
error is 0 if ``analytic`` is 0 too, and undefined (``None``, a failure at any
tolerance) otherwise: the rules count work the model never runs.

The gate compares every module where either side is non-zero, from single
leaves up to the root (the end-to-end total, which also holds the FLOPs of
unmatched nodes). It fails when any compared module's error is undefined or
above the tolerance, when any unmatched node carries FLOPs, or when nothing was
compared at all.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import pandas as pd

from ditmeter.analytic.parallel import CollectiveSpec
from ditmeter.analytic.tree import layer_pattern
from ditmeter.compare.kernels import KernelCheck
from ditmeter.compare.mapping import STATUSES
from ditmeter.compare.parallel import Measured, collective_mismatches

REL_ERROR_RULE = (
    "|analytic - measured| / measured; 0 when both are 0; undefined (null, a gate failure) "
    "when only measured is 0"
)

#: How many modules the compare table shows by default (worst first).
WORST_SHOWN = 15


def rel_error(analytic: int, measured: int) -> float | None:
    """|analytic - measured| / measured; 0 when both are 0; None when only measured is 0."""
    if measured:
        return abs(analytic - measured) / measured
    return 0.0 if analytic == 0 else None


@attrs.frozen
class ModuleCheck:
    module_id: str
    kind: str
    analytic: int
    measured: int
    rel_error: float | None
    passed: bool


@attrs.frozen
class Coverage:
    """Nodes per status (``costed``, ``zero``, ``unmatched``) and their measured FLOPs."""

    nodes: dict[str, int]
    flops: dict[str, int]
    unmatched_flop_nodes: tuple[str, ...]  # "node (op in module path)" of each failing node

    @property
    def total_flops(self) -> int:
        return sum(self.flops.values())


@attrs.frozen
class LayerCheck:
    """The copies of one layer across repeated blocks (``blocks.*.ffn.0``), as one row."""

    layer: str
    kind: str
    count: int
    analytic: int  # summed over the copies
    measured: int
    max_error: float | None  # None when some copy's error is undefined
    worst: str  # the copy with the worst error
    failed: int  # copies over tolerance

    @property
    def passed(self) -> bool:
        return self.failed == 0


@attrs.frozen
class Verdict:
    tolerance: float
    checks: tuple[ModuleCheck, ...]  # compared modules, worst first
    coverage: Coverage
    repeated: tuple[str, ...] = ()  # ids of repeated modules (``dit.blocks``)
    roots: tuple[str, ...] = ()  # each stage's root module id (the stage's name)
    #: peak live activation bytes per stage, analytic vs the real module's tensor lifetimes
    memory: tuple[ModuleCheck, ...] = ()
    #: under a parallel plan: the traced rank's collectives against the plan's, exactly (kinds
    #: compared, and one line per kind and size that differs)
    collectives_compared: int = 0
    collective_mismatches: tuple[str, ...] = ()
    #: the eager kernels of one repeated unit of the forward stage (a DiT block) against the real
    #: module's launches (``compare/kernels.py``); None: not checked (a plan, an older run)
    kernels: KernelCheck | None = None

    def layers(self) -> list[LayerCheck]:
        """Checks grouped by layer across repeated blocks, worst first (the worst copy first)."""
        groups: dict[str, list[ModuleCheck]] = {}
        for c in self.checks:  # already worst first, so each group's first member is its worst
            groups.setdefault(layer_pattern(c.module_id, self.repeated), []).append(c)
        out = [
            LayerCheck(
                layer=name,
                kind=members[0].kind,
                count=len(members),
                analytic=sum(c.analytic for c in members),
                measured=sum(c.measured for c in members),
                max_error=members[0].rel_error,
                worst=members[0].module_id,
                failed=sum(not c.passed for c in members),
            )
            for name, members in groups.items()
        ]
        return sorted(out, key=lambda g: (*_worst_first(g.max_error, g.analytic, g.measured), g.layer))

    @property
    def failures(self) -> tuple[ModuleCheck, ...]:
        return tuple(c for c in self.checks if not c.passed)

    @property
    def passed(self) -> bool:
        """Every compared module within tolerance, no unmatched node with FLOPs, and something
        compared at all (an empty run proves nothing)."""
        return (
            bool(self.checks)
            and not self.failures
            and not self.coverage.unmatched_flop_nodes
            and all(c.passed for c in self.memory)
            and not self.collective_mismatches
            and (self.kernels is None or not self.kernels.mismatches())
        )

    @property
    def max_error(self) -> float | None:
        """Largest defined error over compared modules (None if some error is undefined)."""
        if any(c.rel_error is None for c in self.checks):
            return None
        return max((c.rel_error for c in self.checks if c.rel_error is not None), default=0.0)

    def end_to_end(self, root: str) -> ModuleCheck | None:
        """The check of one whole run of a stage: its root module (``dit``)."""
        return next((c for c in self.checks if c.module_id == root), None)

    def stage_totals(self) -> list[ModuleCheck]:
        """The end-to-end check of every stage, in the order the stages run."""
        by_id = {c.module_id: c for c in self.checks}
        return [by_id[r] for r in self.roots if r in by_id]


def _worst_first(err: float | None, analytic: int, measured: int) -> tuple[int, float, int, int]:
    """Undefined errors, then the largest error, the largest gap, the most FLOPs."""
    return (0 if err is None else 1, -(err or 0.0), -abs(analytic - measured), -measured)


def coverage(nodes: pd.DataFrame) -> Coverage:
    """Counts and FLOPs per node status, and the unmatched nodes that carry FLOPs."""
    counts = {s: int((nodes["status"] == s).sum()) for s in STATUSES}
    flops = {s: int(nodes.loc[nodes["status"] == s, "measured_flops"].sum()) for s in STATUSES}
    bad = nodes[(nodes["status"] == "unmatched") & (nodes["measured_flops"] > 0)]
    named = tuple(f"{r.node} ({r.op} in {r.module_path or '<root>'!r})" for r in bad.itertuples())
    return Coverage(counts, flops, named)


def memory_checks(pairs: dict[str, tuple[int, int]], tolerance: float) -> tuple[ModuleCheck, ...]:
    """``{stage: (analytic, measured)}`` peak live activation bytes → one check per stage."""
    out = []
    for stage, (analytic, measured) in pairs.items():
        err = rel_error(analytic, measured)
        out.append(
            ModuleCheck(stage, "memory", analytic, measured, err, err is not None and err <= tolerance)
        )
    return tuple(out)


def evaluate(
    modules: pd.DataFrame,
    nodes: pd.DataFrame,
    tolerance: float,
    memory: dict[str, tuple[int, int]] | None = None,
    collectives: tuple[Sequence[CollectiveSpec], Sequence[Measured]] | None = None,
    kernels: KernelCheck | None = None,
) -> Verdict:
    """The gate over ``modules.parquet`` and ``nodes.parquet`` rows of one traced run, the
    ``memory`` pairs ``{stage: (analytic, measured)}`` of peak live activation bytes, under a
    parallel plan the ``collectives`` (the plan's, the traced rank's), and the eager ``kernels``
    of one unit of the forward stage."""
    checks: list[ModuleCheck] = []
    for r in modules.itertuples():
        analytic, measured = int(r.tensor_flops), int(r.measured_flops)
        if analytic == 0 and measured == 0:
            continue
        err = rel_error(analytic, measured)
        checks.append(
            ModuleCheck(r.module_id, r.kind, analytic, measured, err, err is not None and err <= tolerance)
        )
    checks.sort(key=lambda c: _worst_first(c.rel_error, c.analytic, c.measured))
    repeated = tuple(modules.loc[modules["kind"] == "repeated", "module_id"])
    roots = tuple(modules.loc[modules["parent_id"].isna(), "module_id"])
    mem = memory_checks(memory or {}, tolerance)
    planned, traced = collectives or ((), ())
    kinds = len({(c.op, c.group_size, c.input_bytes, c.output_bytes) for c in planned} | set(traced))
    mismatches = tuple(collective_mismatches(planned, traced))
    cov = coverage(nodes)
    return Verdict(tolerance, tuple(checks), cov, repeated, roots, mem, kinds, mismatches, kernels)
