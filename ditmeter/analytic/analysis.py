"""One analytic evaluation: the stages of a video, each a cost tree, and what they add up to.

A model family (``ditmeter.models``) builds the :class:`Analysis`; everything
downstream (the gate, the tables, the reports) reads only these records.

Module ids are the same rule for every stage: the stage's name, then the
module's own id inside it (``dit.blocks.0.ffn.0``,
``text_encoder.blocks.0.attn.q``); a stage's root module has the stage's name
as its id, so ids are unique across the whole video.
"""

from __future__ import annotations

import operator
from typing import Any

import attrs

from ditmeter.analytic.cost import COST_FIELDS, Cost, total
from ditmeter.analytic.device import DeviceSpec
from ditmeter.analytic.geometry import Geometry
from ditmeter.analytic.kernel_time import vsa_tiles
from ditmeter.analytic.memory import Footprint, Timeline
from ditmeter.analytic.timing import Prediction, StageKernels, TimePlan, effective_backend, module_times
from ditmeter.analytic.transfer import transfer_s
from ditmeter.analytic.tree import Composite, ModuleRow, leaf_totals_by, walk
from ditmeter.analytic.workload import Workload
from ditmeter.errors import ConfigError

#: The largest count a table column (int64) holds.
INT64_MAX = 2**63 - 1


#: Every published column of a :class:`Cost` at once (one C-level read, no per-field dict).
_COLUMNS = operator.attrgetter(*COST_FIELDS)


def _fits(c: Cost) -> bool:
    """Every column of ``c`` and the two sums users take of them fit an int64 (the fast path of
    :meth:`Analysis.check_bounds`)."""
    values: tuple[int, ...] = _COLUMNS(c)
    return max(*values, c.flops, c.moved_bytes) <= INT64_MAX


#: Disclosures every report carries: what the numbers do not include.
NOT_MODELED: tuple[str, ...] = (
    "Stage scope: the stages listed in the stage table (all of the model's unless stages= says "
    "otherwise); the tokenizer, the image preprocessing and the scheduler update are not modeled.",
    "KV cache: 0 bytes. A diffusion transformer recomputes K and V every forward; there is no "
    "autoregressive cache.",
    "FLOPs convention: 2 FLOPs per multiply-add; tensor-core FLOPs exclude bias adds "
    "(torch.utils.flop_counter's convention); element-wise work is counted separately as "
    "CUDA-core FLOPs with documented per-element constants.",
    "Bytes assume an ideal fused execution: each module reads its inputs and weights once and "
    "writes its outputs once; the attention core is flash-style (no L×L matrix in memory, K/V "
    "read once, log-sum-exp not counted). Dtype casts are fused into the producing op.",
    "Per-row reductions' final steps (LayerNorm rsqrt, softmax divide) are not counted.",
)


#: The stage ``offload.t5_cpu`` runs on the host CPU.
TEXT_STAGE = "text_encoder"


def qualify(stage: str, module_id: str) -> str:
    """A stage-local id → the video-wide id (``blocks.0.attn.q`` → ``text_encoder.blocks.0.attn.q``;
    the stage's root "" → ``text_encoder``)."""
    return f"{stage}.{module_id}" if module_id else stage


@attrs.frozen
class Stage:
    """One stage of the video: its cost tree for one run, and how many runs a video needs."""

    name: str
    tree: Composite
    runs_per_video: int
    dtype: str
    run: str  # what one run is, for people
    calls: int = 1  # how many times one run calls the real module (the VAE: once per chunk of frames)
    #: What the stage's code calls for attention: ``flash`` (the official flash_attention),
    #: ``fa2`` (the same pinned to FlashAttention-2), ``sdpa`` (torch's
    #: scaled_dot_product_attention) or ``eager`` (matmul + softmax).
    attention: str = "eager"

    def rows(self) -> list[ModuleRow]:
        """Every module of the stage, expanded, with video-wide ids (parents first)."""
        return list(walk(self.tree, self.name))

    @property
    def per_run(self) -> Cost:
        return self.tree.total

    @property
    def per_video(self) -> Cost:
        return self.per_run.per_video(self.runs_per_video)


@attrs.frozen
class Analysis:
    """Analytic costs of one model at one workload: every selected stage of the video.

    ``forward`` is the stage that runs every denoising step (the DiT); the
    per-forward, per-step and category figures are its, whether or not
    ``stages`` (the stages the run covers, ``stages=``) holds it.
    """

    model: Any  # the family's typed model record (attrs)
    family: str
    workload: Workload
    geometry: Geometry
    stages: tuple[Stage, ...]
    forward: Stage
    footprint: Footprint  # the forward stage's memory while it runs
    notes: tuple[str, ...]
    memory: Timeline  # one video on one GPU, every stage

    @property
    def every_stage(self) -> tuple[Stage, ...]:
        """The selected stages and the forward stage (once, even when it is selected)."""
        return tuple({s.name: s for s in (*self.stages, self.forward)}.values())

    @property
    def whole_video(self) -> Cost:
        """Every selected stage × its runs per video."""
        return total(tuple(s.per_video for s in self.stages))

    @property
    def per_forward(self) -> Cost:
        return self.forward.per_run

    @property
    def forwards_per_video(self) -> int:
        return self.forward.runs_per_video

    @property
    def per_video(self) -> Cost:
        return self.forward.per_video

    def stage_kernels(self, stage: Stage, plan: TimePlan) -> StageKernels:
        """What ``stage``'s leaves run under ``plan``: ``gemm_dtype`` applies to the denoiser's
        16-bit matmuls only (the what-if of an fp8 DiT)."""
        forward = stage.name == self.forward.name
        gemm = plan.gemm_dtype if forward and stage.dtype != "fp32" else None
        # eager kernels per call: a stage whose module runs several times per run (the VAE, per
        # chunk of frames) carries each call's dims on its leaves (``Leaf.runs``, docs/eager.md)
        eager = plan.execution == "eager"
        flavour, name = (self.workload.pipeline, stage.name) if eager else ("", "")
        backend = plan.backend(stage.attention, forward=forward)
        sparse = plan.sparse if forward else None
        if sparse is not None and sparse.method == "vsa":  # its gate is dim x dim, its tiles 4x4x4
            g = self.geometry
            tiles = vsa_tiles((g.patch_frames, g.patch_height, g.patch_width))
            sparse = attrs.evolve(sparse, width=int(getattr(self.model, "dim", 0)), tiles=tiles)
        return StageKernels(stage.dtype, backend, gemm, flavour, name, sparse, plan.fp32_matmul)

    def runs_on(self, stage: Stage, device: DeviceSpec, plan: TimePlan) -> tuple[DeviceSpec, TimePlan]:
        """Where ``stage`` runs: the text encoder on the host CPU under ``offload.t5_cpu`` (its
        device and table, ``host=``), every stage else on ``device`` under ``plan``."""
        if stage.name == TEXT_STAGE and self.memory.t5_cpu and plan.host is not None:
            host = plan.host
            # a CPU has no TF32: its fp32 matmuls stay fp32
            cpu = attrs.evolve(
                plan, kernels=host.kernels, attention="auto", gemm_dtype=None, fp32_matmul="ieee"
            )
            return host.device, cpu
        return device, plan

    def prediction(self, device: DeviceSpec, plan: TimePlan | None = None) -> Prediction:
        """Times of every module of every stage on ``device`` (forward, step, video) under ``plan``
        (the roofline lower bound when no plan is given).

        Each stage runs in its own dtype (the VAE and CLIP in fp32: the FP32 or TF32 peak).
        """
        plan = plan or TimePlan(mode="roofline")
        modules, backends = {}, {}
        for stage in self.every_stage:
            on, stage_plan = self.runs_on(stage, device, plan)
            kernels = self.stage_kernels(stage, stage_plan)
            modules.update(module_times(stage.tree, on, stage_plan, kernels, stage.name))
            head_dims = [
                int(dict(r.dims)["head_dim"])
                for r in walk(stage.tree, expand=False)
                if r.kind == "leaf" and "head_dim" in dict(r.dims)
            ]
            if head_dims:
                backends[stage.name] = effective_backend(kernels.attention, stage.dtype, max(head_dims))
        f = self.forward
        runs = tuple((s.name, s.runs_per_video) for s in self.stages)
        transfers = tuple((t, transfer_s(t, device)) for t in self.memory.transfers())
        return Prediction(
            device,
            plan,
            modules,
            f.name,
            self.workload.guidance_forwards,
            f.runs_per_video,
            runs,
            backends,
            transfers,
        )

    def by_category(self) -> dict[str, Cost]:
        """The forward stage's leaf costs by category (one run)."""
        return leaf_totals_by(self.forward.tree, "category")

    def rows(self) -> list[tuple[str, ModuleRow]]:
        """(stage, row) for every module of every stage, stage by stage, parents before children."""
        return [(stage.name, r) for stage in self.stages for r in stage.rows()]

    def check_bounds(self) -> None:
        """Refuse a workload whose counts do not fit the tables' int64 columns, before any work.

        Every column of every module, the sums users take of them (``tensor_flops + cuda_flops``,
        ``bytes_read + bytes_written``) and the per-video and whole-video totals must fit.
        """
        checked: list[tuple[str, Cost]] = [("whole video", self.whole_video)]
        for stage in self.every_stage:
            checked.append((f"{stage.name} per video", stage.per_video))
            checked += [(f"{r.module_id}", r.cost) for r in walk(stage.tree, stage.name, expand=False)]
        for where, cost in checked:
            if _fits(cost):
                continue
            values = {f: getattr(cost, f) for f in COST_FIELDS}
            values["tensor_flops + cuda_flops"] = cost.flops
            values["bytes_read + bytes_written"] = cost.moved_bytes
            for field, value in values.items():
                if value > INT64_MAX:
                    shown = f"{value:.3g}" if value < 1e300 else "above 1e300"  # float() overflows past
                    raise ConfigError(
                        "workload",
                        f"{field} of {where} would be {shown}, more than an int64 column holds "
                        f"({INT64_MAX:.3g}); shrink workload.num_frames, height, width, batch_size or "
                        "num_inference_steps",
                    )
