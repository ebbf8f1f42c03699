"""What each Wan2.1 pipeline runs: dtypes, depths and placement, stated once (``pipeline=``).

``official`` is the Wan2.1 repository's ``generate.py`` (read from
``wan/text2video.py``, ``wan/image2video.py``, ``wan/first_last_frame2video.py``,
``wan/modules/model.py``, ``wan/modules/clip.py`` and ``wan/configs/shared_config.py``);
``diffusers`` is ``WanPipeline`` / ``WanImageToVideoPipeline`` as their model
cards load them. Every command reads these records; none guesses.
"""

from __future__ import annotations

import attrs

from ditmeter.analytic.workload import PIPELINES


@attrs.frozen
class Semantics:
    """One pipeline's choices for a Wan2.1 video."""

    name: str
    #: DiT weights as they sit on the GPU; None: the workload dtype (diffusers' ``torch_dtype``).
    dit_weight_dtype: str | None
    #: The residual stream between blocks; None: the workload dtype.
    residual_dtype: str | None
    text_encoder_dtype: str
    vae_dtype: str
    image_encoder_dtype: str
    #: CLIP stops before its last block: official ``use_31_block`` (31 of 32); diffusers runs all
    #: 32 and takes ``hidden_states[-2]``.
    image_encoder_drop_last: bool
    #: The pipeline builds and keeps the whole CLIP on the GPU: official ``CLIPModel`` (the
    #: XLM-RoBERTa text tower and both heads too, never run); diffusers ``CLIPVisionModel`` alone.
    image_encoder_whole_clip: bool
    #: Image-conditioned latent size from ``max_area`` and the image's aspect (a float square root).
    area_sizing: bool
    #: FLF2V refuses frame counts other than 81 (the official mask is built for 81 frames).
    strict_image_frames: bool
    #: ``offload.model``'s default on one GPU.
    offload_model_default: bool
    #: What each stage's code calls for attention (``Stage.attention``): official DiT
    #: ``flash_attention`` (FA3 if importable, else FA2), CLIP the same with ``version=2``;
    #: diffusers SDPA; T5 matmul + softmax in both; the VAE's mid-block SDPA in both.
    attention: dict[str, str]
    #: How the numbers were taken from the code, for the report's notes.
    source: str


SEMANTICS: dict[str, Semantics] = {
    "official": Semantics(
        name="official",
        dit_weight_dtype="fp32",
        residual_dtype="fp32",
        text_encoder_dtype="bf16",
        vae_dtype="fp32",
        image_encoder_dtype="fp16",
        image_encoder_drop_last=True,
        image_encoder_whole_clip=True,
        area_sizing=True,
        strict_image_frames=True,
        offload_model_default=True,
        attention={
            "text_encoder": "eager",
            "image_encoder": "fa2",
            "vae_encode": "sdpa",
            "dit": "flash",
            "vae_decode": "sdpa",
        },
        source=(
            "Wan2.1 generate.py: fp32 DiT checkpoints kept fp32 on the GPU under bf16 autocast "
            "(fp32 residual stream, time embedding and modulation), T5 bf16 (t5_dtype), VAE fp32, "
            "CLIP fp16 stopping after block 31 (use_31_block), a conditional and an unconditional "
            "forward every step, --offload_model True on one GPU"
        ),
    ),
    "diffusers": Semantics(
        name="diffusers",
        dit_weight_dtype=None,
        residual_dtype=None,
        text_encoder_dtype="bf16",
        vae_dtype="fp32",
        image_encoder_dtype="fp32",
        image_encoder_drop_last=False,
        image_encoder_whole_clip=False,
        area_sizing=False,
        strict_image_frames=False,
        offload_model_default=False,
        attention={
            "text_encoder": "eager",
            "image_encoder": "sdpa",
            "vae_encode": "sdpa",
            "dit": "sdpa",
            "vae_decode": "sdpa",
        },
        source=(
            "diffusers WanPipeline/WanImageToVideoPipeline as the model cards load them: the DiT "
            "in torch_dtype (workload.dtype) with _keep_in_fp32_modules, UMT5 bf16, VAE fp32, CLIP "
            "fp32 running all 32 layers (hidden_states[-2]), the unconditional forward only when "
            "guidance_scale > 1, no offload unless enable_model_cpu_offload"
        ),
    ),
}
assert tuple(SEMANTICS) == PIPELINES
