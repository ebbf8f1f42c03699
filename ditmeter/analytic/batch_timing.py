"""Every kernel of a stage timed on many devices and plans at once: numpy arrays over the kernels.

The terms of each kernel come from :func:`~ditmeter.analytic.kernel_time.kernel_terms`, the one
branching ``timing.kernel_time`` evaluates on one device; here they are evaluated on every device
and plan at once (``tree_time`` per point costs ~3 ms), for ``ditmeter sweep``. :class:`Timer`
compares the arrays with ``tree_time`` on the first point of each stage, kernel table and plan.
NB: the two sum in different orders (last-bit differences); a disagreement beyond that is a bug
and raises.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np

from ditmeter.analytic.analysis import Analysis, Stage
from ditmeter.analytic.device import DeviceSpec
from ditmeter.analytic.gemm_formats import gemm_format
from ditmeter.analytic.kernel_time import (
    StageKernels,
    TimePlan,
    effective_backend,
    kernel_terms,
    peak_column,
    row_backend,
    stage_peaks,
)
from ditmeter.analytic.kernels import KernelTable
from ditmeter.analytic.methods import quantized_weights
from ditmeter.analytic.timing import Timing, tree_time
from ditmeter.analytic.transfer import Transfer, transfer_s
from ditmeter.analytic.tree import walk

#: Relative agreement asked of the array timing and ``tree_time`` (they sum in different orders).
RTOL = 1e-9


@attrs.frozen
class DevicePlan:
    """A device and the time plan a point runs it under."""

    device: DeviceSpec
    plan: TimePlan


# ---- time: every kernel of a stage on every device and plan at once -------------------------


def _floats(values: Sequence[float]) -> np.ndarray:
    return np.array([float(v) for v in values], dtype=np.float64)


@attrs.frozen(eq=False)
class Leaves:
    """A stage's kernels from a compact walk (a repeated block once, ``copies`` times): its fused
    leaves, or under eager execution each leaf's launches, as arrays."""

    stage: Stage
    rows: tuple[Any, ...]  # the ModuleRows: a leaf, or one eager kernel of it (its launches in copies)
    dtypes: tuple[str, ...]  # the dtype each row runs in
    tensor: np.ndarray  # tensor FLOPs of one copy
    cuda: np.ndarray
    moved: np.ndarray  # bytes read + written
    copies: np.ndarray
    roof_peak: np.ndarray  # the peak column each row computes at (kernel_time.peak_column)
    category: np.ndarray  # index into categories
    categories: tuple[str, ...]
    head_dim: int | None  # the largest head dim (names the attention kernel)
    variant: tuple[object, ...]  # the stage, its dtype, attention and rules: what a check covers


def _kernel_rows(stage: Stage, sk: StageKernels) -> tuple[list[Any], list[str]]:
    """The stage's leaves (compact walk), each eager leaf replaced by its kernels."""
    rows, dtypes = [], []
    for r in walk(stage.tree, expand=False):
        if r.kind != "leaf":
            continue
        calls = sk.calls(r)
        if calls is None:
            rows.append(sk.computed(r))
            dtypes.append(stage.dtype)
            continue
        for row, dtype, count in calls:
            rows.append(sk.computed(row).with_copies(r.copies * count))
            dtypes.append(dtype)
    return rows, dtypes


def _merged(rows: list[Any], dtypes: list[str]) -> tuple[list[Any], list[str]]:
    """The rows with those that time alike (rule, dims, cost, dtype and category: every input of
    the arithmetic) merged into one, their copies summed: the stage's totals and category sums are
    unchanged, and a VAE's per-call kernels, many of one shape, are timed once."""
    index: dict[tuple[Any, ...], int] = {}
    out_rows: list[Any] = []
    out_dtypes: list[str] = []
    for row, dtype in zip(rows, dtypes, strict=True):
        key = (row.rule, row.dims, row.cost, dtype, row.category)
        j = index.get(key)
        if j is None:
            index[key] = len(out_rows)
            out_rows.append(row)
            out_dtypes.append(dtype)
        else:
            out_rows[j] = out_rows[j].with_copies(out_rows[j].copies + row.copies)
    return out_rows, out_dtypes


def _column(row: Any, dtype: str, stage_dtype: str, sk: StageKernels) -> int:
    return peak_column(row.rule, dtype, stage_dtype, row_backend(row, dtype, sk))


def stage_leaves(stage: Stage, sk: StageKernels | None = None) -> Leaves:
    """The stage's kernels as arrays; under eager execution (``sk`` with a flavour) each launch."""
    sk_ = sk or StageKernels(stage.dtype)
    rows_, dtypes_ = _merged(*_kernel_rows(stage, sk_))
    rows, dtypes = tuple(rows_), tuple(dtypes_)
    categories = tuple(dict.fromkeys(str(r.category) for r in rows))
    head_dims = [int(dict(r.dims)["head_dim"]) for r in rows if "head_dim" in dict(r.dims)]
    return Leaves(
        stage,
        rows,
        dtypes,
        _floats([r.cost.tensor_flops for r in rows]),
        _floats([r.cost.cuda_flops for r in rows]),
        _floats([r.cost.moved_bytes for r in rows]),
        _floats([r.copies for r in rows]),
        np.array(
            [
                peak_column(r.rule, d, stage.dtype, row_backend(r, d, sk_))
                for r, d in zip(rows, dtypes, strict=True)
            ],
            np.intp,
        ),
        np.array([categories.index(str(r.category)) for r in rows], dtype=np.intp),
        categories,
        max(head_dims) if head_dims else None,
        (stage.name, stage.dtype, stage.attention, sk, *sorted({str(r.rule) for r in rows})),
    )


@attrs.frozen(eq=False)
class LeafKernels:
    """:func:`~ditmeter.analytic.kernel_time.kernel_terms` of every row of a stage under one
    kernel table: compute = numerator / peak[column] + cuda / CUDA-core peak, memory = traffic /
    bandwidth, and the launch."""

    column: np.ndarray
    numerator: np.ndarray
    cuda: np.ndarray
    traffic: np.ndarray
    launch_s: float
    overlapped: bool


def leaf_kernels(
    lv: Leaves, table: KernelTable, sk: StageKernels, memo: dict[tuple[Any, ...], Any] | None = None
) -> LeafKernels:
    """The terms of every row of ``lv`` run as ``sk`` under ``table`` (``memo``: terms already read,
    by row and dtype)."""
    memo = {} if memo is None else memo
    terms = []
    for row, dtype in zip(lv.rows, lv.dtypes, strict=True):
        key = (row.rule, row.dims, row.cost, dtype, sk.dtype, sk.gemm_dtype, sk.attention, sk.fp32_matmul)
        if key not in memo:
            memo[key] = kernel_terms(row, dtype, sk, table)
        terms.append(memo[key])
    return LeafKernels(
        np.array([t.column for t in terms], dtype=np.intp),
        _floats([t.numerator for t in terms]),
        _floats([t.cuda for t in terms]),
        _floats([t.traffic for t in terms]),
        table.host.per_kernel_s,
        table.host.overlapped,
    )


TIMING_FIELDS = ("compute_s", "memory_s", "overhead_s", "predicted_s", "roofline_s")


def stage_times(
    lv: Leaves,
    kernels: Sequence[LeafKernels | None],
    which: np.ndarray,
    peaks: np.ndarray,
    cuda: np.ndarray,
    bandwidth: np.ndarray,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One run of ``lv``'s stage on P devices: ``which[p]`` indexes ``kernels`` (None: the
    roofline, ``time.mode=roofline`` or no table); ``peaks`` is P×4 FLOP/s (the columns of
    ``kernel_time.stage_peaks``), ``cuda`` and ``bandwidth`` are per device. Returns the Timing
    fields summed over the rows (P values each) and the predicted seconds by category."""
    cuda_s = lv.cuda / cuda[:, None]
    compute = lv.tensor / peaks[:, lv.roof_peak] + cuda_s
    memory = lv.moved / bandwidth[:, None]
    roofline = np.maximum(compute, memory)
    predicted, overhead = roofline.copy(), np.zeros_like(roofline)
    for g, k in enumerate(kernels):
        sel = which == g
        if k is None or not sel.any():
            continue
        c = k.numerator / peaks[sel][:, k.column] + k.cuda / cuda[sel, None]
        m = k.traffic / bandwidth[sel, None]
        kernel = np.maximum(c, m)
        p = np.maximum(kernel, k.launch_s) if k.overlapped else kernel + k.launch_s
        compute[sel], memory[sel], overhead[sel] = c, m, k.launch_s
        predicted[sel] = np.maximum(p, roofline[sel])
    parts = (compute, memory, overhead, predicted, roofline)
    totals = {f: part @ lv.copies for f, part in zip(TIMING_FIELDS, parts, strict=True)}
    onehot = np.zeros((len(lv.rows), len(lv.categories)))
    onehot[np.arange(len(lv.rows)), lv.category] = 1.0
    return totals, (predicted * lv.copies) @ onehot


def _check(lv: Leaves, dp: DevicePlan, sk: StageKernels, got: dict[str, float]) -> None:
    """The arrays against ``tree_time`` (the reference) on one point: a bug, not a user error."""
    want: Timing = tree_time(lv.stage.tree, dp.device, dp.plan, sk)
    for f in TIMING_FIELDS:
        a, b = got[f], getattr(want, f)
        if abs(a - b) > RTOL * max(abs(a), abs(b)) + 1e-300:
            raise RuntimeError(f"sweep: {lv.stage.name} {f} {a!r} != tree_time's {b!r} on {dp.device.name}")


# ---- one analysis on every device and plan -------------------------------------------------


@attrs.frozen(eq=False)
class Evaluated:
    """One analysis on the sweep's P devices and plans: each time column (P values)."""

    analysis: Analysis
    times: dict[str, np.ndarray]  # per_video_s … per_step_s and <stage>_per_video_s
    shares: dict[str, np.ndarray]  # category → share of the forward's predicted time
    backend: tuple[str | None, ...]  # the forward stage's attention kernel
    #: the peak memory per GPU on each device and plan where it differs between them (quantized
    #: weights, gemm_dtype);
    #: None: the analysis's
    peaks: np.ndarray | None = None
    #: the multi-GPU plan each device runs where they differ (``gpus=``: each device's fastest);
    #: None: the analysis's ``parallel.*`` plan on every device
    plan_names: tuple[str, ...] | None = None


class Timer:
    """Times analyses on a list of devices and plans (the P points of one analysis)."""

    def __init__(self, plans: Sequence[DevicePlan]) -> None:
        self.plans = list(plans)
        self.cuda = np.array([dp.device.cuda_flop_per_s for dp in plans])
        self.bandwidth = np.array([dp.device.bytes_per_s for dp in plans])
        tables: list[KernelTable] = []  # equal tables once (each device's load reads its own)
        for dp in plans:
            if dp.plan.kernels is not None and dp.plan.kernels not in tables:
                tables.append(dp.plan.kernels)
        self.tables = tables
        # devices with equal plans share their stage kernels and fractions
        keys = [
            (
                tables.index(t.kernels) if t.kernels is not None else None,
                t.predicted,
                t.attention,
                t.gemm_dtype,
                t.execution,
                t.host.device.name if t.host is not None else None,
                t.fp32_matmul,
            )
            for t in (dp.plan for dp in plans)
        ]
        self.kinds = list(dict.fromkeys(keys))
        self.kind = np.array([self.kinds.index(k) for k in keys], dtype=np.intp)
        self.first = [keys.index(k) for k in self.kinds]  # a device with each plan
        self._memos: list[dict[tuple[Any, ...], Any]] = [{} for _ in tables]  # KernelTerms by row
        self._peaks: dict[tuple[str, tuple[tuple[str | None, str], ...]], np.ndarray] = {}
        self._checked: set[tuple[object, ...]] = set()
        # each stage's rows once per equal stage and kernels: analyses of one sweep share stages (the
        # 1.3B and the 14B decode alike; a VAE's per-call kernels are thousands of rows)
        self._leaves: dict[tuple[Stage, StageKernels], Leaves] = {}
        self._kernels: dict[tuple[Leaves, int, StageKernels], LeafKernels] = {}

    def _stage_leaves(self, stage: Stage, sk: StageKernels) -> Leaves:
        key = (stage, sk)
        if key not in self._leaves:
            self._leaves[key] = stage_leaves(stage, sk)
        return self._leaves[key]

    def _leaf_kernels(self, lv: Leaves, table: int, sk: StageKernels) -> LeafKernels:
        """:func:`leaf_kernels` once per rows, table and stage kernels (a sweep's analyses share their
        text and image encoders' rows)."""
        key = (lv, table, sk)
        if key not in self._kernels:
            self._kernels[key] = leaf_kernels(lv, self.tables[table], sk, self._memos[table])
        return self._kernels[key]

    def _peaks_of(self, dtype: str, sks: Sequence[StageKernels]) -> np.ndarray:
        """P × 5 FLOP/s: each device's TENSOR, GEMM, CONV, F32 and INT8 peak for a stage in ``dtype``."""
        key = (dtype, tuple((sk.gemm_dtype, sk.fp32_matmul) for sk in sks))
        if key not in self._peaks:
            rows = [stage_peaks(self.plans[p].device, sks[k]) for p, k in enumerate(self.kind)]
            self._peaks[key] = np.array(rows)
        return self._peaks[key]

    def stage(
        self, analysis: Analysis, stage: Stage
    ) -> tuple[Leaves, dict[str, np.ndarray], np.ndarray, list[StageKernels]]:
        """One run of ``stage`` on every device and plan. Plans of one execution (and FP8 or not)
        share the stage's kernel rows; under several (``time.execution=[eager,compiled]``) each group is
        timed on its own rows and the totals put back in point order. A stage that runs off the
        GPU (the text encoder under ``offload.t5_cpu``) is timed where ``Analysis.runs_on`` puts it."""
        if any(analysis.runs_on(stage, dp.device, dp.plan)[0] is not dp.device for dp in self.plans):
            return self._off_gpu(analysis, stage)
        sks = [analysis.stage_kernels(stage, self.plans[p].plan) for p in self.first]
        groups: dict[tuple[object, ...], list[int]] = {}
        for k, sk in enumerate(sks):  # the rows differ by execution, FP8's and Sage's quantize kernels
            key = (sk.flavour, sk.stage, gemm_format(sk.gemm_dtype), sk.attention, sk.sparse)
            groups.setdefault(key, []).append(k)
        n = len(self.plans)
        totals: dict[str, np.ndarray] = {}
        by_category: np.ndarray | None = None
        lv_first: Leaves | None = None
        for members in groups.values():
            lv = self._stage_leaves(stage, sks[members[0]])
            lv_first = lv_first or lv
            kernels: list[LeafKernels | None] = []
            for k, ((table, predicted, *_), sk) in enumerate(zip(self.kinds, sks, strict=True)):
                if k in members and predicted and table is not None:
                    kernels.append(self._leaf_kernels(lv, table, sk))
                else:
                    kernels.append(None)
            sel = np.isin(self.kind, members)
            peaks = self._peaks_of(stage.dtype, sks)
            sub_which = np.array([members.index(k) if k in members else -1 for k in self.kind])[sel]
            part, cats = stage_times(
                lv, [kernels[k] for k in members], sub_which, peaks[sel], self.cuda[sel], self.bandwidth[sel]
            )
            for f, t in part.items():
                totals.setdefault(f, np.zeros(n))[sel] = t
            if by_category is None:
                by_category = np.zeros((n, len(lv.categories)))
            for j, c in enumerate(lv.categories):  # categories in the first group's order
                if lv_first is not None and c in lv_first.categories:
                    by_category[sel, lv_first.categories.index(c)] = cats[:, j]
            for k in members:  # the first point of each stage variant and arithmetic path
                p = self.first[k]
                table_k, predicted = self.kinds[k][:2]
                # devices differ only in the numbers they feed the same arithmetic: one device per
                # stage variant, stage kernels and path (roofline, or kernel terms with the host's
                # launch cost overlapped or added) checks the arrays for all
                overlapped = None if table_k is None else self.tables[table_k].host.overlapped
                path = (lv.variant, predicted and table_k is not None, overlapped, sks[k])
                if path not in self._checked:
                    self._checked.add(path)
                    _check(lv, self.plans[p], sks[k], {f: float(t[p]) for f, t in totals.items()})
        assert lv_first is not None and by_category is not None
        return lv_first, totals, by_category, [sks[k] for k in self.kind]

    def transfer_s(self, analyses: Sequence[Analysis]) -> np.ndarray:
        """Seconds per video of the weights each plan's analysis (``analyses``, one per device and
        plan) moves, on its device."""
        moves: dict[int, tuple[Transfer, ...]] = {}  # one list per distinct analysis
        for a in analyses:
            if id(a) not in moves:
                moves[id(a)] = a.memory.transfers()
        return np.array(
            [
                sum(transfer_s(t, dp.device) for t in moves[id(a)])
                for a, dp in zip(analyses, self.plans, strict=True)
            ]
        )

    def _off_gpu(
        self, analysis: Analysis, stage: Stage
    ) -> tuple[Leaves, dict[str, np.ndarray], np.ndarray, list[StageKernels]]:
        """``stage`` timed point by point where ``Analysis.runs_on`` puts it (``tree_time``: the
        host's device and table), one evaluation per distinct host and plan."""
        n = len(self.plans)
        totals = {f: np.zeros(n) for f in TIMING_FIELDS}
        memo: dict[tuple[object, ...], Timing] = {}
        sks = []
        for p, dp in enumerate(self.plans):
            on, plan = analysis.runs_on(stage, dp.device, dp.plan)
            sk = analysis.stage_kernels(stage, plan)
            key = (on.name, plan.mode, plan.execution, sk) if on is not dp.device else (p,)
            if key not in memo:
                memo[key] = tree_time(stage.tree, on, plan, sk)
            for f in TIMING_FIELDS:
                totals[f][p] = getattr(memo[key], f)
            sks.append(sk)
        lv = self._stage_leaves(stage, sks[0])
        return lv, totals, np.zeros((n, len(lv.categories))), sks

    def evaluate(self, analysis: Analysis) -> Evaluated:
        runs = {s.name: s.runs_per_video for s in analysis.stages}
        n = len(self.plans)
        video = {f: np.zeros(n) for f in TIMING_FIELDS}
        times: dict[str, np.ndarray] = {}
        shares: dict[str, np.ndarray] = {}
        backend: tuple[str | None, ...] = (None,) * n
        for stage in analysis.every_stage:
            lv, totals, by_category, sks = self.stage(analysis, stage)
            if stage.name in runs:
                for f in TIMING_FIELDS:
                    video[f] += totals[f] * runs[stage.name]
                times[f"{stage.name}_per_video_s"] = totals["predicted_s"] * runs[stage.name]
            if stage.name == analysis.forward.name:
                forward = totals
                with np.errstate(invalid="ignore", divide="ignore"):
                    shares = {
                        c: by_category[:, i] / totals["predicted_s"] for i, c in enumerate(lv.categories)
                    }
                if lv.head_dim is not None:
                    backend = tuple(effective_backend(sk.attention, stage.dtype, lv.head_dim) for sk in sks)
        # quantized weights (methods.quantized_weights): smaller transfers and peak on those plans
        gemms = (dp.plan.gemm_dtype for dp in self.plans)
        formats = [g if gemm_format(g) is not None else None for g in gemms]
        by_format = {g: quantized_weights(analysis, g) for g in dict.fromkeys(formats) if g is not None}
        per_plan = [by_format[g] if g is not None else analysis for g in formats]
        moved = self.transfer_s(per_plan)
        peaks = (
            np.array([a.memory.peak_per_gpu_bytes for a in per_plan], dtype=np.int64) if by_format else None
        )
        times["offload_per_video_s"] = moved
        times |= {
            "per_video_s": video["predicted_s"] + moved,
            "roofline_per_video_s": video["roofline_s"] + moved,
            "compute_per_video_s": video["compute_s"],
            "memory_per_video_s": video["memory_s"],
            "overhead_per_video_s": video["overhead_s"],
            "per_forward_s": forward["predicted_s"],
            "roofline_per_forward_s": forward["roofline_s"],
            "per_step_s": forward["predicted_s"] * analysis.workload.guidance_forwards,
        }
        return Evaluated(analysis, times, shares, backend, peaks)
