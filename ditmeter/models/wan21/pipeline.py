"""The stages of one Wan2.1 video: what runs, how often, and each stage's cost tree.

Per video (both pipelines): the UMT5 text encoder runs once for the prompt and
once more for the negative prompt when guidance is on; image-conditioned models
(I2V, FLF2V) encode their image(s) with CLIP and the conditioning video with the
Wan-VAE encoder once; the DiT runs ``steps × guidance`` forwards; the Wan-VAE
decodes the final latents once.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import attrs

from ditmeter.analytic.analysis import NOT_MODELED, Analysis, Stage
from ditmeter.analytic.geometry import Geometry, Resize, geometry
from ditmeter.analytic.memory import DEFAULT_OFFLOAD, Offload
from ditmeter.analytic.workload import Workload
from ditmeter.errors import ConfigError
from ditmeter.models.wan21 import placement, vae_tiling
from ditmeter.models.wan21.clip import build_clip, clip_weight_bytes
from ditmeter.models.wan21.dit import build_dit
from ditmeter.models.wan21.memory import dit_footprint, stage_activation_bytes
from ditmeter.models.wan21.semantics import SEMANTICS
from ditmeter.models.wan21.spec import WanModelSpec
from ditmeter.models.wan21.umt5 import build_umt5

#: Every stage name, in the order a video runs them.
STAGES = ("text_encoder", "image_encoder", "vae_encode", "dit", "vae_decode")
#: The stage that runs every denoising step.
FORWARD = "dit"


def available_stages(model: WanModelSpec) -> tuple[str, ...]:
    """The stages ``model``'s pipeline runs (no image encoding for T2V; no CLIP without an image
    encoder, as in Wan2.2's I2V)."""
    skip = {"vae_encode"} if not model.images else set()
    skip |= {"image_encoder"} if model.image_encoder is None else set()
    return tuple(s for s in STAGES if s not in skip)


#: FLF2V's official mask is built for exactly this many frames (first_last_frame2video.py).
FLF2V_FRAMES = 81


def video_geometry(m: WanModelSpec, w: Workload) -> Geometry:
    """Latent and token shapes under ``w.pipeline``.

    Frame counts the official image-to-video code cannot run: FLF2V (mask built for 81 frames)
    refuses any other count; I2V (F = 4n+1, a mask reshape) is costed at the official latent
    rule's 4n+1 frames, an adjustment the report prints and records.
    """
    sem = SEMANTICS[w.pipeline]
    size = None
    if m.pipeline == "flf2v" and sem.strict_image_frames and w.num_frames != FLF2V_FRAMES:
        raise ConfigError(
            "workload.num_frames",
            f"{w.num_frames} not allowed: the official FLF2V code builds its mask for "
            f"{FLF2V_FRAMES} frames only (allowed: {FLF2V_FRAMES}, or pipeline=diffusers)",
        )
    if m.images and sem.area_sizing:
        height, width, rule = m.image_size(w.height, w.width)
        if not (height and width):
            raise ConfigError(
                "workload.height" if not height else "workload.width",
                f"{w.height}x{w.width} sizes to {height}x{width} under the {rule}; allowed: an aspect "
                f"ratio whose sides each keep at least one {m.vae_stride[1] * m.patch_size[1]}-pixel patch",
            )
        size = Resize(height, width, rule)
    return geometry(w, m.vae_stride, m.patch_size, size)


def _stage(name: str, m: WanModelSpec, w: Workload, g: Geometry, weight_dtype: str | None = None) -> Stage:
    stage = _stage_costs(name, m, w, g, weight_dtype)
    return attrs.evolve(stage, attention=SEMANTICS[w.pipeline].attention[name])


def _stage_costs(name: str, m: WanModelSpec, w: Workload, g: Geometry, weight_dtype: str | None) -> Stage:
    b = w.batch_size
    if name == "text_encoder":
        run = f"one encode of {m.text_len} tokens (prompt, and the negative prompt with guidance)"
        return Stage(name, build_umt5(m.text_encoder, b, m.text_len), w.prompts, m.text_encoder.dtype, run)
    if name == "image_encoder":
        clip = m.image_encoder
        assert clip is not None  # available_stages offers it only to image models
        run = f"{m.images} image(s) at {clip.image_size}² per sample"
        return Stage(name, build_clip(clip, b * m.images), 1, clip.dtype, run)
    if name == "vae_encode":
        frames = m.conditioning_frames(g.effective_frames)
        tree = m.vae_rules().encode(m.vae, b, frames, g.effective_height, g.effective_width)
        run = f"the {frames}-frame conditioning video" if frames > 1 else "the conditioning image"
        return Stage(name, tree, 1, m.vae.dtype, run, calls=1 + (frames - 1) // 4)
    if name == "vae_decode":
        frames = 1 + 4 * (g.latent_frames - 1)
        if w.vae_tiling and vae_tiling.tiled(*g.latent_shape[1:]):
            tiles = sum(len(row) for row in vae_tiling.tile_shapes(*g.latent_shape[1:]))
            tree = vae_tiling.build_tiled_decode(m.vae, b, *g.latent_shape)
            run = f"the final latents to {frames} frames in {tiles} tiles (diffusers' enable_tiling)"
            return Stage(name, tree, 1, m.vae.dtype, run, calls=tiles * g.latent_frames)
        tree = m.vae_rules().decode(m.vae, b, *g.latent_shape)
        run = f"the final latents to {frames} frames"
        return Stage(name, tree, 1, m.vae.dtype, run, calls=g.latent_frames)
    assert name == FORWARD, name
    run = f"one DiT forward ({w.num_inference_steps} steps × {w.guidance_forwards})"
    per_token = m.per_token_timesteps(w.pipeline)
    tree = build_dit(m, w, g, per_token_timesteps=per_token, weight_dtype=weight_dtype)
    return Stage(name, tree, w.forwards_per_video, w.dtype, run)


def notes(m: WanModelSpec, w: Workload, g: Geometry) -> tuple[str, ...]:
    """What the numbers include and not, the context length, the pipeline's rules, each adjustment."""
    sem = SEMANTICS[w.pipeline]
    out = list(NOT_MODELED)
    out.append(
        f"Context: the prompt has {w.text_len} tokens; the DiT's text embedding and "
        f"cross-attention compute over context_len={g.context_len} tokens (both pipelines "
        "pad the text embedding to 512 rows)."
    )
    out.append(f"Pipeline: {sem.name} ({sem.source}).")
    pixels = m.vae_stride[1] * m.patch_size[1]
    out.append(
        "Sizes: "
        + (
            f"latent frames = (F-1)//4+1; H and W are floored to whole {pixels}-pixel patches"
            if w.pipeline == "official"
            else f"F is rounded to F//4*4+1; H and W must be multiples of {pixels} (WanPipeline)"
        )
        + (
            f"; the image-to-video size comes from max_area = H*W and the image's aspect H:W "
            f"({m.image_size(w.height, w.width)[2]}; the conditioning image is taken to have the "
            "requested aspect)."
            if m.images and sem.area_sizing
            else "."
        )
    )
    out.append(
        f"Guidance: {w.guidance_forwards} DiT forward(s) per step at guidance_scale "
        f"{w.guidance_scale:g}"
        + (" (the official code runs both whatever the scale)." if w.pipeline == "official" else ".")
    )
    out += [f"Adjusted {a.field}: {a.requested} -> {a.effective} ({a.reason})." for a in g.adjustments]
    weights = sem.dit_weight_dtype or w.dtype
    out.append(
        f"DiT dtypes: weights {weights} on the GPU, compute {w.dtype}"
        + (" (autocast)" if weights != w.dtype else "")
        + f", residual stream {sem.residual_dtype or w.dtype}; time embedding and modulation in "
        "fp32. FLOPs are the same in every dtype; the cost tree's bytes follow the diffusers "
        "port's activation dtypes, its weight bytes the weights' dtype."
    )
    return tuple(out)


def analyze(
    m: WanModelSpec,
    w: Workload,
    stages: Sequence[str],
    family: str,
    offload: Offload = DEFAULT_OFFLOAD,
    *,
    weight_dtype: str | None = None,
    placed: placement.Placed | None = None,
) -> Analysis:
    """Every selected stage's cost tree (the DiT's always: it sets the per-forward figures) and
    the memory timeline of the whole video (every stage, whatever ``stages`` selects).

    The model record says whether the DiT gets a timestep per token and how many experts stay on
    the GPU; a family whose code differs gives the DiT's ``weight_dtype`` (a cast) and its official
    ``placed`` rule."""
    if offload.convert_model_dtype:
        raise ConfigError(
            "offload.convert_model_dtype", "a Wan2.2 generate.py flag; Wan2.1 has none (allowed: false)"
        )
    g = video_geometry(m, w)
    built = {name: _stage(name, m, w, g, weight_dtype) for name in dict.fromkeys((*stages, FORWARD))}
    dit = built[FORWARD]
    selected = tuple(built[s] for s in STAGES if s in stages)
    per_token = w.pipeline if m.per_token_timesteps(w.pipeline) else None
    footprint = dit_footprint(m, w, g, dit.tree, per_token=per_token)
    components = {"dit": footprint.weights_by_dtype, **component_weights(m)}
    for i in range(2, m.resident_experts(w.pipeline) + 1):  # a second expert: dit_2
        components[f"dit_{i}"] = dict(footprint.weights_by_dtype)
    activations = stage_activation_bytes(m, w, g, footprint)
    offload_model = SEMANTICS[w.pipeline].offload_model_default if offload.model is None else offload.model
    memory = placement.timeline(
        w.pipeline,
        available_stages(m),
        components,
        activations,
        offload,
        official=placed,
        expert_swaps=m.expert_swaps(w.pipeline, offload_model),
    )
    return Analysis(m, family, w, g, selected, dit, footprint, notes(m, w, g), memory)


@functools.lru_cache(maxsize=64)
def component_weights(m: WanModelSpec) -> dict[str, dict[str, int]]:
    """Weight bytes by dtype of the text encoder, the VAE (encoder and decoder) and, for image
    models, the image encoder (the whole CLIP the pipeline holds: ``clip_weight_bytes``), from
    their analytic trees in their config dtypes.

    The trees' parameters equal the real modules' (tests/test_umt5.py, test_vae.py,
    test_clip.py); a tiny workload suffices, since weights do not depend on it. Cached per model
    (the VAE's tree is most of an analysis's time); callers must not change the result.
    """
    rules, pixels = m.vae_rules(), m.vae.spatial_stride
    vae_bytes = (
        rules.encode(m.vae, 1, 1, pixels, pixels).total.weight_bytes
        + rules.decode(m.vae, 1, 1, 1, 1).total.weight_bytes
    )
    out = {
        "text_encoder": {m.text_encoder.dtype: build_umt5(m.text_encoder, 1, 1).total.weight_bytes},
        "vae": {m.vae.dtype: vae_bytes},
    }
    if m.image_encoder is not None:
        out["image_encoder"] = {m.image_encoder.dtype: clip_weight_bytes(m.image_encoder)}
    return out
