"""Multi-GPU plans (``parallel.*``) per GPU: the plan, the FLOPs and collectives of one rank, and
its time (``docs/parallel.md``).

A plan of ``ulysses`` × ``ring`` ranks splits the sequence ``degree`` = ulysses × ring ways.
Work after the split is divided exactly; the work every rank repeats (a family states which
leaves: what runs before the split, or over the unsplit context) is whole on every rank::

    tensor FLOPs per rank = (single − repeated) / degree + repeated

The collectives are the family's plan (:class:`CollectiveSpec`, one row per kind and size, with
how many a forward issues); ``ditmeter.compare.parallel`` holds them against a traced run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from ditmeter.analytic.analysis import Analysis, Stage
from ditmeter.analytic.collective_time import NODE_GPUS, collective_time, domain_gpus
from ditmeter.analytic.cost import DTYPE_BYTES
from ditmeter.analytic.device import DeviceSpec
from ditmeter.analytic.fabric import FabricTable
from ditmeter.analytic.memory import Footprint, Timeline
from ditmeter.analytic.network import NetworkTable
from ditmeter.analytic.timing import ZERO, StageKernels, TimePlan, Timing, leaf_time, runs_module
from ditmeter.analytic.tree import Composite, Repeated, walk
from ditmeter.errors import ConfigError
from ditmeter.validate import FieldError, boolean, parse, positive_int_at_most

#: GPUs of one plan at most: the largest NVLink domain of the catalog (a GB200 NVL72 rack), or
#: nine 8-GPU nodes over the device's network (:func:`check_domain`).
MAX_GPUS = 72
#: FSDP FULL_SHARD units gathered at once while one runs: the running block and the next one
#: (FSDP1's rate limiter allows two in flight; FSDP2 prefetches one).
FSDP_IN_FLIGHT = 2


def _cfg_degree(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value not in (1, 2) or isinstance(value, bool):
        raise FieldError(attribute.name, f"{value!r} not allowed; allowed: 1, 2")


_gpus = positive_int_at_most(MAX_GPUS, "a GB200 NVL72's 72, or nine nodes of 8, at most")

#: Whose sequence-parallel code a plan runs (``parallel.runtime``): ``own``, the pipeline's own
#: (generate.py's USP, diffusers' ``ContextParallelConfig``); ``xdit``, xDiT 0.4.5's ``USP`` patched
#: onto the diffusers modules (``xFuserWanAttnProcessor`` on every attention, as the ML.ENERGY
#: benchmark runs Wan: ``models/wan21/parallel.py``).
RUNTIMES = ("own", "xdit")


def _runtime(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value not in RUNTIMES:
        raise FieldError(attribute.name, f"{value!r} not allowed; allowed: {', '.join(RUNTIMES)}")


def check_domain(plan: ParallelPlan, device: DeviceSpec, key: str = "parallel.gpus") -> None:
    """Refuse a plan beyond one node of ``device`` where the catalog has no network between its
    nodes, or that is not whole nodes (``key`` names the field)."""
    node = domain_gpus(device)
    if plan.gpus <= node:
        return
    if device.network is None:
        raise ConfigError(
            key,
            f"{plan.gpus} GPUs exceed one node of {device.name} ({node} GPUs) and the catalog has no "
            f"network between its nodes; allowed: 1 to {node}",
        )
    if plan.gpus % node:
        raise ConfigError(
            key,
            f"{plan.gpus} GPUs are not whole nodes of {node} {device.name}s; allowed: 1 to {node} or a "
            f"multiple of {node} up to {MAX_GPUS}",
        )


@attrs.frozen
class ParallelPlan:
    """``parallel.*``: ``gpus`` = ulysses × ring × cfg GPUs; the sequence split ``ulysses`` ×
    ``ring`` ways inside each CFG group; ``cfg`` 2 runs the conditional and unconditional forwards
    on different GPUs; ``dit_fsdp``/``t5_fsdp`` shard those weights over every GPU (FULL_SHARD,
    one unit per block)."""

    # the degrees first: attrs validates in this order, so a bad degree is named before gpus
    ulysses: int = attrs.field(default=1, validator=_gpus)
    ring: int = attrs.field(default=1, validator=_gpus)
    cfg: int = attrs.field(default=1, validator=_cfg_degree)
    dit_fsdp: bool = attrs.field(default=False, validator=boolean)
    t5_fsdp: bool = attrs.field(default=False, validator=boolean)
    gpus: int = attrs.field(default=1, validator=_gpus)
    runtime: str = attrs.field(default="own", validator=_runtime)

    def __attrs_post_init__(self) -> None:
        if self.gpus != self.ulysses * self.ring * self.cfg:
            raise FieldError(
                "gpus",
                f"{self.gpus} must equal ulysses × ring × cfg = {self.ulysses} × {self.ring} × {self.cfg} "
                f"= {self.ulysses * self.ring * self.cfg}",
            )

    @classmethod
    def from_mapping(cls, raw: Any) -> ParallelPlan:
        """The ``parallel`` section; ``gpus`` null is ulysses × ring × cfg."""
        if not isinstance(raw, Mapping):
            return parse(cls, {} if raw is None else raw, "parallel")
        raw = dict(raw)
        if raw.get("gpus") is None:
            product = 1
            for key in ("ulysses", "ring", "cfg"):
                value = raw.get(key)
                product *= (
                    value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 1
                )
            raw["gpus"] = product
        return parse(cls, raw, "parallel")

    @property
    def sequence(self) -> ContextParallel:
        return ContextParallel(self.ulysses, self.ring)

    @property
    def single(self) -> bool:
        return self.gpus == 1

    @property
    def name(self) -> str:
        """For people: ``8 GPUs: ulysses 4 × ring 2, DiT FSDP``."""
        if self.single:
            return "1 GPU"
        parts = [
            f"{k} {v}"
            for k, v in (("ulysses", self.ulysses), ("ring", self.ring), ("cfg", self.cfg))
            if v > 1
        ]
        fsdp = [n for n, on in (("DiT FSDP", self.dit_fsdp), ("T5 FSDP", self.t5_fsdp)) if on]
        fsdp += ["xDiT USP"] if self.runtime == "xdit" else []
        return f"{self.gpus} GPUs: " + " × ".join(parts or ["replicas"]) + "".join(f", {f}" for f in fsdp)

    def as_dict(self) -> dict[str, int | bool | str]:
        keys = attrs.asdict(self)
        return {"gpus": keys.pop("gpus"), **keys}


SINGLE = ParallelPlan()


@attrs.frozen
class ContextParallel:
    """``ulysses`` × ``ring`` ranks on the sequence (``parallel.ulysses``, ``parallel.ring``)."""

    ulysses: int = 1
    ring: int = 1

    @property
    def degree(self) -> int:
        return self.ulysses * self.ring

    def check(self, *, tokens: int, heads: int, exact_split: bool = True) -> None:
        """Refuse what the parallel code refuses: heads not divisible by ``ulysses`` (each rank
        takes whole heads) and a sequence not divisible by the degree (diffusers' sharder asserts)."""
        for name, value in (("ulysses", self.ulysses), ("ring", self.ring)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"parallel.{name}", f"must be a positive integer, got {value!r}")
        if heads % self.ulysses:
            raise ConfigError("parallel.ulysses", f"{self.ulysses} does not divide the model's {heads} heads")
        if exact_split and tokens % self.degree:
            raise ConfigError(
                "parallel",
                f"{tokens:,} tokens do not split {self.degree} ways (ulysses × ring); the "
                "sharder needs an exact split",
            )


@attrs.frozen(order=True)
class CollectiveSpec:
    """Collectives of one kind and size on one rank: ``count`` of them per forward."""

    op: str  # the functional collective's name (``all_to_all_single``, ``all_gather_into_tensor``)
    group_size: int
    input_bytes: int
    output_bytes: int
    count: int


def split_flops(*, single: int, repeated: int, degree: int) -> int:
    """Tensor FLOPs one rank runs (see the module docstring); the split part must divide exactly."""
    if not 0 <= repeated <= single or (single - repeated) % degree:
        raise ValueError(f"{single - repeated} split FLOPs do not divide {degree} ways")
    return (single - repeated) // degree + repeated


#: Where a collective's time can hide: ``none`` (the next op waits for it), ``block`` (FSDP's
#: gather of the next block runs while the current block computes), ``attention`` (a ring's K/V
#: exchange runs while the attention of the previous chunk computes).
OVERLAPS = ("none", "block", "attention")
#: The cost model's collective for each traced op name.
COST_OP = {
    "all_to_all_single": "all_to_all",
    "all_gather_into_tensor": "all_gather",
    "_allgather_base_": "all_gather",
    "send_recv": "all_gather",
    "all_reduce": "all_reduce",
}


@attrs.frozen
class Comm:
    """Collectives of one kind on one rank, where they sit, and what can hide their time."""

    spec: CollectiveSpec
    what: str  # for people: "q, k, v and the output (Ulysses)"
    per: str = "forward"  # forward, step or video: how often ``spec.count`` of them run
    overlap: str = "none"
    #: ranks between the group's members: Ulysses groups are contiguous (1), a ring's members are
    #: ``ulysses`` apart, the CFG halves ``ulysses × ring`` (:mod:`ditmeter.analytic.network`)
    stride: int = 1
    #: issued inside the transformer blocks (``spec.count`` a multiple of the blocks): a forward that
    #: skips its blocks (a step cache) issues none of them
    in_blocks: bool = False


@attrs.frozen
class RankPlan:
    """What a family says one GPU runs under a plan: its share of a denoiser forward, its
    collectives and its memory for one video (rank 0: the one that also decodes)."""

    plan: ParallelPlan
    #: one rank's forward as it runs (the sequence shard; whole leaves where it repeats them; under
    #: the official FSDP its weights in the bf16 they are gathered in, while ``memory`` and
    #: ``footprint`` keep the stored dtype)
    forward: Composite
    comms: tuple[Comm, ...]
    tokens: int  # video tokens (the whole sequence)
    padded_tokens: int  # after the pipeline's padding to a multiple of the sequence degree
    memory: Timeline
    footprint: Footprint  # the forward's weights and live activations on this rank
    block: str  # compact id of one block of ``forward`` (``blocks.*``)
    attention: str  # compact id of one block's self-attention core
    notes: tuple[str, ...] = ()
    #: the attention the plan's DiT calls where it is not the stage's own (None: the stage's)
    attention_impl: str | None = None
    #: stages other than the denoiser that this rank runs in a form of its own (its share of a decode
    #: spread over the plan, ``methods.vae_parallel``), in place of the one-GPU stage of that name
    stages: tuple[Stage, ...] = ()

    def forward_stage(self, forward: Stage) -> Stage:
        """``forward`` (the denoiser stage) with the attention this plan's code calls."""
        impl = self.attention_impl
        return forward if impl is None else attrs.evolve(forward, attention=impl)

    def apply(self, analysis: Analysis) -> Analysis:
        """``analysis`` as one GPU of the plan sees it: this rank's denoiser forward, memory and
        footprint (every DiT figure of the tables is then one GPU's share)."""
        # a GPU runs 1 in ``cfg`` of a step's forwards
        runs = analysis.forward.runs_per_video // self.plan.cfg
        f = attrs.evolve(self.forward_stage(analysis.forward), tree=self.forward, runs_per_video=runs)
        own = {s.name: s for s in (*self.stages, f)}
        stages = tuple(own.get(s.name, s) for s in analysis.stages)
        note = (
            f"Under the plan {self.plan.name}: the {f.name} rows, categories and per-forward totals are one "
            "GPU's share of each forward (rank 0: its sequence shard, the leaves every rank repeats whole); "
            "its time leaves out communication (report.json parallel, parallel.parquet); the memory is "
            "rank 0's."
        )
        return attrs.evolve(
            analysis,
            forward=f,
            stages=stages,
            memory=self.memory,
            footprint=self.footprint,
            notes=(*analysis.notes, *self.notes, note),
        )


@attrs.frozen
class CommTime:
    """One :class:`Comm` on a device: seconds per call and what stays exposed, per its ``per``."""

    comm: Comm
    call_s: float
    sent_bytes: int  # per call, each direction
    exposed_s: float  # of all ``count`` calls
    nodes: int = 1  # the nodes its group spans (more than one: over the device's network)
    #: the compute each call hides under (one block for ``block``, one attention for ``attention``)
    hidden_s: float = 0.0

    @property
    def total_s(self) -> float:
        return self.call_s * self.comm.spec.count

    def exposed_for(self, count: int) -> float:
        """What ``count`` calls leave exposed under the overlap rule (:func:`comm_time`)."""
        t = self.call_s
        if count <= 0:
            return 0.0
        if self.comm.overlap == "block":
            return t + (count - 1) * max(0.0, t - self.hidden_s)
        if self.comm.overlap == "attention":
            return count * max(0.0, t - self.hidden_s)
        return count * t


def comm_time(
    c: Comm,
    device: DeviceSpec,
    *,
    block_s: float,
    attention_s: float,
    fabric: FabricTable | None = None,
    network: NetworkTable | None = None,
    gpus: int | None = None,
) -> CommTime:
    """:func:`collective_time` of ``c`` and the overlap rule: ``none``
    all exposed; ``block`` the first block's gather exposed, each later one only beyond the block
    it hides under; ``attention`` each only beyond the attention it hides under."""
    s = c.spec
    op = COST_OP[s.op]
    size = s.output_bytes if op == "all_gather" else s.input_bytes
    cost = collective_time(
        op,
        ranks=s.group_size,
        tensor_bytes=size,
        device=device,
        fabric=fabric,
        stride=c.stride,
        gpus=gpus,
        network=network,
        p2p=s.op == "send_recv",
    )
    hidden = {"block": block_s, "attention": attention_s}.get(c.overlap, 0.0)
    out = CommTime(c, cost.time_s, cost.sent_bytes, 0.0, cost.nodes, hidden)
    return attrs.evolve(out, exposed_s=out.exposed_for(s.count))


def link_shared_block_s(block_s: float, ring: Sequence[CommTime], gathers: int) -> float:
    """The compute of one block left to hide a weight gather under (one of ``gathers`` per
    forward) once the ring's exchanges, on the same link, have hidden under it: ``block_s`` less
    each gather's share of the ring's hidden seconds per forward (the exchanges and the gathers are
    both issued once per block, so the share is the ring's per block)."""
    hidden = sum(min(t.call_s, t.hidden_s) * t.comm.spec.count for t in ring)
    return max(0.0, block_s - hidden / gathers) if gathers else block_s


#: rank_forward_time's answers by (the rank's forward, block and attention ids, device and plan
#: ids, stage), each kept with the device and plan it was computed for (an id is only reused once
#: its object is gone, and the identity check then misses): plans that differ only in what they
#: shard (DiT or T5 FSDP, offload) run the same forward, and `plan` and `sweep gpus=` cost them all
_RANK_FORWARD: dict[tuple[object, ...], tuple[DeviceSpec, TimePlan, tuple[Timing, float, float]]] = {}
_RANK_FORWARD_MAX = 256


def rank_forward_time(
    rank: RankPlan, device: DeviceSpec, plan: TimePlan, stage: StageKernels
) -> tuple[Timing, float, float]:
    """(the rank's forward compute, one block's seconds, one block's self-attention core's seconds)."""
    key = (rank.forward, rank.block, rank.attention, id(device), id(plan), stage)
    hit = _RANK_FORWARD.get(key)
    if hit is not None and hit[0] is device and hit[1] is plan:
        return hit[2]
    out = _rank_forward_time(rank, device, plan, stage)
    if len(_RANK_FORWARD) >= _RANK_FORWARD_MAX:
        _RANK_FORWARD.clear()
    _RANK_FORWARD[key] = (device, plan, out)
    return out


def _rank_forward_time(
    rank: RankPlan, device: DeviceSpec, plan: TimePlan, stage: StageKernels
) -> tuple[Timing, float, float]:
    total, block, attention = ZERO, 0.0, 0.0
    for r in walk(rank.forward, expand=False):
        if r.kind != "leaf":
            continue
        t = leaf_time(r, device, plan, stage)
        total = total + (t if r.copies == 1 else t.times(r.copies))
        if r.module_id.startswith(rank.block + "."):
            block += t.predicted_s
        if r.module_id == rank.attention:
            attention = t.predicted_s
    return total, block, attention


def fsdp_weight_bytes(tree: Composite, by_dtype: dict[str, int], gpus: int) -> tuple[dict[str, int], int]:
    """A component sharded with FSDP FULL_SHARD (one unit per block of its ``Repeated`` children,
    the rest in the root unit) on one rank: (its 1/``gpus`` share of the stored weights
    ``by_dtype``, resident throughout; the bf16 bytes gathered while it runs: the root unit and
    :data:`FSDP_IN_FLIGHT` blocks, freed again after the run)."""
    blocks = [c for c in tree.children if isinstance(c, Repeated)]
    block_params = max((b.template.total.params for b in blocks), default=0)
    in_flight = min(FSDP_IN_FLIGHT, max((b.count for b in blocks), default=0))
    root_params = tree.total.params - sum(b.total.params for b in blocks)
    sharded = {dtype: math.ceil(n / gpus) for dtype, n in by_dtype.items()}
    return sharded, DTYPE_BYTES["bf16"] * (root_params + in_flight * block_params)


@attrs.frozen
class RankRun:
    """``count`` of one GPU's denoiser forwards per video that run alike under a what-if method (a
    step cache's computed and skipped forwards, sparse attention's dense ones): each ``compute`` plus
    ``comm_s``, the plan's per-forward communication it waits for."""

    kind: str
    count: int
    compute: Timing
    comm_s: float
    #: module ids whose subtrees this kind does not run (a cached forward's blocks)
    skipped: tuple[str, ...] = ()
    #: this kind's time of every module of the GPU's forward where it is not the rank prediction's
    #: (sparse attention's dense warm-up); None: the rank prediction's
    modules: dict[str, Timing] | None = attrs.field(default=None, eq=False)

    def runs(self, module_id: str) -> bool:
        """Whether this kind of forward runs ``module_id``."""
        return runs_module(self.skipped, module_id)

    @property
    def forward_s(self) -> float:
        return self.compute.predicted_s + self.comm_s


@attrs.frozen
class ParallelEstimate:
    """Time per GPU of one video under a plan, against the same video on one GPU."""

    rank: RankPlan
    compute: Timing  # one rank's denoiser forward, without communication
    comms: tuple[CommTime, ...]
    forwards_per_step: int  # on one GPU (the CFG split divides them)
    steps: int
    stage_video_s: dict[str, float]  # every selected stage per video on a GPU of the plan
    single_video_s: float  # the same stages on one GPU
    forward_stage: str
    node_gpus: int = NODE_GPUS  # GPUs of one node of the device
    node_nics: int | None = None  # its NICs per node where fewer than one per GPU (``nics_per_node``)
    #: the GPU's forwards by kind where a method runs them differently (empty: every forward is
    #: ``compute`` with every per-forward collective); ``stage_video_s`` then sums them
    forward_runs: tuple[RankRun, ...] = ()

    @property
    def nodes(self) -> int:
        """The nodes the plan spans."""
        return -(-self.plan.gpus // self.node_gpus)

    @property
    def plan(self) -> ParallelPlan:
        return self.rank.plan

    def exposed_s(self, per: str) -> float:
        return sum(t.exposed_s for t in self.comms if t.comm.per == per)

    @property
    def forward_s(self) -> float:
        """One denoiser forward on one GPU: its compute and the communication it waits for."""
        return self.compute.predicted_s + self.exposed_s("forward")

    @property
    def forwards_per_gpu_step(self) -> int:
        return self.forwards_per_step // self.plan.cfg

    @property
    def step_s(self) -> float:
        return self.forwards_per_gpu_step * self.forward_s + self.exposed_s("step")

    @property
    def comm_video_s(self) -> float:
        """Communication seconds per video nothing hides."""
        f = self.steps * self.forwards_per_gpu_step
        forwards = (
            sum(r.count * r.comm_s for r in self.forward_runs)
            if self.forward_runs
            else f * self.exposed_s("forward")
        )
        return forwards + self.steps * self.exposed_s("step") + self.exposed_s("video")

    @property
    def per_video_s(self) -> float:
        return sum(self.stage_video_s.values()) + self.exposed_s("video")

    @property
    def speedup(self) -> float:
        return self.single_video_s / self.per_video_s

    @property
    def efficiency(self) -> float:
        """Speedup per GPU (1: perfect scaling)."""
        return self.speedup / self.plan.gpus

    @property
    def peak_per_gpu_bytes(self) -> int:
        return self.rank.memory.peak_per_gpu_bytes

    def comm_bytes(self, per: str = "forward") -> int:
        """Bytes one GPU sends (= receives) per forward, step or video in the collectives of ``per``."""
        return sum(t.sent_bytes * t.comm.spec.count for t in self.comms if t.comm.per == per)


def estimate(
    rank: RankPlan,
    device: DeviceSpec,
    plan: TimePlan,
    stage: StageKernels,
    *,
    stage_video_s: dict[str, float],
    forward_stage: str,
    forwards_per_step: int,
    steps: int,
    rank_stage_s: Mapping[str, float] | None = None,
) -> ParallelEstimate:
    """Per-GPU time of a video: ``stage_video_s`` (each selected stage on one GPU) with the
    denoiser's replaced by ``steps`` × its per-GPU step and the rank's own stages (``rank.stages``)
    by their seconds per video on the rank (``rank_stage_s``); every other stage runs whole on each
    GPU (T5 and CLIP encode on every rank, rank 0 decodes while the others wait)."""
    p = rank.plan
    if forwards_per_step % p.cfg:
        raise ConfigError(
            "parallel.cfg",
            f"{p.cfg} needs {p.cfg} forwards per step to split; this run has {forwards_per_step} "
            "(diffusers runs one when guidance_scale <= 1)",
        )
    compute, block_s, attention_s = rank_forward_time(rank, device, plan, stage)

    def timed(c: Comm, block: float) -> CommTime:
        return comm_time(
            c,
            device,
            block_s=block,
            attention_s=attention_s,
            fabric=plan.fabric,
            network=plan.network,
            gpus=p.gpus,
        )

    # one link carries one transfer at a time: the part of a block a ring's exchange already hides
    # under is not there again for the next block's weight gather (link_shared_block_s)
    def gather(c: Comm) -> bool:
        return c.overlap == "block" and c.per == "forward"

    first = {i: timed(c, block_s) for i, c in enumerate(rank.comms) if not gather(c)}
    ring = [t for t in first.values() if t.comm.overlap == "attention" and t.comm.per == "forward"]
    times = tuple(
        first[i] if i in first else timed(c, link_shared_block_s(block_s, ring, c.spec.count))
        for i, c in enumerate(rank.comms)
    )
    est = ParallelEstimate(
        rank,
        compute,
        times,
        forwards_per_step,
        steps,
        {},
        sum(stage_video_s.values()),
        forward_stage,
        domain_gpus(device),
        device.nics_per_node,
    )
    per_gpu = dict(stage_video_s)
    per_gpu.update({k: v for k, v in (rank_stage_s or {}).items() if k in per_gpu})
    if forward_stage in per_gpu:
        per_gpu[forward_stage] = steps * est.step_s
    return attrs.evolve(est, stage_video_s=per_gpu)
