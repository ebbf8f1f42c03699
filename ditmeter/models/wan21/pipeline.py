"""The stages of one Wan2.1 video: what runs, how often, and each stage's cost tree.

Per video (both pipelines): the UMT5 text encoder runs once for the prompt and
once more for the negative prompt when guidance is on; image-conditioned models
(I2V, FLF2V) encode their image(s) with CLIP and the conditioning video with the
Wan-VAE encoder once; the DiT runs ``steps × guidance`` forwards; the Wan-VAE
decodes the final latents once.
"""

from __future__ import annotations

from collections.abc import Sequence

from ditmeter.analytic.analysis import NOT_MODELED, Analysis, Stage
from ditmeter.analytic.geometry import Geometry, geometry
from ditmeter.analytic.workload import Workload
from ditmeter.models.wan21.clip import build_clip
from ditmeter.models.wan21.dit import build_dit
from ditmeter.models.wan21.memory import dit_footprint
from ditmeter.models.wan21.spec import WanModelSpec
from ditmeter.models.wan21.umt5 import build_umt5
from ditmeter.models.wan21.vae import build_vae_decode, build_vae_encode

#: Every stage name, in the order a video runs them.
STAGES = ("text_encoder", "image_encoder", "vae_encode", "dit", "vae_decode")
#: The stage that runs every denoising step.
FORWARD = "dit"


def available_stages(model: WanModelSpec) -> tuple[str, ...]:
    """The stages ``model``'s pipeline runs (no image encoding for T2V)."""
    if model.images:
        return STAGES
    return tuple(s for s in STAGES if s not in ("image_encoder", "vae_encode"))


def _stage(name: str, m: WanModelSpec, w: Workload, g: Geometry) -> Stage:
    b = w.batch_size
    if name == "text_encoder":
        run = f"one encode of {m.text_len} tokens (prompt, and the negative prompt with guidance)"
        return Stage(
            name, build_umt5(m.text_encoder, b, m.text_len), w.guidance_forwards, m.text_encoder.dtype, run
        )
    if name == "image_encoder":
        clip = m.image_encoder
        assert clip is not None  # available_stages offers it only to image models
        run = f"{m.images} image(s) at {clip.image_size}² per sample"
        return Stage(name, build_clip(clip, b * m.images), 1, clip.dtype, run)
    if name == "vae_encode":
        tree = build_vae_encode(m.vae, b, g.effective_frames, g.effective_height, g.effective_width)
        run = f"the {g.effective_frames}-frame conditioning video"
        return Stage(name, tree, 1, m.vae.dtype, run, calls=1 + (g.effective_frames - 1) // 4)
    if name == "vae_decode":
        frames = 1 + 4 * (g.latent_frames - 1)
        tree = build_vae_decode(m.vae, b, *g.latent_shape)
        run = f"the final latents to {frames} frames"
        return Stage(name, tree, 1, m.vae.dtype, run, calls=g.latent_frames)
    assert name == FORWARD, name
    run = f"one DiT forward ({w.num_inference_steps} steps × {w.guidance_forwards})"
    return Stage(name, build_dit(m, w, g), w.forwards_per_video, w.dtype, run)


def notes(w: Workload, g: Geometry) -> tuple[str, ...]:
    """What the numbers include and not, the context length, the rounding rule, each adjustment."""
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
    out += [f"Adjusted {a.field}: {a.requested} -> {a.effective} ({a.reason})." for a in g.adjustments]
    out.append(
        "Dtypes follow the diffusers port: weights in the workload dtype except time embedder, "
        "modulation tables and affine norms in fp32; time embedding and modulation math in "
        "fp32; the time projection runs in the activation dtype (the official code keeps it "
        "in fp32)."
    )
    return tuple(out)


def analyze(m: WanModelSpec, w: Workload, stages: Sequence[str], family: str) -> Analysis:
    """Every selected stage's cost tree (the DiT's always: it sets the per-forward figures)."""
    g = geometry(w, m.vae_stride, m.patch_size)
    built = {name: _stage(name, m, w, g) for name in dict.fromkeys((*stages, FORWARD))}
    dit = built[FORWARD]
    selected = tuple(built[s] for s in STAGES if s in stages)
    return Analysis(m, family, w, g, selected, dit, dit_footprint(m, w, g, dit.tree), notes(w, g))


def component_weights(m: WanModelSpec) -> dict[str, dict[str, int]]:
    """Weight bytes by dtype of the text encoder, the VAE (encoder and decoder) and, for image
    models, the image encoder, from their analytic trees in their config dtypes.

    The trees' parameters equal the real modules' (tests/test_umt5.py, test_vae.py,
    test_clip.py); a tiny workload suffices, since weights do not depend on it.
    """
    vae_bytes = (
        build_vae_encode(m.vae, 1, 1, 8, 8).total.weight_bytes
        + build_vae_decode(m.vae, 1, 1, 1, 1).total.weight_bytes
    )
    out = {
        "text_encoder": {m.text_encoder.dtype: build_umt5(m.text_encoder, 1, 1).total.weight_bytes},
        "vae": {m.vae.dtype: vae_bytes},
    }
    if m.image_encoder is not None:
        out["image_encoder"] = {m.image_encoder.dtype: build_clip(m.image_encoder, 1).total.weight_bytes}
    return out
