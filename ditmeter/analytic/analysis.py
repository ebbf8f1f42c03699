"""One analytic evaluation: model × workload → geometry, cost tree and totals."""

from __future__ import annotations

import attrs

from ditmeter.analytic.cost import Cost
from ditmeter.analytic.device import DeviceSpec
from ditmeter.analytic.geometry import Geometry, geometry
from ditmeter.analytic.roofline import Prediction, predict
from ditmeter.analytic.spec import ModelSpec, Workload
from ditmeter.analytic.tree import Composite, leaf_totals_by
from ditmeter.analytic.wan_dit import build_dit

#: Disclosures every report carries: what the numbers do not include.
NOT_MODELED: tuple[str, ...] = (
    "Stage scope: one DiT forward and the DiT's share of the video only; the UMT5 text encoder, "
    "the Wan-VAE decode and the scheduler update are not modeled here.",
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
    tree: Composite

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
        """Roofline times of every module on ``device`` (forward, step, video)."""
        w = self.workload
        return predict(self.tree, device, w.dtype, w.guidance_forwards, self.forwards_per_video)

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


def analyze(model: ModelSpec, workload: Workload) -> Analysis:
    """Evaluate the analytic DiT cost model (fast: the block is costed once)."""
    geo = geometry(model, workload)
    return Analysis(model, workload, geo, build_dit(model, workload, geo))
