"""The gate's verdict as tables and lines: the same model on the terminal and in ``summary.md``."""

from __future__ import annotations

from ditmeter.compare.gate import Verdict
from ditmeter.compare.mapping import STATUSES
from ditmeter.reports.format import grouped, percent, si
from ditmeter.reports.table_model import Column, Row, Strong, Table, table


def error_text(err: float | None) -> str:
    """A relative error for people: ``0 (exact)``, ``1.2e-06``, ``3.10%``, or ``undefined``."""
    if err is None:
        return "undefined (measured 0)"
    if err == 0:
        return "0 (exact)"
    return f"{err:.2e}" if err < 1e-4 else f"{100 * err:.2f}%"


def coverage_table(verdict: Verdict) -> Table:
    """Traced nodes per status (costed, zero, unmatched) and the FLOPs they carry."""
    cov = verdict.coverage
    rows = [
        (
            status,
            grouped(cov.nodes[status]),
            grouped(cov.flops[status]),
            percent(cov.flops[status], cov.total_flops),
        )
        for status in STATUSES
    ]
    columns = (Column("node status", "left"), Column("nodes"), Column("measured FLOPs"), Column("share"))
    return table("node coverage", columns, rows)


def layers_table(verdict: Verdict, shown: int) -> Table:
    """The ``shown`` worst layers (copies across blocks grouped: ``dit.blocks.*.ffn.0``)."""
    layers = verdict.layers()
    rows = [
        Row(
            (
                g.layer,
                str(g.count),
                si(g.analytic, "FLOP"),
                si(g.measured, "FLOP"),
                grouped(g.measured - g.analytic),
                error_text(g.max_error),
                g.worst,
                "ok" if g.passed else Strong(f"FAIL {g.failed}/{g.count}"),
            ),
            None if g.passed else "fail",
        )
        for g in layers[:shown]
    ]
    columns = (
        Column("module", "left", code=True),
        Column("×"),
        Column("analytic"),
        Column("measured"),
        Column("Δ FLOPs"),
        Column("max error"),
        Column("worst copy", "left", code=True, terminal=False),
        Column("gate", "left"),
    )
    title = (
        f"modules by layer, worst first ({min(shown, len(layers))} of {len(layers)} layers, "
        f"{len(verdict.checks)} modules compared; × = copies across blocks)"
    )
    return table(title, columns, rows)


def stage_lines(verdict: Verdict) -> list[str]:
    """One line per stage: the analytic and measured FLOPs of one whole run, and the error."""
    return (
        [
            f"end to end, one run of {c.module_id}: analytic {grouped(c.analytic)} vs measured "
            f"{grouped(c.measured)} FLOPs, error {error_text(c.rel_error)}"
            for c in verdict.stage_totals()
        ]
        + [
            f"peak live activations of one {c.module_id} run: analytic {grouped(c.analytic)} vs measured "
            f"{grouped(c.measured)} bytes, error {error_text(c.rel_error)}" + ("" if c.passed else " — FAIL")
            for c in verdict.memory
        ]
        + collective_lines(verdict)
        + kernel_lines(verdict)
    )


def kernel_lines(verdict: Verdict) -> list[str]:
    """Whether the eager recipes of one unit are the kernels its real module launched."""
    k = verdict.kernels
    if k is None:
        return []
    bad = k.mismatches()
    if not bad:
        return [
            f"eager kernels of {k.unit} of the traced (diffusers) module: {k.launches} launches, "
            "exactly the recipes' (op, dtype, bytes)"
        ]
    return [f"eager kernel differs: {line} — FAIL" for line in bad]


def collective_lines(verdict: Verdict) -> list[str]:
    """Under a parallel plan: whether the traced rank's collectives are the plan's, and which differ."""
    if not verdict.collectives_compared:
        return []
    if not verdict.collective_mismatches:
        return [f"collectives of the traced rank: {verdict.collectives_compared} kinds, exactly the plan's"]
    return [f"collective differs from the plan: {line} — FAIL" for line in verdict.collective_mismatches]


def verdict_line(verdict: Verdict) -> str:
    """``gate: PASS at tolerance 5%, max error 0 (exact)`` and, on failure, why."""
    reasons = []
    if verdict.failures:
        worst = ", ".join(c.module_id for c in verdict.failures[:5])
        more = len(verdict.failures) - 5
        reasons.append(
            f"{len(verdict.failures)} modules over tolerance, worst: {worst}"
            + (f" (+{more} more)" if more > 0 else "")
        )
    bad_memory = [c.module_id for c in verdict.memory if not c.passed]
    if bad_memory:
        reasons.append(f"peak live activations over tolerance: {', '.join(bad_memory)}")
    if verdict.collective_mismatches:
        reasons.append(f"{len(verdict.collective_mismatches)} collectives differ from the plan")
    if verdict.kernels is not None and verdict.kernels.mismatches():
        reasons.append(f"eager kernels of {verdict.kernels.unit} differ from the recipes")
    if verdict.coverage.unmatched_flop_nodes:
        reasons.append(f"{len(verdict.coverage.unmatched_flop_nodes)} unmatched nodes carry FLOPs")
    if not verdict.checks:
        reasons.append("nothing was compared (no module with FLOPs on either side)")
    word = "PASS" if verdict.passed else "FAIL"
    return (
        f"gate: {word} at tolerance {100 * verdict.tolerance:g}%, max error {error_text(verdict.max_error)}"
        + (f" — {'; '.join(reasons)}" if reasons else "")
    )
