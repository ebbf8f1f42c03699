"""One analytic evaluation: model × workload → geometry, cost tree and totals."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from ditmeter.analytic.cost import Cost, total
from ditmeter.analytic.device import DeviceSpec
from ditmeter.analytic.geometry import Geometry, geometry
from ditmeter.analytic.pipeline import DIT, Stage, available_stages, build_stages
from ditmeter.analytic.roofline import Prediction, module_rooflines, predict
from ditmeter.analytic.spec import ModelSpec, Workload
from ditmeter.analytic.tree import Composite, leaf_totals_by
from ditmeter.analytic.wan_dit import build_dit

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


@attrs.frozen
class Analysis:
    """Analytic costs of ``model`` at ``workload``: one forward and the whole video."""

    model: ModelSpec
    workload: Workload
    geometry: Geometry
    tree: Composite  # the DiT: one forward
    stages: tuple[Stage, ...]  # every selected stage of the video, the DiT's included

    @property
    def whole_video(self) -> Cost:
        """Every selected stage × its runs per video."""
        return total(tuple(s.per_video for s in self.stages))

    @property
    def per_forward(self) -> Cost:
        return self.tree.total

    @property
    def forwards_per_video(self) -> int:
        return self.workload.forwards_per_video

    @property
    def per_video(self) -> Cost:
        return self.per_forward.per_video(self.forwards_per_video)

    def prediction(self, device: DeviceSpec) -> Prediction:
        """Roofline times of every module of every stage on ``device`` (forward, step, video).

        Each stage runs in its own dtype (the VAE and CLIP in fp32: the FP32 peak).
        """
        w = self.workload
        p = predict(self.tree, device, w.dtype, w.guidance_forwards, self.forwards_per_video)
        for stage in self.stages:
            if stage.name != DIT:
                rooflines = module_rooflines(stage.tree, device, stage.dtype)
                p.modules.update({stage.qualify(k): v for k, v in rooflines.items()})
        return p

    def by_category(self) -> dict[str, Cost]:
        return leaf_totals_by(self.tree, "category")

    def notes(self) -> list[str]:
        w, g = self.workload, self.geometry
        out = list(NOT_MODELED)
        out.append(
            f"Context: the prompt has {w.text_len} tokens; the DiT's text embedding and "
            f"cross-attention compute over context_len={g.context_len} tokens (both pipelines "
            "pad the text embedding to 512 rows)."
        )
        out.append(
            f"Rounding rule: {w.rounding}. "
            + (
                "Latent frames = (F-1)//4+1; H and W are floored to whole 16-pixel patches."
                if w.rounding == "official"
                else "F is rounded to F//4*4+1; H and W must be multiples of 16 (WanPipeline)."
            )
        )
        for a in g.adjustments:
            out.append(f"Adjusted {a.field}: {a.requested} -> {a.effective} ({a.reason}).")
        out.append(
            "Dtypes follow the diffusers port: weights in the workload dtype except time embedder, "
            "modulation tables and affine norms in fp32; time embedding and modulation math in "
            "fp32; the time projection runs in the activation dtype (the official code keeps it "
            "in fp32)."
        )
        return out


def analyze(
    model: ModelSpec,
    workload: Workload,
    model_raw: Mapping[str, Any] | None = None,
    stages: Sequence[str] | None = None,
) -> Analysis:
    """Evaluate the analytic DiT cost model (fast: the block is costed once), and with
    ``model_raw`` (the model config, for the components) every selected stage of the video.

    ``stages``: None = the DiT alone without ``model_raw``, all of the model's stages with it.
    """
    geo = geometry(model, workload)
    dit = build_dit(model, workload, geo)
    if stages is None:
        stages = available_stages(model) if model_raw is not None else (DIT,)
    built = build_stages(model, workload, geo, dit, model_raw, stages)
    return Analysis(model, workload, geo, dit, built)
