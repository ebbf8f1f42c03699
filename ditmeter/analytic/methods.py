"""What-if methods (``methods.*``; docs/whatif.md): the speed-ups Wan users apply, each modelled as
the mechanism that changes which kernels run, never as a speed-up factor.

* **Step caching** (``cache``): some DiT forwards skip the transformer blocks and add the
  residual (blocks' output - input) cached from the last forward of the same branch that ran
  them. What a skipped forward still runs is the method's own code (:data:`SKIPPED_RUNS`); a
  computed forward also stores its residual (one element-wise pass). Which forwards skip is the
  method's rule: TeaCache, EasyCache and FBCache decide each step from the data (an indicator
  computed from the real activations), so their share is an input (``cache_skip``); MagCache
  decides from magnitude ratios its authors calibrated once per model and published, so its
  share follows from its threshold, K and retention (or ``cache_skip`` when given).
* ``cfg_free``: a guidance-distilled model runs one forward per step (with
  ``workload.num_inference_steps=4``: a few-step model such as LightX2V's distilled Wan2.1).
* ``cfg_batch``: the conditional and unconditional forwards of a step as one forward of batch 2.
* ``cuda_graphs``: the step replayed as a CUDA graph: the host's per-kernel launch cost becomes a
  graph node's.
* ``sparse``: the DiT's self-attention as a block-sparse kernel at the method's density and kernel
  rate (``sparse_density``, ``sparse_dense_steps``, ``sparse_dense_layers``).
* Quantized weights (:func:`quantized_weights`) under ``gemm_dtype=fp8``, ``fp8_tensor``, ``fp8_block``,
  ``int8``, ``nvfp4``.

Kernel-level what-ifs stay where the kernels are: ``attention=`` (the attention kernel),
``gemm_dtype=`` and ``time.execution=compiled``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs
import numpy as np

from ditmeter.analytic.cost import DTYPE_BYTES, Cost
from ditmeter.analytic.eager import EAGER_DTYPE_BYTES
from ditmeter.analytic.gemm_formats import gemm_format
from ditmeter.analytic.memory import weights_by_dtype
from ditmeter.analytic.timing import (
    ZERO,
    ForwardRun,
    Prediction,
    SparseAttention,
    StageKernels,
    TimePlan,
    Timing,
    kernel_time,
)
from ditmeter.analytic.tree import ModuleRow
from ditmeter.errors import ConfigError
from ditmeter.validate import boolean, finite_number, one_of, whole_number

if TYPE_CHECKING:
    from ditmeter.analytic.analysis import Analysis
    from ditmeter.analytic.device import DeviceSpec

#: The step-caching methods ``methods.cache`` names.
CACHES = ("teacache", "magcache", "easycache", "fbcache")
#: What a forward that reuses the cache still runs, per method: ``head`` = the DiT outside its
#: blocks (patch, time and text embeddings, the output head, unpatchify), ``first_block`` the
#: first transformer block too, ``none`` nothing of the DiT (the cached change is added to the
#: latent). Each from the method's Wan code (docs/whatif.md quotes the lines).
SKIPPED_RUNS = {"teacache": "head", "magcache": "head", "fbcache": "first_block", "easycache": "none"}
_SKIPPED_WORDS = {
    "head": "the embeddings and the head",
    "first_block": "the embeddings, the first block and the head",
    "none": "nothing of the DiT",
}
#: Block-sparse attention kernels (``methods.sparse``): each kept block's rate as a share of the dense
#: FlashAttention kernel's, and its source.
SPARSE_KERNELS: dict[str, tuple[float, str]] = {
    "vsa": (
        0.85,
        "Zhang et al., VSA: Faster Video Diffusion with Trainable Sparse Attention (arXiv 2505.13389), "
        "abstract: 'sustains 85% of FlashAttention3 MFU'",
    ),
    "sta": (
        round(0.5879 / 0.655, 3),
        "Zhang et al., Fast Video Generation with Sliding Tile Attention (arXiv 2502.04507), abstract: "
        "'achieving 58.79% MFU' on H100, over FA3's 0.655 of the H100 peak at hd128 and 16K tokens "
        "(FlashAttention-3 paper Fig. 5, configs/kernels/hopper.yaml)",
    ),
    "svg": (
        1.0,
        "assumed: no speed-versus-density figure of Sparse VideoGen's FlexAttention kernel is published; "
        "each kept 128x128 block at the dense kernel's rate (an upper bound on the speed)",
    ),
    "radial": (
        1.0,
        "assumed: no speed-versus-density figure of Radial Attention's FlashInfer block-sparse kernel is "
        "published; each kept 128x128 block at the dense kernel's rate (an upper bound on the speed)",
    ),
}
SPARSE = tuple(SPARSE_KERNELS)
#: Methods whose skipped share is decided from the real activations at run time.
DATA_DEPENDENT = ("teacache", "easycache", "fbcache")


@attrs.frozen
class Methods:
    """``methods.*``: the what-if methods applied to a run (all off by default)."""

    cache: str | None = attrs.field(default=None, validator=attrs.validators.optional(one_of(*CACHES)))
    #: the share of the DiT's forwards that reuse the cache (0 to 0.95)
    cache_skip: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(finite_number(0, maximum=0.95))
    )
    magcache_threshold: float = attrs.field(default=0.12, validator=finite_number(0, maximum=10))
    magcache_k: int = attrs.field(default=2, validator=whole_number(1, maximum=100))
    magcache_retention: float = attrs.field(default=0.2, validator=finite_number(0, maximum=1))
    cfg_free: bool = attrs.field(default=False, validator=boolean)
    cfg_batch: bool = attrs.field(default=False, validator=boolean)
    #: diffusers' tiled VAE decode (``AutoencoderKLWan.enable_tiling()``; models/wan21/vae_tiling.py)
    vae_tiling: bool = attrs.field(default=False, validator=boolean)
    #: LightX2V's VAE decode spread over a plan's GPUs (models/wan21/vae_parallel.py)
    vae_parallel: bool = attrs.field(default=False, validator=boolean)
    cuda_graphs: bool = attrs.field(default=False, validator=boolean)
    sparse: str | None = attrs.field(default=None, validator=attrs.validators.optional(one_of(*SPARSE)))
    #: the share of the self-attention's blocks the sparse kernel computes (0 to 1)
    sparse_density: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(finite_number(0.001, maximum=1))
    )
    sparse_dense_steps: float = attrs.field(default=0.0, validator=finite_number(0, maximum=1))
    sparse_dense_layers: int = attrs.field(default=0, validator=whole_number(0, maximum=1000))

    def __attrs_post_init__(self) -> None:
        if self.cache is None and self.cache_skip is not None:
            raise ConfigError("methods.cache_skip", "needs methods.cache (one of: " + ", ".join(CACHES) + ")")
        if self.cache in DATA_DEPENDENT and self.cache_skip is None:
            raise ConfigError(
                "methods.cache_skip",
                f"{self.cache} decides which steps to skip from the real activations; give the share of "
                "forwards your run skipped (0 to 0.95)",
            )
        if (self.sparse is None) != (self.sparse_density is None):
            key = "methods.sparse_density" if self.sparse is not None else "methods.sparse"
            raise ConfigError(
                key,
                "methods.sparse and methods.sparse_density go together: the method ("
                + ", ".join(SPARSE)
                + ") and the share of attention blocks it computes (docs/whatif.md lists each method's own)",
            )
        if self.cfg_free and self.cfg_batch:
            raise ConfigError(
                "methods.cfg_batch", "cannot combine with methods.cfg_free (one forward per step)"
            )


NO_METHODS = Methods()


@attrs.frozen
class CacheSchedule:
    """Which of a video's DiT forwards run the blocks (``computed``) and which reuse the cache."""

    method: str
    computed: int
    skipped: int
    #: how the split was decided (said in the report)
    why: str
    #: which forwards compute, in order, where the rule says (MagCache); None: only how many
    mask: tuple[bool, ...] | None = None
    #: where a given share is not whole forwards: what it was rounded to (a terminal warning)
    rounded: str | None = None


@attrs.frozen
class MagCacheModel:
    """What MagCache's rule needs of a model: its published ratios (``configs/cache/magcache.yaml``),
    which script runs it (``wan2.1``; Wan2.2's ``t2v`` and ``i2v`` two-expert modes or ``ti2v``) and,
    for the two-expert modes, the sampling shift and expert boundary."""

    name: str
    ratios: tuple[float, ...]
    mode: str  # "wan2.1", "t2v", "i2v", "ti2v"
    shift: float = 1.0
    boundary: float = 0.0


def _resampled(branch: list[float], steps: int) -> list[float]:
    """A branch's padded ratios at ``steps`` steps: the scripts' nearest-index resampling
    (``nearest_interp``: index ``round(i × (n − 1)/(steps − 1))``, numpy's round half to even)."""
    if len(branch) == steps:
        return branch
    if steps == 1:
        return [branch[-1]]
    scale = (len(branch) - 1) / (steps - 1)
    return [branch[round(i * scale)] for i in range(steps)]


def magcache_high_steps(steps: int, shift: float, boundary: float) -> int:
    """The steps MagCache's Wan2.2 script gives the high-noise expert: its own timesteps
    (``get_timesteps``: sigmas ``linspace(1, 0.01, steps + 1)[:-1]`` shifted by ``s·σ/(1 + (s−1)·σ)``,
    ``t = int(σ × 1000)`` in float32) at ``t >= boundary × 1000``."""
    sigmas = np.linspace(1.0, 0.01, steps + 1)[:-1]
    shifted = (shift * sigmas / (1 + (shift - 1) * sigmas)).astype(np.float32)
    return int(((shifted * 1000).astype(np.int64) >= boundary * 1000).sum())


def magcache_computed(
    model: MagCacheModel, steps: int, threshold: float, k: int, retention: float
) -> list[bool]:
    """Which of the ``2 × steps`` forwards (``cnt = 2·step + branch``, the conditional first) MagCache
    computes. Its scripts' rule (Zehong-Ma/MagCache @ df81cb18, ``magcache_forward``): the first
    forwards up to the retention always compute; after them each branch multiplies in its ratio
    ``r[cnt]``, adds ``|1 − Π r|`` to its error, and skips while the error is under ``threshold`` and
    its consecutive skips at most ``k``; a computed forward resets the branch's product, error and
    count. Wan2.2's two-expert scripts retain the first share of each expert's forwards (``t2v``) or
    every high-noise forward and the first share of the low-noise ones (``i2v``)."""
    padded = [1.0, 1.0, *model.ratios]
    cond = _resampled(padded[0::2], steps)
    uncond = _resampled(padded[1::2], steps)
    ratios = [r for pair in zip(cond, uncond, strict=True) for r in pair]
    n = 2 * steps
    split = 2 * magcache_high_steps(steps, model.shift, model.boundary) if model.mode in ("t2v", "i2v") else 0

    def retained(cnt: int) -> bool:
        if model.mode == "t2v":
            return cnt < int(split * retention) or split <= cnt <= (n - split) * retention + split
        if model.mode == "i2v":
            return cnt < int(split + (n - split) * retention)
        return cnt < int(n * retention)

    product, error, run = [1.0, 1.0], [0.0, 0.0], [0, 0]
    out = []
    for cnt in range(n):
        b = cnt % 2
        if retained(cnt):
            out.append(True)
            continue
        product[b] *= ratios[cnt]
        run[b] += 1
        error[b] += abs(1 - product[b])
        if error[b] < threshold and run[b] <= k:
            out.append(False)
        else:
            out.append(True)
            product[b], error[b], run[b] = 1.0, 0.0, 0
    return out


def cache_schedule(
    m: Methods, forwards: int, magcache: MagCacheModel | None = None, steps: int = 0
) -> CacheSchedule | None:
    """The split of ``forwards`` under ``m.cache`` (None: no caching): MagCache's rule on its
    published ratios (``magcache``, a run of ``steps`` steps of two forwards each) unless
    ``cache_skip`` is given; else the given share, rounded to the nearest whole forward and said so."""
    if m.cache is None:
        return None
    if m.cache_skip is None and magcache is not None and forwards == 2 * steps:
        computed = magcache_computed(
            magcache, steps, m.magcache_threshold, m.magcache_k, m.magcache_retention
        )
        why = (
            f"MagCache's rule on its published ratios for {magcache.name} at threshold "
            f"{m.magcache_threshold:g}, K {m.magcache_k}, retention {m.magcache_retention:g}"
        )
        return CacheSchedule(m.cache, sum(computed), forwards - sum(computed), why, tuple(computed))
    if m.cache_skip is None:
        reason = (
            "MagCache publishes no ratios for this model"
            if magcache is None
            else "MagCache's ratios interleave two guidance forwards per step; this run has one"
        )
        raise ConfigError("methods.cache_skip", f"{reason}; give the share of forwards skipped (0 to 0.95)")
    exact = m.cache_skip * forwards
    skipped = min(round(exact), forwards - 1)  # the first forward always computes
    why = f"methods.cache_skip={m.cache_skip:g} of {forwards} forwards"
    rounded = None
    if not math.isclose(exact, skipped):
        why += f" = {exact:g}, rounded to {skipped}"
        first = ", the first always computed" if round(exact) > skipped else ""
        rounded = (
            f"methods.cache_skip={m.cache_skip:g} of {forwards} forwards is {exact:g}: "
            f"{skipped} skipped, whole forwards{first}"
        )
    return CacheSchedule(m.cache, forwards - skipped, skipped, why, rounded=rounded)


def skipped_forward(p: Prediction, method: str, blocks_id: str, first_block_id: str) -> Timing:
    """One forward that reuses the cache under ``method``: the forward minus its blocks (plus the
    first block for FBCache), or nothing of the DiT (EasyCache)."""
    runs = SKIPPED_RUNS[method]
    if runs == "none":
        return ZERO
    forward, blocks = p.modules[p.forward_id], p.modules[blocks_id]
    out = forward.minus(blocks)
    return out + p.modules[first_block_id] if runs == "first_block" else out


def skipped_modules(forward_id: str, method: str, layers: int) -> tuple[str, ...]:
    """The module ids whose subtrees a reused forward does not run (:func:`skipped_forward`'s) in
    a denoiser ``forward_id`` of ``layers`` blocks."""
    runs = SKIPPED_RUNS[method]
    if runs == "none":
        return (forward_id,)
    if runs == "first_block":
        return tuple(f"{forward_id}.blocks.{i}" for i in range(1, layers))
    return (f"{forward_id}.blocks",)


def computed_among_first(schedule: CacheSchedule | None, computed: int, forwards: int) -> int:
    """How many of the first ``forwards`` forwards run their blocks (of ``computed`` in all): the
    schedule's rule where it says which (MagCache), else taken to be all of them."""
    if schedule is not None and schedule.mask is not None:
        return sum(schedule.mask[:forwards])
    return min(forwards, computed)


def with_runs(
    p: Prediction,
    schedule: CacheSchedule | None,
    residual: Timing | None,
    dense: Prediction | None = None,
    dense_forwards: int = 0,
) -> Prediction:
    """``p`` with its denoiser's forwards by kind. Under ``schedule`` (a step cache) the computed
    forwards also store their residual (``residual``: one pass writing blocks' output − input) and
    the skipped ones add it back; with sparse attention the first ``dense_forwards`` forwards run
    dense (``dense``: the same video without it) and the rest sparse (``p``). Where the cache's rule
    does not say which forwards compute (a given share), the dense forwards are taken to compute."""
    forwards = p.forwards_per_video
    extra = residual if residual is not None else ZERO
    computed = schedule.computed if schedule else forwards
    dense_computed = computed_among_first(schedule, computed, dense_forwards)
    runs = []
    if dense is not None and dense_computed:
        runs.append(ForwardRun("dense", dense_computed, dense.per_forward + extra, modules=dense.modules))
    runs.append(
        ForwardRun(
            "computed" if dense is None else "sparse", computed - dense_computed, p.per_forward + extra
        )
    )
    if schedule is not None:
        blocks_id, first = f"{p.forward_id}.blocks", f"{p.forward_id}.blocks.0"
        skip = skipped_forward(p, schedule.method, blocks_id, first) + extra
        block = re.compile(rf"{re.escape(blocks_id)}\.\d+")
        layers = sum(1 for m in p.modules if block.fullmatch(m))
        skipped = skipped_modules(p.forward_id, schedule.method, layers)
        runs.append(ForwardRun("cached", schedule.skipped, skip, skipped))
    return attrs.evolve(p, forward_runs=tuple(runs))


#: The cost of one kernel node of a replayed CUDA graph (the host launches the graph once): an upper
#: bound, since the tiny kernels' own execution is inside it.
GRAPH_NODE_S = 0.875e-6
GRAPH_NODE_SOURCE = (
    "CUDA.jl documentation, 'CUDA graphs' (cuda.juliagpu.org/dev/usage/graphs/): 'Integrating a small ODE "
    "for 10 steps with RK4 (80 broadcast kernels) goes from 260 us to 70 us, with only 3.5 us of CPU time': "
    "70 us / 80 nodes = 0.875 us per node, the kernels' execution included"
)


def sparse_attention(m: Methods, layers: int) -> SparseAttention | None:
    """``methods.sparse`` as the kernel the denoiser's self-attention runs: the method's density on
    its sparse layers, averaged with its dense ones (``sparse_dense_layers``: every layer's attention
    has the same FLOPs), at the method's kernel efficiency."""
    if m.sparse is None or m.sparse_density is None:
        return None
    if m.sparse_dense_layers > layers:
        raise ConfigError(
            "methods.sparse_dense_layers", f"{m.sparse_dense_layers} exceeds the DiT's {layers} blocks"
        )
    dense = m.sparse_dense_layers
    density = (dense + (layers - dense) * m.sparse_density) / layers
    return SparseAttention(m.sparse, density, SPARSE_KERNELS[m.sparse][0])


def with_cuda_graphs(plan: TimePlan) -> TimePlan:
    """``plan`` with the step replayed as a CUDA graph: each GPU kernel's launch cost is a graph
    node's (:data:`GRAPH_NODE_S`); the host CPU's own ops (``offload.t5_cpu``) keep theirs."""
    if plan.kernels is None:
        return plan  # the roofline: no launches
    host = attrs.evolve(plan.kernels.host, per_kernel_s=GRAPH_NODE_S, source=GRAPH_NODE_SOURCE)
    return attrs.evolve(plan, kernels=attrs.evolve(plan.kernels, host=host))


#: The methods that change how a device's kernels are timed (they need a device).
TIMED = ("cache", "cuda_graphs", "sparse")


def methods_plan(plan: TimePlan, m: Methods, layers: int) -> TimePlan:
    """``plan`` (one device's) with the methods that change its kernels: CUDA graphs' launches and
    the sparse self-attention of a DiT of ``layers`` blocks."""
    if m.cuda_graphs:
        plan = with_cuda_graphs(plan)
    return attrs.evolve(plan, sparse=sparse_attention(m, layers)) if m.sparse is not None else plan


#: The methods a multi-GPU plan takes: CUDA graphs (each rank's launches, its collectives captured
#: too), a guidance-distilled model's one forward per step, diffusers' tiled decode (rank 0's),
#: LightX2V's decode spread over the plan's GPUs, step caches and sparse attention where the plan's
#: code runs them (:mod:`ditmeter.analytic.plan_methods` refuses the rest); ``cfg_batch`` changes the
#: batch the plan's collectives carry (not modelled there).
CACHE_KEYS = ("cache", "cache_skip", "magcache_threshold", "magcache_k", "magcache_retention")
SPARSE_KEYS = ("sparse", "sparse_density", "sparse_dense_steps", "sparse_dense_layers")
UNDER_PLANS = ("cuda_graphs", "cfg_free", "vae_tiling", "vae_parallel", *CACHE_KEYS, *SPARSE_KEYS)


def check_under_plan(m: Methods, allowed: Sequence[str] = UNDER_PLANS) -> None:
    """Refuse, naming the key, a method a multi-GPU plan does not take (``allowed``)."""
    settings = (*CACHE_KEYS[1:], *SPARSE_KEYS[1:])  # a method's own settings, not methods
    named = [k for k in allowed if k not in settings]
    for f in attrs.fields(Methods):
        if f.name not in allowed and getattr(m, f.name) != f.default:
            raise ConfigError(
                f"methods.{f.name}",
                f"not modelled under a parallel.* plan yet (plans take: {', '.join(named)}); drop it "
                "or run on one GPU",
            )


def needs_device(m: Methods) -> str | None:
    """The first ``methods.*`` key set that changes the predicted time (None: none)."""
    return next((f"methods.{k}" for k in TIMED if getattr(m, k) not in (None, False)), None)


def residual_pass(elements: int, dtype: str, p: Prediction) -> Timing:
    """One element-wise pass over the residual stream (``elements`` in ``dtype``): two tensors read,
    one written (a computed forward storing ``out - in``; a skipped one adding it back)."""
    return residual_time(elements, dtype, p.device, p.plan)


def residual_time(elements: int, dtype: str, device: DeviceSpec, plan: TimePlan) -> Timing:
    """:func:`residual_pass` on ``device`` under ``plan``."""
    size = elements * EAGER_DTYPE_BYTES[dtype]
    row = ModuleRow("cache", None, 0, "leaf", "cache", None, Cost(bytes_read=2 * size, bytes_written=size))
    return kernel_time(row, device, plan, StageKernels(dtype if dtype in DTYPE_BYTES else "fp32"))


def cache_note(s: CacheSchedule, forwards: int, held_bytes: int) -> str:
    """What a report says about the step cache."""
    gib = held_bytes / 2**30
    return (
        f"Step cache ({s.method}, methods.cache): {s.computed} of {forwards} DiT forwards run the blocks, "
        f"{s.skipped} reuse the cached residual ({s.why}); a skipped forward runs "
        f"{_SKIPPED_WORDS[SKIPPED_RUNS[s.method]]}"
        f"; the cache holds {gib:.2f} GiB of residuals (one per guidance branch), live through the "
        "DiT stage (added to its activations in the memory timeline)."
    )


def quantized_weights(a: Analysis, gemm_dtype: str | None) -> Analysis:
    """``a`` with the DiT's matmul weights stored in ``gemm_dtype``'s quantized format
    (:mod:`~ditmeter.analytic.gemm_formats`: the FP8 and NVFP4 checkpoints of LightX2V's Wan paths),
    scales included: the memory timeline's DiT weights (so the offload transfers) and the forward's
    footprint; only the blocks' linears (``GemmFormat.stored``): biases, norms, embeddings, the time
    projection, the head and modulation keep their dtype.
    ``a`` itself for a 16-bit ``gemm_dtype``."""
    fmt = gemm_format(gemm_dtype)
    if fmt is None:
        return a

    old: dict[str, int] = a.footprint.weights_by_dtype
    new = weights_by_dtype(a.forward.tree, a.workload.dtype, fmt.stored)
    before, after = sum(old.values()), sum(new.values())
    if not before:
        return a
    component = a.forward.name

    def scaled(b: int) -> int:  # the component holds a whole number of forward trees (Wan2.2: 2 experts)
        return round(b * after / before)

    memory = a.memory
    components = dict(memory.components)
    if component in components:
        copies = sum(components[component].values()) / before
        components[component] = {k: round(v * copies) for k, v in new.items()}
    phases = tuple(
        attrs.evolve(ph, resident={**ph.resident, component: scaled(ph.resident[component])})
        if component in ph.resident
        else ph
        for ph in memory.phases
    )
    note = (
        f"Quantized weights (gemm_dtype={fmt.name}): the DiT's matmul weights stored in {fmt.name}, "
        f"{fmt.element_bits} bits an element plus their scales: {after / 2**30:.2f} GiB per copy of the DiT "
        f"instead of {before / 2**30:.2f} GiB."
    )
    return attrs.evolve(
        a,
        footprint=attrs.evolve(a.footprint, weights_by_dtype=new),
        memory=attrs.evolve(memory, components=components, phases=phases),
        notes=(*a.notes, note),
    )
