"""Time on a device: each leaf's roofline (the lower bound) and its predicted time from kernel
efficiency, summed in execution order.

For one leaf on device ``D`` at the stage's dtype ``t``, the roofline is::

    compute = tensor_flops / D.tensor_peak(t) + cuda_flops / D.fp32_peak
    (a convolution in fp32 uses D.tf32_peak: cuDNN's TF32 is on by PyTorch's default,
    fp32 matmuls stay on the CUDA cores: ``allow_tf32`` is off for them)
    memory  = (bytes_read + bytes_written) / D.bandwidth
    roofline_s = max(compute, memory)

``time.mode=predicted`` (the default) divides each peak by the fraction the
leaf's kernel class reaches at its shape (:mod:`ditmeter.analytic.kernels`):
a matmul by its smallest dimension, the attention core by backend, head dim
and key/value length, a convolution by its channels, and every leaf's traffic
by the element-wise share of the bandwidth; then adds the host's launch cost
(overlapped with the kernels on a GPU, added to them on a CPU)::

    predicted_s = max(compute / f_class, memory / f_bw, launches)   (GPU)
    predicted_s = max(compute / f_class, memory / f_bw) + launches  (CPU)

and never below ``roofline_s``. ``time.mode=roofline`` keeps the lower bound.
Every peak is also scaled by the device's ``efficiency`` (1.0 by default).

Leaves run one after another, so a container's times are the sums of its
leaves' (not the roofline of its summed counts, which would let a memory-bound
norm hide under a compute-bound matmul). A container's ``bound`` is the limit
its leaves spend the most time under.

``time.execution`` says which kernels a leaf is: ``compiled`` times each leaf as the one fused
kernel above (what torch.compile approaches); ``eager`` (the default) times each of the kernels
the pipeline's code launches (:mod:`ditmeter.analytic.eager`, the family's recipes) by the same
arithmetic, each in its own dtype at its own bytes with its own launch, and sums them; a leaf
whose rule has no recipe in its stage stays one fused kernel.

NB: no overlap between kernels. The host is modelled per kernel: a kernel shorter than its
launch waits for it (the host cannot run ahead of a chain of short kernels); a longer kernel
hides the launches of the next ones only within itself (no queue depth is modelled).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol

import attrs

from ditmeter.analytic.cost import Cost
from ditmeter.analytic.device import DeviceSpec
from ditmeter.analytic.kernel_time import (  # re-exported: the records every timing caller uses
    CONV_RULES,
    KERNEL_CLASS,
    SparseAttention,
    StageKernels,
    TimePlan,
    call_flops,
    conv_call_flops,
    effective_backend,
    kernel_terms,
    peak_column,
    row_backend,
    stage_peaks,
)
from ditmeter.analytic.transfer import Transfer
from ditmeter.analytic.tree import ModuleRow, Node, rollup, walk

__all__ = [
    "CONV_RULES",
    "EXECUTIONS",
    "FP32_MATMULS",
    "KERNEL_CLASS",
    "LIMITS",
    "OFFLOAD_PHASE",
    "TIME_MODES",
    "ZERO",
    "ForwardRun",
    "Prediction",
    "SparseAttention",
    "StageKernels",
    "TimePlan",
    "Timing",
    "call_flops",
    "conv_call_flops",
    "dominant_limit",
    "effective_backend",
    "kernel_time",
    "leaf_roofline",
    "leaf_time",
    "module_times",
    "tree_time",
]

TIME_MODES = ("predicted", "roofline")
#: The phase of a video's time that moves weights between host and GPU (``offload.model``).
OFFLOAD_PHASE = "offload"
#: Which kernels a leaf is timed as (see the module docstring).
EXECUTIONS = ("eager", "compiled")
#: What an fp32 matmul computes in (``time.fp32_matmul``): ``ieee`` (CUDA-core fp32, PyTorch's
#: default) or ``tf32`` (TF32 tensor cores).
FP32_MATMULS = ("ieee", "tf32")
#: The limits a leaf's time can be under (``bound``), in the order ties go.
LIMITS = ("compute", "memory", "overhead")


def dominant_limit(times: Sequence[float]) -> str:
    """The limit with the most time of ``times`` (compute, memory, overhead seconds); ties go to
    the earlier limit."""
    return LIMITS[max(range(len(LIMITS)), key=lambda i: (times[i], -i))]


@attrs.frozen
class Timing:
    """Times of one module for one run, in seconds (sums over its leaves)."""

    compute_s: float  # the compute term at the rates the kernels reach (roofline mode: the peaks)
    memory_s: float  # the traffic term at the bandwidth the kernels reach
    overhead_s: float  # kernel launches (GPU) or op dispatch (CPU)
    predicted_s: float
    roofline_s: float  # the lower bound: every peak reached
    compute_bound_s: float  # predicted time of the leaves inside under each limit
    memory_bound_s: float
    overhead_bound_s: float

    @property
    def bound(self) -> str:
        """The limit the most time is spent under (``compute``, ``memory`` or ``overhead``)."""
        return dominant_limit((self.compute_bound_s, self.memory_bound_s, self.overhead_bound_s))

    @property
    def peak_fraction(self) -> float | None:
        """The share of the peaks the prediction reaches: roofline_s / predicted_s (1 = at the roofline)."""
        return self.roofline_s / self.predicted_s if self.predicted_s > 0 else None

    def __add__(self, other: Timing) -> Timing:
        # field by field, not through attrs.astuple: a video's prediction adds ~10^5 timings
        return Timing(
            self.compute_s + other.compute_s,
            self.memory_s + other.memory_s,
            self.overhead_s + other.overhead_s,
            self.predicted_s + other.predicted_s,
            self.roofline_s + other.roofline_s,
            self.compute_bound_s + other.compute_bound_s,
            self.memory_bound_s + other.memory_bound_s,
            self.overhead_bound_s + other.overhead_bound_s,
        )

    def times(self, n: int) -> Timing:
        return Timing(
            n * self.compute_s,
            n * self.memory_s,
            n * self.overhead_s,
            n * self.predicted_s,
            n * self.roofline_s,
            n * self.compute_bound_s,
            n * self.memory_bound_s,
            n * self.overhead_bound_s,
        )

    def minus(self, part: Timing) -> Timing:
        """This module's times without those of ``part``, one of its sub-trees (never below 0)."""
        return Timing(
            max(self.compute_s - part.compute_s, 0.0),
            max(self.memory_s - part.memory_s, 0.0),
            max(self.overhead_s - part.overhead_s, 0.0),
            max(self.predicted_s - part.predicted_s, 0.0),
            max(self.roofline_s - part.roofline_s, 0.0),
            max(self.compute_bound_s - part.compute_bound_s, 0.0),
            max(self.memory_bound_s - part.memory_bound_s, 0.0),
            max(self.overhead_bound_s - part.overhead_bound_s, 0.0),
        )


@attrs.frozen
class ForwardRun:
    """``count`` of a video's denoiser forwards that run alike (a what-if method's kind of forward:
    ``computed``, ``cached``), each taking ``timing``."""

    kind: str
    count: int
    timing: Timing
    #: module ids whose subtrees this kind of forward does not run (a cached forward's blocks)
    skipped: tuple[str, ...] = ()
    #: this kind's time of every module where it is not the prediction's (sparse attention's dense
    #: warm-up forwards); None: the prediction's
    modules: dict[str, Timing] | None = attrs.field(default=None, eq=False)

    def runs(self, module_id: str) -> bool:
        """Whether this kind of forward runs ``module_id``."""
        return runs_module(self.skipped, module_id)


def runs_module(skipped: Sequence[str], module_id: str) -> bool:
    """Whether a forward that skips the subtrees ``skipped`` runs ``module_id``."""
    return not any(module_id == s or module_id.startswith(f"{s}.") for s in skipped)


class KindOfForward(Protocol):
    """A kind of the denoiser's forwards (:class:`ForwardRun`, a plan's ``RankRun``)."""

    @property
    def kind(self) -> str: ...
    @property
    def count(self) -> int: ...
    @property
    def modules(self) -> dict[str, Timing] | None: ...
    def runs(self, module_id: str) -> bool: ...


def kinds_video_s(
    kinds: Sequence[KindOfForward], modules: dict[str, Timing], module_id: str
) -> tuple[float, float]:
    """(predicted, roofline) seconds per video of one denoiser module over the forwards of each
    kind that run it, at the kind's own time of it (``modules`` where the kind has none)."""
    predicted = roofline = 0.0
    for r in kinds:
        if r.runs(module_id):
            t = (modules if r.modules is None else r.modules)[module_id]
            predicted += r.count * t.predicted_s
            roofline += r.count * t.roofline_s
    return predicted, roofline


ZERO = Timing(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
_COPY = re.compile(r"\.\d+\.")


def leaf_roofline(cost: Cost, device: DeviceSpec, dtype: str, rule: str | None = None) -> Timing:
    """The roofline of one leaf costed by ``rule`` in a ``dtype`` stage: every peak reached (see
    the module docstring)."""
    peak = stage_peaks(device, StageKernels(dtype))[peak_column(rule, dtype, dtype)]
    return _roofline(cost, device, peak)


def _roofline(cost: Cost, device: DeviceSpec, peak: float) -> Timing:
    compute = cost.tensor_flops / peak + cost.cuda_flops / device.cuda_flop_per_s
    memory = cost.moved_bytes / device.bytes_per_s
    return _timing(compute, memory, 0.0, True, max(compute, memory))


def _timing(compute: float, memory: float, overhead: float, overlapped: bool, roofline: float) -> Timing:
    kernel = max(compute, memory)
    predicted = max(kernel, overhead) if overlapped else kernel + overhead
    predicted = max(predicted, roofline)
    limit = 2 if overhead > kernel else 0 if compute >= memory else 1
    split = [0.0, 0.0, 0.0]
    split[limit] = predicted
    return Timing(compute, memory, overhead, predicted, roofline, *split)


def leaf_time(
    row: ModuleRow,
    device: DeviceSpec,
    plan: TimePlan,
    stage: StageKernels,
    memo: dict[tuple[object, ...], Timing] | None = None,
) -> Timing:
    """The predicted time of one leaf (see the module docstring): under eager execution the sum
    of its kernels' (``memo``: kernels of one shape already timed on this device and plan)."""
    calls = stage.calls(row)
    if calls is not None:
        memo = {} if memo is None else memo
        out = ZERO
        for launch, dtype, count in calls:
            key = (launch.rule, launch.dims, launch.cost, dtype)
            if key not in memo:
                memo[key] = kernel_time(launch, device, plan, stage, dtype)
            t = memo[key]
            out = out + (t if count == 1 else t.times(count))
        return out
    return kernel_time(row, device, plan, stage)


def kernel_time(
    row: ModuleRow, device: DeviceSpec, plan: TimePlan, stage: StageKernels, dtype: str | None = None
) -> Timing:
    """The predicted time of one kernel (a leaf as one fused kernel, or one eager launch of it,
    running in ``dtype``: the stage's by default), from :func:`~ditmeter.analytic.kernel_time.kernel_terms`
    on ``device``."""
    dtype = dtype or stage.dtype
    row = stage.computed(row)
    peaks = stage_peaks(device, stage)
    roof = _roofline(
        row.cost, device, peaks[peak_column(row.rule, dtype, stage.dtype, row_backend(row, dtype, stage))]
    )
    if not plan.predicted or plan.kernels is None:
        return roof
    t = kernel_terms(row, dtype, stage, plan.kernels)
    compute = t.numerator / peaks[t.column] + t.cuda / device.cuda_flop_per_s
    return _timing(compute, t.traffic / device.bytes_per_s, t.launch_s, t.overlapped, roof.roofline_s)


def module_times(
    tree: Node, device: DeviceSpec, plan: TimePlan, stage: StageKernels, prefix: str = ""
) -> dict[str, Timing]:
    """Times of every module id of the expanded tree (the root is ``prefix``), leaves summed upward."""
    rows = list(walk(tree, prefix))
    cache: dict[tuple[str | None, tuple[object, ...], Cost, str], Timing] = {}
    kernels: dict[tuple[object, ...], Timing] = {}  # eager kernels of one shape, timed once
    leaves = {}
    for r in rows:
        if r.kind == "leaf":
            # eager recipes may tell two leaves of one rule and shape apart by name (not by copy)
            key = (r.rule, r.dims, r.cost, _COPY.sub(".*.", r.module_id) if stage.flavour else "")
            if key not in cache:
                cache[key] = leaf_time(r, device, plan, stage, kernels)
            leaves[r.module_id] = cache[key]
    return rollup(rows, leaves, ZERO)


def tree_time(tree: Node, device: DeviceSpec, plan: TimePlan, stage: StageKernels) -> Timing:
    """The time of one run of ``tree`` from a compact walk (a repeated block costed once): what a
    sweep needs, without one row per module."""
    out = ZERO
    for r in walk(tree, expand=False):
        if r.kind == "leaf":
            t = leaf_time(r, device, plan, stage)
            out = out + (t if r.copies == 1 else t.times(r.copies))
    return out


@attrs.frozen
class Prediction:
    """Predicted times of one analysis on one device under one plan."""

    device: DeviceSpec
    plan: TimePlan
    modules: dict[str, Timing]  # every module id of every stage, per run of its stage
    forward_id: str  # the root id of the stage that runs every step (the denoiser)
    forwards_per_step: int
    forwards_per_video: int
    stage_runs: tuple[tuple[str, int], ...]  # the selected stages and their runs per video
    backends: dict[str, str]  # the attention kernel of every stage
    #: the weights the video moves between host and GPU, each with its seconds (``offload.model``)
    transfers: tuple[tuple[Transfer, float], ...] = ()
    #: the denoiser's forwards by kind when a method runs them differently (step caching); empty:
    #: every forward is ``per_forward``
    forward_runs: tuple[ForwardRun, ...] = ()

    @property
    def transfer_s(self) -> float:
        """Seconds per video of host-device weight transfers (the ``offload`` phase)."""
        return sum(s for _, s in self.transfers)

    @property
    def per_forward(self) -> Timing:
        return self.modules[self.forward_id]

    @property
    def per_step_s(self) -> float:
        return self.per_forward.predicted_s * self.forwards_per_step

    @property
    def forward_video_s(self) -> float:
        """The denoiser's seconds per video (every forward of every step)."""
        if self.forward_runs:
            return sum(r.timing.predicted_s * r.count for r in self.forward_runs)
        return self.per_forward.predicted_s * self.forwards_per_video

    def stage_video_s(self, stage: str, runs: int) -> float:
        if stage == self.forward_id and self.forward_runs:
            return self.forward_video_s
        return self.modules[stage].predicted_s * runs

    @property
    def stage_seconds(self) -> dict[str, float]:
        """Seconds per video of every selected stage, and of the ``offload`` phase when the video
        moves weights."""
        out = {s: self.stage_video_s(s, n) for s, n in self.stage_runs}
        return out | ({OFFLOAD_PHASE: self.transfer_s} if self.transfers else {})

    @property
    def per_video_s(self) -> float:
        """Seconds for one whole video: every selected stage × its runs per video, and the weights
        moved between host and GPU."""
        return sum(self.stage_video_s(s, n) for s, n in self.stage_runs) + self.transfer_s

    def stage_roofline_s(self, stage: str, runs: int) -> float:
        if stage == self.forward_id and self.forward_runs:
            return sum(r.timing.roofline_s * r.count for r in self.forward_runs)
        return self.modules[stage].roofline_s * runs

    @property
    def roofline_video_s(self) -> float:
        return sum(self.stage_roofline_s(s, n) for s, n in self.stage_runs) + self.transfer_s

    def mfu(self, tensor_flops_per_video: int, dtype: str, measured_video_s: float) -> float:
        """Model FLOPs utilisation: tensor FLOPs per video / (measured time × dense peak).

        The peak here ignores ``efficiency`` and ``sustained_clock``: MFU is against the datasheet.
        """
        peak = self.device.tensor_flop_per_s(dtype) / (self.device.efficiency * self.device.clock)
        return tensor_flops_per_video / (measured_video_s * peak)
