"""Wan2.2's model records: a Wan2.1 DiT record plus what the two-expert release config adds
(``wan/configs/wan_t2v_A14B.py``): the experts, the boundary, the sampling shift and the guidance
scale of each expert."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import attrs

from ditmeter.models.wan21.spec import WanModelSpec
from ditmeter.models.wan21.spec import parse_model as parse_wan_model
from ditmeter.models.wan21.vae import VaeRules
from ditmeter.models.wan22.vae import WAN22_VAE
from ditmeter.validate import FieldError, as_tuple, boolean, finite_number, one_of, whole_number


def _guidance(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    ok = isinstance(value, tuple) and len(value) == 2
    if not ok or not all(isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in value):
        raise FieldError(attribute.name, f"must be [low-noise, high-noise] scales >= 0, got {value!r}")


@attrs.frozen
class Wan22ModelSpec(WanModelSpec):
    """A Wan2.2 model: the DiT (one expert's shape) and its pipeline's components, plus the
    experts: ``experts`` DiTs of this shape, the high-noise one while ``t >= boundary × 1000``."""

    experts: int = attrs.field(default=1, validator=whole_number(1, 2))
    boundary: float = attrs.field(default=0.0, validator=finite_number(0, maximum=1))
    sample_shift: float = attrs.field(default=1.0, validator=finite_number(0, strict=True))
    #: The release's (low-noise, high-noise) guidance scales (official ``guide_scale``).
    guide_scale: tuple[float, float] = attrs.field(
        default=(5.0, 5.0), converter=as_tuple, validator=_guidance
    )
    #: diffusers ``expand_timesteps``: a timestep per token in diffusers too (TI2V-5B); the
    #: official code always expands.
    expand_timesteps: bool = attrs.field(default=False, validator=boolean)
    #: How an image conditions the video (image models): ``video`` (I2V-A14B: the VAE latent of
    #: the image followed by zero frames, beside the noise as channels) or ``first_frame`` (TI2V:
    #: the image's one-frame latent replaces the first latent frame).
    image_latent: str = attrs.field(default="video", validator=one_of("video", "first_frame"))
    #: Wan2.2's image models condition on the VAE latent of the image alone (no CLIP).
    clip_conditioned: ClassVar[bool] = False

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        if self.image_tokens or self.image_dim:
            key = "image_tokens" if self.image_tokens else "image_dim"
            raise FieldError(key, "Wan2.2 has no CLIP image branch; allowed: 0")

    def per_token_timesteps(self, pipeline: str) -> bool:
        """Whether ``pipeline`` feeds the DiT a timestep per token."""
        return pipeline == "official" or self.expand_timesteps

    def mixed_timesteps(self) -> bool:
        """TI2V conditioned on an image: the image's first latent frame denoises at timestep 0, the
        rest at the step's."""
        return self.pipeline == "i2v" and self.image_latent == "first_frame"

    def sequence_parallel_attention(self, pipeline: str) -> str | None:
        """Wan2.2's official plans attend through its own ``distributed_attention``
        (``wan/distributed/ulysses.py``), which calls ``flash_attention`` as one GPU does (the
        README's distributed tests: "FlashAttention3 deployed on Hopper")."""
        return None

    def sequence_parallel_code(self, pipeline: str) -> str:
        """Wan2.2's official plans: its own ``distributed_attention`` (``wan``)."""
        return "wan" if pipeline == "official" else "diffusers"

    def resident_experts(self, pipeline: str, gpus: int = 1, offload_model: bool = False) -> int:
        """diffusers keeps ``transformer`` and ``transformer_2`` on the GPU; the official code one
        expert at a time on one GPU (``init_on_cpu``) or with ``--offload_model``
        (``_prepare_model_for_timestep`` moves the idle one to the CPU), else both on every GPU of
        a plan (FSDP or sequence parallelism turn ``init_on_cpu`` off)."""
        if pipeline == "diffusers":
            return self.experts
        return self.experts if gpus > 1 and not offload_model else 1

    def expert_swaps(self, pipeline: str, offload_model: bool) -> int:
        """One swap at the boundary where one expert at a time is on the GPU: the official code on
        one GPU (``init_on_cpu``, whatever ``--offload_model``), diffusers under
        ``enable_model_cpu_offload`` (the hook moves the idle transformer off when the other runs)."""
        if self.experts < 2:
            return 0
        return 1 if pipeline == "official" or offload_model else 0

    def vae_rules(self) -> VaeRules:
        """The Wan2.2 VAE's rules for the residual VAE (TI2V-5B), else the Wan2.1 VAE's."""
        if not self.vae.is_residual:
            return super().vae_rules()
        return WAN22_VAE

    def conditioning_frames(self, frames: int) -> int:
        """TI2V encodes the image alone (one frame); I2V-A14B the image and zeros."""
        if self.images and self.image_latent == "first_frame":
            return 1
        return super().conditioning_frames(frames)

    def image_size(self, height: int, width: int) -> tuple[int, int, str]:
        """TI2V (textimage2video.py ``best_output_size``): the size whose sides are multiples of
        32 pixels (VAE stride × patch) within ``max_area = height × width``, flooring the width or
        the height first, whichever keeps the image's aspect closer; I2V-A14B: Wan2.1's rule."""
        if self.image_latent != "first_frame":
            return super().image_size(height, width)
        dh, dw = self.vae_stride[1] * self.patch_size[1], self.vae_stride[2] * self.patch_size[2]
        area, ratio = height * width, width / height
        ow = (area * ratio) ** 0.5
        oh = area / ow
        ow1 = int(ow // dw * dw)
        oh1 = int(area / ow1 // dh * dh) if ow1 else 0
        oh2 = int(oh // dh * dh)
        ow2 = int(area / oh2 // dw * dw) if oh2 else 0
        rule = f"official best_output_size: multiples of {dh} pixels within H*W, aspect kept closest"
        if not (oh1 and ow1 and oh2 and ow2):
            return (oh1, ow1, rule) if oh1 and ow1 else (oh2, ow2, rule)

        def off(w: int, h: int) -> float:
            return max(ratio / (w / h), (w / h) / ratio)

        return (oh1, ow1, rule) if off(ow1, oh1) < off(ow2, oh2) else (oh2, ow2, rule)


def parse_model(raw: Mapping[str, Any], pipeline: str) -> Wan22ModelSpec:
    spec = parse_wan_model(raw, pipeline, Wan22ModelSpec)
    assert isinstance(spec, Wan22ModelSpec)
    return spec
