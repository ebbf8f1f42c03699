"""Step caches and sparse attention under a multi-GPU plan (``methods.*`` with ``parallel.*``;
docs/whatif.md "Under a plan"): one GPU's forwards as the plan's code runs them when a method
changes which forwards run their blocks or which attention kernel they call.

* **Step caches.** Every rank must skip the same forwards, or a rank that computes waits forever in
  an all-to-all that a skipping rank never issues. MagCache decides from per-step ratios published
  once per model and TeaCache from the time embedding (``e``/``e0``, computed whole on every rank
  before the sequence is split): the same decision on every rank with no communication, as
  LightX2V runs both with ``seq_p_size`` and ``cfg_p_size``
  (``lightx2v/models/networks/wan/infer/feature_caching/transformer_infer.py`` @ f8aee98;
  ``configs/caching/magcache/wan_t2v_dist_cfg_ulysses_mag_1_3b.json``). FBCache decides from the
  first block's residual, which each rank holds only for its shard: cache-dit and ParaAttention
  all-reduce the two means it compares over diffusers' context parallel (cache-dit
  ``cache_manager.py`` L612-614 @ f86744a; ParaAttention ``first_block_cache/utils.py`` L230-232
  @ 4de137c), two scalar all-reduces per forward (:func:`decision_comm`).
* A skipped forward on a rank runs what it runs on one GPU on the rank's shard: the residual add
  over its tokens, the embeddings and the head (and the first block for FBCache), with only the
  collectives outside the blocks (the head's output gather, FSDP's root unit); the blocks' all-to-
  alls, ring exchanges and FSDP block gathers are issued by computed forwards only.
* **CFG parallel** (``parallel.cfg=2``, LightX2V's ``cfg_p_size``): each half runs one branch by
  its own rule (LightX2V keeps MagCache's state per ``infer_condition``) and the two exchange their
  predictions every step, so a step takes the slower half: a step computes when either branch does.
* **Sparse attention** under Ulysses: each rank attends over the whole sequence for its heads, so
  the method's per-head density and kernel apply as on one GPU.
"""

from __future__ import annotations

import attrs

from ditmeter.analytic.device import DeviceSpec
from ditmeter.analytic.eager import EAGER_DTYPE_BYTES
from ditmeter.analytic.methods import (
    SKIPPED_RUNS,
    CacheSchedule,
    Methods,
    computed_among_first,
    skipped_modules,
)
from ditmeter.analytic.parallel import (
    CollectiveSpec,
    Comm,
    ParallelEstimate,
    ParallelPlan,
    RankPlan,
    RankRun,
)
from ditmeter.analytic.timing import ZERO, StageKernels, TimePlan, Timing, leaf_time
from ditmeter.analytic.tree import walk
from ditmeter.errors import ConfigError

#: Why a method is refused under a plan (exit 2 naming its key).
EASYCACHE_REFUSED = (
    "no published code runs EasyCache on many GPUs: EasyCache4Wan2.1 (H-EmbodVis/EasyCache @ 5127804) "
    "sets the model class's forward, which the official multi-GPU path's per-instance usp_dit_forward "
    "shadows (Wan2.1 wan/text2video.py L100 @ 9737cba), so it runs uncached there; run on one GPU"
)
FBCACHE_OFFICIAL_REFUSED = (
    "LightX2V's first-block cache (WanTransformerInferFirstBlock @ f8aee98) decides on each rank's own "
    "shard with no all-reduce, so ranks would disagree; cache-dit and ParaAttention all-reduce the "
    "decision under diffusers' context parallel: use pipeline=diffusers"
)
FBCACHE_CFG_REFUSED = (
    "no published code runs the first-block cache with CFG parallel (cache-dit and ParaAttention run "
    "diffusers' context parallel, which does not split guidance); allowed: parallel.cfg=1"
)
TEACACHE_MIXED_REFUSED = (
    "TI2V's time embedding differs along the sequence (the image frame at timestep 0) and LightX2V "
    "splits it with the sequence (WanModel._seq_parallel_pre_process @ f8aee98), so each rank would "
    "decide TeaCache on its own shard with no all-reduce; run on one GPU or use magcache"
)
SPARSE_RING_REFUSED = (
    "ring attention gives each rank a slice of the keys, so each chunk needs its own slice of the "
    "method's mask; the sparse codes checked run Ulysses only (Radial Attention's wan_t2v_inference.py "
    "@ 72788d4 sets ring_degree=1, FastVideo's VSA and STA go through its Ulysses all-to-all @ 2f3d407, "
    "Sparse VideoGen's Wan path @ 5ce7b01 has no sequence parallel); allowed: parallel.ring=1"
)


def check_plan_methods(
    m: Methods, plan: ParallelPlan, pipeline: str, *, mixed_timesteps: bool = False
) -> None:
    """Refuse, naming the key, a step cache or sparse attention the plan's code cannot run
    (``mixed_timesteps``: the model's tokens denoise at different timesteps)."""
    if plan.single:
        return
    if m.cache == "teacache" and mixed_timesteps:
        raise ConfigError("methods.cache", TEACACHE_MIXED_REFUSED)
    if m.cache == "easycache":
        raise ConfigError("methods.cache", EASYCACHE_REFUSED)
    if m.cache == "fbcache" and pipeline == "official":
        raise ConfigError("methods.cache", FBCACHE_OFFICIAL_REFUSED)
    if m.cache == "fbcache" and plan.cfg > 1:
        raise ConfigError("methods.cache", FBCACHE_CFG_REFUSED)
    if m.sparse is not None and plan.ring > 1:
        raise ConfigError("methods.sparse", SPARSE_RING_REFUSED)


def rank_schedule(s: CacheSchedule, cfg: int, forwards_per_step: int) -> CacheSchedule:
    """The forwards one GPU of a plan with ``cfg`` CFG halves runs and skips, from the one-GPU
    schedule ``s`` of ``forwards_per_step`` forwards a step (branch 0 first). Without CFG parallel
    every rank runs every forward by the same decision: ``s`` itself. With it each half runs one
    branch and a step waits for the slower half, so a step computes when either branch does (a
    rule's mask); a given share (TeaCache: both branches decide from the same time embedding, so
    they skip the same steps) skips half the one-GPU forwards, rounded down."""
    if cfg == 1:
        return s
    steps = (s.computed + s.skipped) // forwards_per_step
    if s.mask is not None:
        mask = tuple(any(s.mask[i * forwards_per_step : (i + 1) * forwards_per_step]) for i in range(steps))
        why = f"{s.why}; a step computes on a CFG half when either branch computes"
        return CacheSchedule(s.method, sum(mask), steps - sum(mask), why, mask)
    skipped = s.skipped // forwards_per_step
    why = f"{s.why}; each CFG half skips the same {skipped} of its {steps} forwards"
    return CacheSchedule(s.method, steps - skipped, skipped, why)


def rank_skipped_forward(
    rank: RankPlan, device: DeviceSpec, time: TimePlan, stage: StageKernels, method: str
) -> Timing:
    """One skipped forward's compute on the rank: its forward's leaves outside the blocks (the
    embeddings whole, the head on its shard, unpatchify), plus one block for FBCache; nothing for
    EasyCache."""
    runs = SKIPPED_RUNS[method]
    if runs == "none":
        return ZERO
    outside, block = ZERO, ZERO
    for r in walk(rank.forward, expand=False):
        if r.kind != "leaf":
            continue
        t = leaf_time(r, device, time, stage)
        if r.module_id.startswith(rank.block + "."):
            block = block + t  # one copy of each of the block's leaves
        else:
            outside = outside + (t if r.copies == 1 else t.times(r.copies))
    return outside + block if runs == "first_block" else outside


def forward_comm_s(est: ParallelEstimate, blocks: int, layers: int) -> float:
    """The per-forward communication a forward that runs ``blocks`` of the ``layers`` blocks waits
    for: the collectives outside the blocks whole, those inside at ``blocks / layers`` of their
    count (each block issues its share), under the same overlap rule."""
    out = 0.0
    for t in est.comms:
        if t.comm.per != "forward":
            continue
        out += t.exposed_for(t.comm.spec.count * blocks // layers) if t.comm.in_blocks else t.exposed_s
    return out


def decision_comm(rank: RankPlan, dtype: str) -> Comm:
    """FBCache's decision under context parallel: ``dist.all_reduce`` (AVG, the default group: every
    GPU of the plan) of the two 0-d means it compares, ``mean_diff`` and ``mean_t1``, in the residual
    stream's ``dtype``, once per forward (counted on every forward, the first too)."""
    size = EAGER_DTYPE_BYTES[dtype]
    spec = CollectiveSpec("all_reduce", rank.plan.gpus, size, size, 2)
    return Comm(spec, "the first-block cache's decision (cache-dit's all-reduce of two means)")


def shard_elements(rank: RankPlan, elements: int) -> int:
    """The rank's share of ``elements`` of the whole residual stream: its padded sequence shard."""
    return elements // rank.tokens * (rank.padded_tokens // rank.plan.sequence.degree)


def with_rank_cache(
    rank: RankPlan, *, elements: int, dtype: str, method: str, branches: int, stage: str
) -> RankPlan:
    """``rank`` holding a step cache: ``branches`` residuals of its sequence shard (``elements`` of
    the whole stream, one branch, in ``dtype``) live through the denoiser's ``stage``, and FBCache's decision
    all-reduce among its collectives."""
    held = branches * shard_elements(rank, elements) * EAGER_DTYPE_BYTES[dtype]
    memory = rank.memory
    phases = tuple(
        attrs.evolve(ph, activation_bytes=(ph.activation_bytes or 0) + held) if ph.stage == stage else ph
        for ph in memory.phases
    )
    comms = (*rank.comms, decision_comm(rank, dtype)) if method == "fbcache" else rank.comms
    note = (
        f"Step cache under the plan ({method}): every GPU skips the same forwards (the decision is the "
        "same on every rank: see docs/whatif.md); a skipped forward adds the residual of the GPU's "
        f"{rank.padded_tokens // rank.plan.sequence.degree:,}-token shard and issues no collective of the "
        f"blocks; the cache holds {held / 2**30:.2f} GiB on this GPU ({branches} branch(es))."
    )
    return attrs.evolve(
        rank, memory=attrs.evolve(memory, phases=phases), comms=comms, notes=(*rank.notes, note)
    )


def with_rank_runs(
    est: ParallelEstimate,
    *,
    schedule: CacheSchedule | None,
    skipped: Timing,
    skipped_blocks: int,
    layers: int,
    residual: Timing | None,
    dense: ParallelEstimate | None = None,
    dense_forwards: int = 0,
) -> ParallelEstimate:
    """``est`` with its GPU's forwards by kind: under ``schedule`` (the rank's, :func:`rank_schedule`)
    the computed forwards also store their residual shard (``residual``) and the skipped ones run
    ``skipped`` plus the residual add, waiting only for the collectives of ``skipped_blocks`` blocks
    and those outside them; with sparse attention the first ``dense_forwards`` forwards run as
    ``dense`` (the same plan without it). The denoiser's seconds per video become their sum."""
    extra = residual if residual is not None else ZERO
    computed = schedule.computed if schedule else est.steps * est.forwards_per_gpu_step
    dense_computed = computed_among_first(schedule, computed, dense_forwards)
    runs = []
    if dense is not None and dense_computed:
        runs.append(RankRun("dense", dense_computed, dense.compute + extra, dense.exposed_s("forward")))
    kind = "computed" if dense is None else "sparse"
    runs.append(RankRun(kind, computed - dense_computed, est.compute + extra, est.exposed_s("forward")))
    if schedule is not None:
        comm = forward_comm_s(est, skipped_blocks, layers) if SKIPPED_RUNS[schedule.method] != "none" else 0.0
        ids = skipped_modules(est.forward_stage, schedule.method, layers)
        runs.append(RankRun("cached", schedule.skipped, skipped + extra, comm, ids))
    stages = dict(est.stage_video_s)
    if est.forward_stage in stages:
        video = sum(r.count * r.forward_s for r in runs) + est.steps * est.exposed_s("step")
        stages[est.forward_stage] = video
    return attrs.evolve(est, forward_runs=tuple(runs), stage_video_s=stages)
