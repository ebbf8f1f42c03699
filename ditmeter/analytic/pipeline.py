"""The stages of one video: what runs, how often, and each stage's cost tree.

Per video (both pipelines): the UMT5 text encoder runs once for the prompt and
once more for the negative prompt when guidance is on; image-conditioned models
(I2V, FLF2V) encode their image(s) with CLIP and the conditioning video with the
Wan-VAE encoder once; the DiT runs ``steps × guidance`` forwards; the Wan-VAE
decodes the final latents once.

Module ids: the DiT's carry no prefix (``blocks.0.ffn.0``, as before stages
existed); every other stage's ids start with the stage name
(``text_encoder.blocks.0.attn.q``, ``vae_decode.decoder.conv_in``), so ids
stay unique across the whole video.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from ditmeter.analytic.clip import ClipSpec, build_clip
from ditmeter.analytic.cost import Cost
from ditmeter.analytic.geometry import Geometry
from ditmeter.analytic.spec import ModelSpec, Workload
from ditmeter.analytic.tree import Composite
from ditmeter.analytic.umt5 import UMT5Spec, build_umt5
from ditmeter.analytic.wan_vae import VaeSpec, build_vae_decode, build_vae_encode
from ditmeter.errors import ConfigError

#: Every stage name, in the order a video runs them.
STAGES = ("text_encoder", "image_encoder", "vae_encode", "dit", "vae_decode")
DIT = "dit"


@attrs.frozen
class Stage:
    """One stage of the video: its cost tree for one run, and how many runs a video needs."""

    name: str
    tree: Composite
    runs_per_video: int
    dtype: str
    run: str  # what one run is, for people

    @property
    def prefix(self) -> str:
        """How this stage's module ids start ("" for the DiT)."""
        return "" if self.name == DIT else self.name

    def qualify(self, module_id: str) -> str:
        """A stage-local id → the video-wide id (``blocks.0.attn.q`` → ``text_encoder.blocks.0.attn.q``)."""
        if not self.prefix:
            return module_id
        return f"{self.prefix}.{module_id}" if module_id else self.prefix

    @property
    def per_run(self) -> Cost:
        return self.tree.total

    @property
    def per_video(self) -> Cost:
        return self.per_run.per_video(self.runs_per_video)


def available_stages(model: ModelSpec) -> tuple[str, ...]:
    """The stages ``model``'s pipeline runs (no image encoding for T2V)."""
    if model.images:
        return STAGES
    return tuple(s for s in STAGES if s not in ("image_encoder", "vae_encode"))


def select_stages(model: ModelSpec, requested: Any) -> tuple[str, ...]:
    """``stages=null`` (all of the model's) or a list of names; errors name ``stages``."""
    allowed = available_stages(model)
    if requested is None:
        return allowed
    names = (
        [requested]
        if isinstance(requested, str)
        else list(requested)
        if isinstance(requested, Sequence)
        else None
    )
    if not names or any(n not in allowed for n in names):
        raise ConfigError(
            "stages", f"{requested!r} not allowed for {model.name}; allowed: {', '.join(allowed)}"
        )
    return tuple(s for s in allowed if s in names)


def build_stages(
    model: ModelSpec,
    workload: Workload,
    geo: Geometry,
    dit_tree: Composite,
    model_raw: Mapping[str, Any] | None,
    names: Sequence[str],
) -> tuple[Stage, ...]:
    """Every selected stage with its tree (component configs from ``model_raw``)."""
    b = workload.batch_size
    raw = model_raw or {}
    out: list[Stage] = []
    for name in names:
        if name == DIT:
            run = f"one DiT forward ({workload.num_inference_steps} steps × {workload.guidance_forwards})"
            out.append(Stage(DIT, dit_tree, workload.forwards_per_video, workload.dtype, run))
        elif name == "text_encoder":
            t5 = UMT5Spec.from_mapping(raw.get("text_encoder"))
            tree = build_umt5(t5, b, model.text_len)
            run = f"one encode of {model.text_len} tokens (prompt, and the negative prompt with guidance)"
            out.append(Stage(name, tree, workload.guidance_forwards, t5.dtype, run))
        elif name == "image_encoder":
            clip = ClipSpec.from_mapping(raw.get("image_encoder"))
            run = f"{model.images} image(s) at {clip.image_size}² per sample"
            out.append(Stage(name, build_clip(clip, b * model.images), 1, clip.dtype, run))
        elif name == "vae_encode":
            vae = VaeSpec.from_mapping(raw.get("vae"))
            tree = build_vae_encode(vae, b, geo.effective_frames, geo.effective_height, geo.effective_width)
            run = f"the {geo.effective_frames}-frame conditioning video"
            out.append(Stage(name, tree, 1, vae.dtype, run))
        elif name == "vae_decode":
            vae = VaeSpec.from_mapping(raw.get("vae"))
            tree = build_vae_decode(vae, b, *geo.latent_shape)
            frames = 1 + 4 * (geo.latent_frames - 1)
            out.append(Stage(name, tree, 1, vae.dtype, f"the final latents to {frames} frames"))
    return tuple(out)


def component_weight_bytes(model_raw: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """Weight bytes by dtype of the text encoder, the VAE (encoder and decoder) and, for image
    models, the image encoder, from their analytic trees in their config dtypes.

    The trees' parameters equal the real modules' (tests/test_umt5.py, test_vae.py,
    test_clip.py); a tiny workload suffices, since weights do not depend on it.
    """
    t5 = UMT5Spec.from_mapping(model_raw.get("text_encoder"))
    vae = VaeSpec.from_mapping(model_raw.get("vae"))
    vae_bytes = (
        build_vae_encode(vae, 1, 1, 8, 8).total.weight_bytes
        + build_vae_decode(vae, 1, 1, 1, 1).total.weight_bytes
    )
    out = {
        "text_encoder": {t5.dtype: build_umt5(t5, 1, 1).total.weight_bytes},
        "vae": {vae.dtype: vae_bytes},
    }
    if model_raw.get("image_encoder") is not None:
        clip = ClipSpec.from_mapping(model_raw.get("image_encoder"))
        out["image_encoder"] = {clip.dtype: build_clip(clip, 1).total.weight_bytes}
    return out
