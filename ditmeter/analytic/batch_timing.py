"""Every leaf of a stage timed on many devices and plans at once: numpy arrays over the leaves.

:func:`~ditmeter.analytic.timing.leaf_time`'s arithmetic for every leaf of a stage's compact walk
(a repeated block once) and every device and plan at once (``tree_time`` per point costs ~3 ms),
for ``ditmeter sweep``. :class:`Timer` compares the arrays with ``tree_time`` on the first point of
each stage, kernel table and plan. NB: the two sum in different orders (last-bit differences); a
disagreement beyond that is a bug and raises.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np

from ditmeter.analytic.analysis import Analysis, Stage
from ditmeter.analytic.cost import DTYPE_BYTES
from ditmeter.analytic.device import DeviceSpec
from ditmeter.analytic.kernels import KernelTable
from ditmeter.analytic.timing import (
    CONV_RULES,
    KERNEL_CLASS,
    StageKernels,
    TimePlan,
    Timing,
    call_flops,
    effective_backend,
    tree_time,
)
from ditmeter.analytic.transfer import transfer_s
from ditmeter.analytic.tree import walk

#: Relative agreement asked of the array timing and ``tree_time`` (they sum in different orders).
RTOL = 1e-9


@attrs.frozen
class DevicePlan:
    """A device and the time plan a point runs it under."""

    device: DeviceSpec
    plan: TimePlan


# ---- time: every leaf of a stage on every device and plan at once ---------------------------

#: Columns of a device's peaks (FLOP/s) a leaf's compute runs at: the stage dtype's tensor peak,
#: the GEMM dtype's (``gemm_dtype=``), the convolution peak (fp32 convolutions: TF32), and fp32
#: (an eager fp32 kernel of a 16-bit stage).
TENSOR, GEMM, CONV, F32 = 0, 1, 2, 3


def _floats(values: Sequence[int]) -> np.ndarray:
    return np.array([float(v) for v in values], dtype=np.float64)


@attrs.frozen(eq=False)
class Leaves:
    """A stage's leaves from a compact walk (a repeated block once, ``copies`` times), as arrays."""

    stage: Stage
    rows: tuple[Any, ...]  # the ModuleRows: a leaf, or one eager kernel of it (its launches in copies)
    dtypes: tuple[str, ...]  # the dtype each row runs in
    tensor: np.ndarray  # tensor FLOPs of one copy
    cuda: np.ndarray
    moved: np.ndarray  # bytes read + written
    copies: np.ndarray
    roof_peak: np.ndarray  # the peak of leaf_roofline: TENSOR, GEMM or CONV
    category: np.ndarray  # index into categories
    categories: tuple[str, ...]
    head_dim: int | None  # the largest head dim (names the attention kernel)
    variant: tuple[object, ...]  # the stage, its dtype, attention and rules: what a check covers
    #: (index, kernel class, FLOPs of one call (GEMMs, convolutions), dims) of the leaves a kernel
    #: table times by their shape (the others: element-wise)
    shaped: tuple[tuple[int, str, int, dict[str, Any]], ...]


#: The dims a kernel class needs to be timed by its curve (``leaf_time``: else element-wise).
_SHAPE_DIMS = {"gemm": "in_features", "conv": "in_channels", "attention": "head_dim"}


def _call_flops(kind: str, dims: dict[str, Any]) -> int:
    return call_flops(dims) if kind in ("gemm", "conv") else 0


def _kernel_rows(stage: Stage, sk: StageKernels) -> tuple[list[Any], list[str]]:
    """The stage's leaves (compact walk), each eager leaf replaced by its kernels."""
    rows, dtypes = [], []
    for r in walk(stage.tree, expand=False):
        if r.kind != "leaf":
            continue
        calls = sk.calls(r)
        if calls is None:
            rows.append(r)
            dtypes.append(stage.dtype)
            continue
        for row, kernels, count in calls:
            rows.append(attrs.evolve(row, copies=r.copies * count))
            dtypes.append(kernels.dtype)
    return rows, dtypes


def stage_leaves(stage: Stage, sk: StageKernels | None = None) -> Leaves:
    """The stage's leaves as arrays; under eager execution (``sk`` with a flavour) its kernels."""
    rows_, dtypes_ = _kernel_rows(stage, sk or StageKernels(stage.dtype))
    rows, dtypes = tuple(rows_), tuple(dtypes_)
    categories = tuple(dict.fromkeys(str(r.category) for r in rows))
    kinds = [KERNEL_CLASS.get(r.rule or "", "elementwise") for r in rows]
    dims = [dict(r.dims) for r in rows]
    shaped = tuple(
        (i, k, _call_flops(k, d), d)
        for i, (k, d) in enumerate(zip(kinds, dims, strict=True))
        if _SHAPE_DIMS.get(k) in d or (k in ("gemm", "conv") and "call_flops" in d)
    )
    fp32 = [dt == "fp32" and stage.dtype != "fp32" for dt in dtypes]
    roof = [
        F32
        if f and r.rule not in CONV_RULES
        else GEMM
        if k == "gemm"
        else CONV
        if r.rule in CONV_RULES
        else TENSOR
        for r, k, f in zip(rows, kinds, fp32, strict=True)
    ]
    head_dims = [int(d["head_dim"]) for d in dims if "head_dim" in d]
    return Leaves(
        stage,
        rows,
        dtypes,
        _floats([r.cost.tensor_flops for r in rows]),
        _floats([r.cost.cuda_flops for r in rows]),
        _floats([r.cost.moved_bytes for r in rows]),
        _floats([r.copies for r in rows]),
        np.array(roof, dtype=np.intp),
        np.array([categories.index(str(r.category)) for r in rows], dtype=np.intp),
        categories,
        max(head_dims) if head_dims else None,
        (stage.name, stage.dtype, stage.attention, sk, *sorted({str(r.rule) for r in rows})),
        shaped,
    )


@attrs.frozen(eq=False)
class LeafKernels:
    """What :func:`~ditmeter.analytic.timing.leaf_time` reads of a kernel table for each leaf of a
    stage: compute = numerator / (peak × fraction) + cuda_on × CUDA-core time, memory = moved /
    (bandwidth × share), and the launch cost."""

    peak: np.ndarray
    numerator: np.ndarray
    fraction: np.ndarray
    cuda_on: np.ndarray
    moved: np.ndarray
    bandwidth_share: np.ndarray  # per leaf: an element-wise rule's own share, else the table's
    overhead_s: float
    overlapped: bool


def leaf_kernels(
    lv: Leaves, table: KernelTable, sk: StageKernels, memo: dict[tuple[Any, ...], float] | None = None
) -> LeafKernels:
    """The branches of ``leaf_time`` for every leaf of ``lv`` run as ``sk`` under ``table``
    (``memo``: the table's fractions already read, by curve and x)."""
    n, dtype = len(lv.rows), sk.dtype
    peak = np.full(n, TENSOR, dtype=np.intp)
    numerator, moved = lv.tensor.copy(), lv.moved.copy()
    fraction, cuda_on = np.ones(n), np.ones(n)
    memo = {} if memo is None else memo

    def read(kind: str, *key: Any) -> float:
        if (kind, *key) not in memo:
            curve = {"gemm": table.gemm_fraction, "conv": table.conv_fraction}.get(kind)
            memo[(kind, *key)] = curve(*key) if curve else table.attention_fraction(*key)
        return memo[(kind, *key)]

    for i, kind, call, dims in lv.shaped:
        row_dtype = lv.dtypes[i]
        if kind == "gemm":
            if row_dtype == "fp32" and dtype != "fp32":  # an eager fp32 GEMM of a 16-bit stage
                peak[i], fraction[i] = F32, read("gemm", table.eager_gemm_dtype("fp32", dtype), call)
            else:
                peak[i], fraction[i] = GEMM, read("gemm", sk.gemm_dtype or row_dtype, call)
        elif kind == "conv":
            peak[i], fraction[i] = CONV, read("conv", row_dtype, call)
        else:
            head_dim, tf = int(dims["head_dim"]), lv.rows[i].cost.tensor_flops
            backend = effective_backend(sk.attention, row_dtype, head_dim)
            kvs = [int(dims[k]) for k in ("kv_tokens", "text_tokens", "image_tokens") if k in dims]
            if backend == "sdpa_math":  # two GEMMs; the L×L scores written and read 4 times
                fraction[i] = read("gemm", row_dtype, 2 * int(dims["q_tokens"]) * sum(kvs) * head_dim)
                act_bytes = int(dims.get("act_bytes", DTYPE_BYTES.get(row_dtype, 4)))
                moved[i] = float(lv.rows[i].cost.moved_bytes + 4 * (tf // (4 * head_dim)) * act_bytes)
            elif len(kvs) == 1:  # the fused kernel; the softmax's work inside it
                fraction[i], cuda_on[i] = read("attention", backend, head_dim, kvs[0]), 0.0
            else:  # each key/value length at its own fraction
                fracs = [read("attention", backend, head_dim, kv) for kv in kvs]
                numerator[i] = sum(tf * kv / sum(kvs) / f for kv, f in zip(kvs, fracs, strict=True))
                cuda_on[i] = 0.0
    host = table.host
    share = np.array(
        [
            table.bandwidth_fraction(r.rule)
            if KERNEL_CLASS.get(str(r.rule)) is None
            else table.bandwidth.fraction[0]
            for r in lv.rows
        ]
    )
    return LeafKernels(
        peak,
        numerator,
        fraction,
        cuda_on,
        moved,
        share,
        host.per_kernel_s,
        host.overlapped,
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
    roofline, ``time.mode=roofline`` or no table); ``peaks`` is P×3 FLOP/s (TENSOR, GEMM, CONV),
    ``cuda`` and ``bandwidth`` are per device. Returns the Timing fields summed over the leaves
    (P values each) and the predicted seconds by category (P × categories)."""
    cuda_s = lv.cuda / cuda[:, None]
    compute = lv.tensor / peaks[:, lv.roof_peak] + cuda_s
    memory = lv.moved / bandwidth[:, None]
    roofline = np.maximum(compute, memory)
    predicted, overhead = roofline.copy(), np.zeros_like(roofline)
    for g, k in enumerate(kernels):
        sel = which == g
        if k is None or not sel.any():
            continue
        c = k.numerator / (peaks[sel][:, k.peak] * k.fraction) + k.cuda_on * cuda_s[sel]
        m = k.moved / (bandwidth[sel, None] * k.bandwidth_share)
        kernel = np.maximum(c, m)
        p = np.maximum(kernel, k.overhead_s) if k.overlapped else kernel + k.overhead_s
        compute[sel], memory[sel], overhead[sel] = c, m, k.overhead_s
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
            )
            for t in (dp.plan for dp in plans)
        ]
        self.kinds = list(dict.fromkeys(keys))
        self.kind = np.array([self.kinds.index(k) for k in keys], dtype=np.intp)
        self.first = [keys.index(k) for k in self.kinds]  # a device with each plan
        self._memos: list[dict[tuple[Any, ...], float]] = [{} for _ in tables]
        self._peaks: dict[tuple[str, tuple[str | None, ...]], np.ndarray] = {}
        self._checked: set[tuple[object, ...]] = set()

    def _peaks_of(self, dtype: str, sks: Sequence[StageKernels]) -> np.ndarray:
        """P × 4 FLOP/s: each device's TENSOR, GEMM, CONV and F32 peak for a stage in ``dtype``."""
        key = (dtype, tuple(sk.gemm_dtype for sk in sks))
        if key not in self._peaks:
            rows = []
            for p, k in enumerate(self.kind):
                d = self.plans[p].device
                gemm = d.tensor_flop_per_s(sks[k].gemm_dtype or dtype)
                rows.append(
                    (d.tensor_flop_per_s(dtype), gemm, d.conv_flop_per_s(dtype), d.tensor_flop_per_s("fp32"))
                )
            self._peaks[key] = np.array(rows)
        return self._peaks[key]

    def stage(
        self, analysis: Analysis, stage: Stage
    ) -> tuple[Leaves, dict[str, np.ndarray], np.ndarray, list[StageKernels]]:
        """One run of ``stage`` on every device and plan. Plans of one execution share the
        stage's kernel rows; under several (``time.execution=[eager,compiled]``) each group is
        timed on its own rows and the totals put back in point order."""
        sks = [analysis.stage_kernels(stage, self.plans[p].plan) for p in self.first]
        groups: dict[tuple[str, str], list[int]] = {}
        for k, sk in enumerate(sks):
            groups.setdefault((sk.flavour, sk.stage), []).append(k)
        n = len(self.plans)
        totals: dict[str, np.ndarray] = {}
        by_category: np.ndarray | None = None
        lv_first: Leaves | None = None
        for members in groups.values():
            lv = stage_leaves(stage, sks[members[0]])
            lv_first = lv_first or lv
            kernels: list[LeafKernels | None] = []
            for k, ((table, predicted, *_), sk) in enumerate(zip(self.kinds, sks, strict=True)):
                if k in members and predicted and table is not None:
                    kernels.append(leaf_kernels(lv, self.tables[table], sk, self._memos[table]))
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
            for k in members:  # the first point of each stage, table and plan
                p = self.first[k]
                if (lv.variant, self.kinds[k], sks[k]) not in self._checked:
                    self._checked.add((lv.variant, self.kinds[k], sks[k]))
                    _check(lv, self.plans[p], sks[k], {f: float(t[p]) for f, t in totals.items()})
        assert lv_first is not None and by_category is not None
        return lv_first, totals, by_category, [sks[k] for k in self.kind]

    def transfer_s(self, analysis: Analysis) -> np.ndarray:
        """Seconds per video of the weights ``analysis``'s video moves, on every device."""
        moves = analysis.memory.transfers()
        return np.array([sum(transfer_s(t, dp.device) for t in moves) for dp in self.plans])

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
        moved = self.transfer_s(analysis)
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
        return Evaluated(analysis, times, shares, backend)
