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
from collections.abc import Mapping, Sequence

import attrs

from ditmeter.analytic.cost import DTYPE_BYTES, Cost
from ditmeter.analytic.device import DeviceSpec
from ditmeter.analytic.eager import KernelCall, eager_calls
from ditmeter.analytic.host import HostPlan
from ditmeter.analytic.kernels import MAX_FUSED_HEAD_DIM, KernelTable
from ditmeter.analytic.transfer import Transfer
from ditmeter.analytic.tree import ModuleRow, Node, rollup, walk

TIME_MODES = ("predicted", "roofline")
#: The phase of a video's time that moves weights between host and GPU (``offload.model``).
OFFLOAD_PHASE = "offload"
#: Which kernels a leaf is timed as (see the module docstring).
EXECUTIONS = ("eager", "compiled")
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
        return Timing(*(a + b for a, b in zip(attrs.astuple(self), attrs.astuple(other), strict=True)))

    def times(self, n: int) -> Timing:
        return Timing(*(n * a for a in attrs.astuple(self)))


ZERO = Timing(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
_COPY = re.compile(r"\.\d+\.")

#: Rules whose tensor FLOPs are convolutions (cuDNN): fp32 ones run on TF32 tensor cores.
CONV_RULES = frozenset({"conv", "patch_conv3d"})
#: Kernel class of each rule that is not element-wise.
KERNEL_CLASS = {
    "linear": "gemm",
    "conv": "conv",
    "patch_conv3d": "conv",
    "attention_core": "attention",
    "image_text_attention_core": "attention",
}


@attrs.frozen
class TimePlan:
    """How time is predicted: the mode, the kernel table, the attention backend and GEMM dtype
    the user asked for (``attention=``, ``gemm_dtype=``)."""

    mode: str = "predicted"
    kernels: KernelTable | None = None
    attention: str = "auto"
    gemm_dtype: str | None = None
    execution: str = "eager"
    #: the host CPU as a device and its table (``host=``): where ``offload.t5_cpu`` encodes
    host: HostPlan | None = None

    @property
    def predicted(self) -> bool:
        return self.mode == "predicted" and self.kernels is not None

    def backend(self, impl: str, *, forward: bool) -> str:
        """The attention kernel a stage's code runs. ``impl`` is what the code calls: ``flash``
        (the official ``flash_attention``: FA3 where the table has it, else FA2), ``fa2`` (the
        same function pinned to version 2), ``sdpa`` (PyTorch SDPA: its flash kernel for 16-bit)
        or ``eager`` (matmul + softmax). ``attention=`` replaces the denoiser's (``forward``)."""
        if impl == "eager":
            return "sdpa_math"
        if forward and self.attention != "auto":
            return self.attention
        have = self.kernels.attention if self.kernels is not None else {}
        wanted = {"flash": ("fa3", "fa2"), "fa2": ("fa2",)}.get(impl, ("sdpa_flash",))
        # a table without the kernel (a CPU calibration measures SDPA only) costs the one it has
        for backend in (*wanted, "sdpa_flash", *have):
            if backend in have:
                return backend
        return wanted[-1]  # no table: the kernel the code would run


def effective_backend(backend: str, dtype: str, head_dim: int) -> str:
    """fp32 and head dims above 256 take the math path whatever is asked (no fused kernel takes them)."""
    return "sdpa_math" if dtype == "fp32" or head_dim > MAX_FUSED_HEAD_DIM else backend


@attrs.frozen
class StageKernels:
    """What one stage's leaves run: its dtype, its attention implementation, its GEMM dtype."""

    dtype: str
    attention: str = "sdpa_math"  # the backend (TimePlan.backend of the family's implementation)
    gemm_dtype: str | None = None  # None: the stage dtype
    #: eager: whose code's kernels (the pipeline: ``official``, ``diffusers``) in which stage;
    #: "" (compiled, or no family recipes): each leaf one fused kernel
    flavour: str = ""
    stage: str = ""
    #: an eager kernel's: the dtype of its stage (whose GEMM curve it reads where the table has
    #: none for its own dtype); "": the kernels are the stage's
    stage_dtype: str = ""

    def calls(self, row: ModuleRow) -> tuple[tuple[ModuleRow, StageKernels, int], ...] | None:
        """The eager kernels of leaf ``row`` as rows ``leaf_time`` times, each with the kernels it
        runs as and its launch count (None: the leaf is one fused kernel)."""
        if not self.flavour:
            return None
        half = self.dtype if self.dtype in ("bf16", "fp16") else "bf16"
        # the leaf's id in its stage (as recipes name leaves): a walk may prefix the stage's name
        leaf = row.module_id.removeprefix(self.stage + ".")
        calls = eager_calls(self.flavour, self.stage, leaf, row.rule, dict(row.dims), half)
        if calls is None:
            return None
        return tuple((_call_row(row, c), self._as(c), c.count) for c in calls)

    def _as(self, call: KernelCall) -> StageKernels:
        dtype = call.dtype if call.dtype in DTYPE_BYTES else "fp32"  # fp64, ints: CUDA cores
        gemm = self.gemm_dtype if dtype != "fp32" else None
        return StageKernels(dtype, self.attention, gemm, stage_dtype=self.dtype)


#: The rule ``leaf_time`` times a kernel of each kind as (memory-bound kernels: element-wise).
_CALL_RULES = {"gemm": "linear", "attention": "attention_core", "conv": "conv", "memory": None}


def _call_row(leaf: ModuleRow, call: KernelCall) -> ModuleRow:
    """One launch of ``call`` as a leaf row of ``leaf``'s id and category."""
    dims: tuple[tuple[str, int | bool], ...] = call.dims
    if call.kind in ("gemm", "conv"):
        dims = (("call_flops", call.call_flops),)
    elif call.kind == "attention":
        dims = (*call.dims, ("batch", 1), ("act_bytes", DTYPE_BYTES.get(call.dtype, 2)))
    cost = Cost(tensor_flops=call.tensor_flops, cuda_flops=call.cuda_flops, bytes_read=call.bytes)
    return attrs.evolve(leaf, rule=_CALL_RULES[call.kind], cost=cost, dims=dims)


def leaf_roofline(cost: Cost, device: DeviceSpec, dtype: str, rule: str | None = None) -> Timing:
    """The roofline of one leaf costed by ``rule``: every peak reached (see the module docstring)."""
    peak = device.conv_flop_per_s(dtype) if rule in CONV_RULES else device.tensor_flop_per_s(dtype)
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


def _attention_s(
    dims: Mapping[str, int | bool], tensor_flops: int, peak: float, table: KernelTable, backend: str
) -> float:
    """The fused attention kernel's time: each key/value length (I2V: text and image) at its own
    fraction; the softmax's element-wise work runs inside the kernel (the published TFLOP/s count
    the two matmuls only)."""
    head_dim = int(dims["head_dim"])
    kvs = [int(dims[k]) for k in ("kv_tokens", "text_tokens", "image_tokens") if k in dims]
    total_kv = sum(kvs)
    return sum(
        tensor_flops * kv / total_kv / (peak * table.attention_fraction(backend, head_dim, kv)) for kv in kvs
    )


def conv_call_flops(dims: Mapping[str, int | bool]) -> int:
    """One call's convolution FLOPs from a conv rule's dims (a VAE leaf sums many calls)."""
    outputs = int(dims["outputs"]) if "outputs" in dims else int(dims["batch"]) * int(dims["patches"])
    return 2 * outputs * int(dims["in_channels"]) * int(dims["out_channels"]) * int(dims["kernel_volume"])


def leaf_time(row: ModuleRow, device: DeviceSpec, plan: TimePlan, stage: StageKernels) -> Timing:
    """The predicted time of one leaf (see the module docstring): under eager execution the sum
    of its kernels'."""
    calls = stage.calls(row)
    if calls is not None:
        out = ZERO
        for call_row, kernels, count in calls:
            t = kernel_time(call_row, device, plan, kernels)
            out = out + (t if count == 1 else t.times(count))
        return out
    return kernel_time(row, device, plan, stage)


def call_flops(dims: Mapping[str, int | bool]) -> int:
    """One GEMM or convolution launch's FLOPs (what the efficiency curves read)."""
    if "call_flops" in dims:
        return int(dims["call_flops"])
    if "in_features" in dims:
        return 2 * int(dims["tokens"]) * int(dims["in_features"]) * int(dims["out_features"])
    return conv_call_flops(dims)


def kernel_time(row: ModuleRow, device: DeviceSpec, plan: TimePlan, stage: StageKernels) -> Timing:
    """The predicted time of one kernel: a leaf as one fused kernel, or one eager launch."""
    cost, dtype = row.cost, stage.dtype
    kind = KERNEL_CLASS.get(row.rule or "", "elementwise")
    gemm_dtype = (stage.gemm_dtype or dtype) if kind == "gemm" else dtype
    roof = leaf_roofline(cost, device, gemm_dtype, row.rule)
    table = plan.kernels
    if not plan.predicted or table is None:
        return roof
    dims = dict(row.dims)
    share = table.bandwidth_fraction(row.rule) if kind == "elementwise" else table.bandwidth.fraction[0]
    bandwidth = device.bytes_per_s * share
    moved = cost.moved_bytes
    cuda = cost.cuda_flops / device.cuda_flop_per_s
    if kind == "gemm" and ("in_features" in dims or "call_flops" in dims):
        call = call_flops(dims)
        curve = table.eager_gemm_dtype(gemm_dtype, stage.stage_dtype) if stage.stage_dtype else gemm_dtype
        rate = device.tensor_flop_per_s(gemm_dtype) * table.gemm_fraction(curve, call)
        compute = cost.tensor_flops / rate + cuda
    elif kind == "conv" and ("in_channels" in dims or "call_flops" in dims):
        rate = device.conv_flop_per_s(dtype) * table.conv_fraction(dtype, call_flops(dims))
        compute = cost.tensor_flops / rate + cuda
    elif kind == "attention" and "head_dim" in dims:
        backend = effective_backend(stage.attention, dtype, int(dims["head_dim"]))
        peak = device.tensor_flop_per_s(dtype)
        if backend == "sdpa_math":
            # QKᵀ and PV as batched GEMMs; the scores are written, read by the softmax, the
            # probabilities written and read by the second matmul: 4 passes over L×L.
            kv = sum(int(dims[k]) for k in ("kv_tokens", "text_tokens", "image_tokens") if k in dims)
            call = 2 * int(dims["q_tokens"]) * kv * int(dims["head_dim"])  # one head's QKᵀ
            compute = cost.tensor_flops / (peak * table.gemm_fraction(dtype, call)) + cuda
            scores = cost.tensor_flops // (4 * int(dims["head_dim"]))
            moved += 4 * scores * int(dims.get("act_bytes", DTYPE_BYTES.get(dtype, 4)))
        else:
            compute = _attention_s(dims, cost.tensor_flops, peak, table, backend)
    else:
        compute = cost.tensor_flops / device.tensor_flop_per_s(dtype) + cuda
    overhead = table.host.per_kernel_s
    return _timing(compute, moved / bandwidth, overhead, table.host.overlapped, roof.roofline_s)


def module_times(
    tree: Node, device: DeviceSpec, plan: TimePlan, stage: StageKernels, prefix: str = ""
) -> dict[str, Timing]:
    """Times of every module id of the expanded tree (the root is ``prefix``), leaves summed upward."""
    rows = list(walk(tree, prefix))
    cache: dict[tuple[str | None, tuple[object, ...], Cost, str], Timing] = {}
    leaves = {}
    for r in rows:
        if r.kind == "leaf":
            # eager recipes may tell two leaves of one rule and shape apart by name (not by copy)
            key = (r.rule, r.dims, r.cost, _COPY.sub(".*.", r.module_id) if stage.flavour else "")
            if key not in cache:
                cache[key] = leaf_time(r, device, plan, stage)
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
        return self.per_forward.predicted_s * self.forwards_per_video

    def stage_video_s(self, stage: str, runs: int) -> float:
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

    @property
    def roofline_video_s(self) -> float:
        return sum(self.modules[s].roofline_s * n for s, n in self.stage_runs) + self.transfer_s

    def mfu(self, tensor_flops_per_video: int, dtype: str, measured_video_s: float) -> float:
        """Model FLOPs utilisation: tensor FLOPs per video / (measured time × dense peak).

        The peak here ignores ``efficiency``: MFU is against the datasheet.
        """
        peak = self.device.tensor_flop_per_s(dtype) / self.device.efficiency
        return tensor_flops_per_video / (measured_video_s * peak)
