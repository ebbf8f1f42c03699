"""Wan2.1's config records: the DiT (official ``config.json`` names) and its pipeline's components.

The whole ``model`` section is parsed once into a :class:`WanModelSpec`
holding the typed component records (``text_encoder``, ``vae``,
``image_encoder``); no raw mapping travels past :func:`parse_model`. A bad
value raises :class:`~ditmeter.errors.ConfigError` naming the field
(``model.text_encoder.d_ff``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import attrs

from ditmeter.analytic.cost import DTYPE_BYTES
from ditmeter.errors import ConfigError
from ditmeter.models.wan21.semantics import SEMANTICS
from ditmeter.models.wan21.vae import WAN21_VAE, VaeRules
from ditmeter.models.wan21.vae_spec import VaeSpec
from ditmeter.validate import (
    FieldError,
    as_tuple,
    finite_number,
    int_tuple,
    one_of,
    parse,
    positive_int,
    positive_int_at_most,
)

#: t2v: text only; i2v: one CLIP image (257 tokens); flf2v: first and last frame
#: (2 × 257 tokens and a learned position table).
PIPELINES = ("t2v", "i2v", "flf2v")

_dtype = one_of(*DTYPE_BYTES)
#: Structure sizes: every block becomes rows of the module tables, so a run answers in seconds only
#: below these (the largest real models have under 100 blocks).
MAX_BLOCKS = 200
_blocks = positive_int_at_most(MAX_BLOCKS, "the tables get one row per module of every block")


@attrs.frozen
class UMT5Spec:
    """``model.text_encoder`` in transformers' ``UMT5Config`` vocabulary."""

    name: str = attrs.field(converter=str)
    vocab_size: int = attrs.field(validator=positive_int)
    d_model: int = attrs.field(validator=positive_int)
    d_kv: int = attrs.field(validator=positive_int)
    d_ff: int = attrs.field(validator=positive_int)
    num_layers: int = attrs.field(validator=_blocks)
    num_heads: int = attrs.field(validator=positive_int)
    relative_attention_num_buckets: int = attrs.field(validator=positive_int)
    relative_attention_max_distance: int = attrs.field(validator=positive_int)
    dtype: str = attrs.field(validator=_dtype)


@attrs.frozen
class ClipTextTowerSpec:
    """``model.image_encoder.text_tower``: what the official ``CLIPModel`` builds beside the vision
    tower (``clip_xlm_roberta_vit_h_14`` in ``wan/modules/clip.py``, its keyword names): the
    XLM-RoBERTa text tower and the two heads projecting to ``embed_dim``. The official code holds
    them on the GPU and never runs them."""

    vocab_size: int = attrs.field(validator=positive_int)
    max_text_len: int = attrs.field(validator=positive_int)
    type_size: int = attrs.field(validator=positive_int)
    text_dim: int = attrs.field(validator=positive_int)
    text_layers: int = attrs.field(validator=_blocks)
    embed_dim: int = attrs.field(validator=positive_int)


@attrs.frozen
class ClipSpec:
    """``model.image_encoder`` in transformers' ``CLIPVisionConfig`` vocabulary.

    ``layers_run``: how many layers the pipeline runs (the diffusers pipeline
    all 32, taking the penultimate hidden states; the official code 31).
    ``text_tower``: the rest of the CLIP the pipeline holds (official: the whole XLM-RoBERTa
    CLIP; diffusers loads ``CLIPVisionModel`` alone: None).
    """

    name: str = attrs.field(converter=str)
    hidden_size: int = attrs.field(validator=positive_int)
    intermediate_size: int = attrs.field(validator=positive_int)
    num_hidden_layers: int = attrs.field(validator=_blocks)
    num_attention_heads: int = attrs.field(validator=positive_int)
    image_size: int = attrs.field(validator=positive_int)
    patch_size: int = attrs.field(validator=positive_int)
    layers_run: int = attrs.field(validator=positive_int)
    dtype: str = attrs.field(validator=_dtype)
    text_tower: ClipTextTowerSpec | None = None

    def __attrs_post_init__(self) -> None:
        if self.layers_run > self.num_hidden_layers:
            raise FieldError("layers_run", f"exceeds num_hidden_layers={self.num_hidden_layers}")

    @property
    def tokens(self) -> int:
        """Patches plus the CLS token (257 for 224/14)."""
        return (self.image_size // self.patch_size) ** 2 + 1


def _always(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not True:
        raise FieldError(attribute.name, "Wan2.1 always uses it; allowed: true")


@attrs.frozen
class WanModelSpec:
    """A Wan2.1 model: the DiT in the official ``config.json`` vocabulary plus its pipeline's
    components (``text_encoder``, ``vae`` and, for I2V/FLF2V, ``image_encoder``)."""

    name: str = attrs.field(converter=str)
    family: str = attrs.field(converter=str)
    pipeline: str = attrs.field(validator=one_of(*PIPELINES))
    dim: int = attrs.field(validator=positive_int)
    ffn_dim: int = attrs.field(validator=positive_int)
    num_heads: int = attrs.field(validator=positive_int)
    num_layers: int = attrs.field(validator=_blocks)
    in_dim: int = attrs.field(validator=positive_int)
    out_dim: int = attrs.field(validator=positive_int)
    patch_size: tuple[int, int, int] = attrs.field(converter=as_tuple, validator=int_tuple(3))
    freq_dim: int = attrs.field(validator=positive_int)
    text_dim: int = attrs.field(validator=positive_int)
    text_len: int = attrs.field(validator=positive_int)
    eps: float = attrs.field(validator=finite_number(0, strict=True))
    vae_stride: tuple[int, int, int] = attrs.field(converter=as_tuple, validator=int_tuple(3))
    z_dim: int = attrs.field(validator=positive_int)
    default_steps: int = attrs.field(validator=positive_int)
    text_encoder: UMT5Spec
    vae: VaeSpec
    image_encoder: ClipSpec | None = None
    image_dim: int = attrs.field(default=0)  # CLIP width feeding the image MLP (0: no image conditioning)
    image_tokens: int = attrs.field(default=0)  # CLIP tokens in the DiT's context (257 per image)
    qk_norm: bool = attrs.field(default=True, validator=_always)
    cross_attn_norm: bool = attrs.field(default=True, validator=_always)

    #: Whether an image-conditioned model (i2v, flf2v) has a CLIP image encoder (Wan2.1: always;
    #: Wan2.2's I2V conditions on the VAE latent alone).
    clip_conditioned: ClassVar[bool] = True

    def __attrs_post_init__(self) -> None:
        if self.dim % self.num_heads:
            raise FieldError("num_heads", f"must divide model.dim={self.dim}")
        v = self.vae
        strides = (v.temporal_stride, v.spatial_stride, v.spatial_stride)
        if tuple(self.vae_stride) != strides:
            raise FieldError(
                "vae_stride", f"{list(self.vae_stride)!r} is not the VAE's; allowed: {list(strides)!r}"
            )
        if self.z_dim != v.z_dim:
            raise FieldError("z_dim", f"{self.z_dim} is not the VAE's; allowed: {v.z_dim} (model.vae.z_dim)")
        if self.image_encoder is not None:
            for key in ("image_dim", "image_tokens"):
                positive_int(None, attrs.fields_dict(WanModelSpec)[key], getattr(self, key))

    @property
    def images(self) -> int:
        """Conditioning images per sample: 0 (T2V), 1 (I2V), 2 (FLF2V)."""
        return {"t2v": 0, "i2v": 1, "flf2v": 2}[self.pipeline]

    @property
    def image_pos_embed(self) -> bool:
        """FLF2V's learned position table over the image tokens."""
        return self.pipeline == "flf2v"

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    def per_token_timesteps(self, pipeline: str) -> bool:
        """Whether ``pipeline`` feeds the DiT a timestep per token (Wan2.1: one per sample)."""
        return False

    def mixed_timesteps(self) -> bool:
        """Whether tokens of one sample denoise at different timesteps (Wan2.1: never), so a
        per-token time embedding differs along the sequence."""
        return False

    def sequence_parallel_attention(self, pipeline: str) -> str | None:
        """The attention a sequence-parallel plan's DiT calls where it is not the stage's own, or
        None. Wan2.1's official USP (``wan/distributed/xdit_context_parallel.py``) calls xDiT's
        ``xFuserLongContextAttention()`` with its default ``attn_type=AttnType.FA``: yunchang's
        FlashAttention-2 kernels (xDiT ``xfuser/core/long_ctx_attention``), where one GPU's
        ``flash_attention`` takes FA3 where it is built. diffusers' plans keep their backend."""
        return "fa2" if pipeline == "official" else None

    def sequence_parallel_code(self, pipeline: str) -> str:
        """Whose code a sequence-parallel plan's self-attention runs, for its eager kernels
        (``SequenceShard.code``): Wan2.1's official USP goes through xDiT (``xfuser``); diffusers
        its own ``ContextParallelConfig`` hooks (``diffusers``)."""
        return "xfuser" if pipeline == "official" else "diffusers"

    def resident_experts(self, pipeline: str, gpus: int = 1, offload_model: bool = False) -> int:
        """DiTs of this shape on each GPU together through the steps, on ``gpus`` GPUs with or
        without ``offload_model`` (Wan2.1: one)."""
        return 1

    def expert_swaps(self, pipeline: str, offload_model: bool) -> int:
        """Times one video swaps the DiT on one GPU for another expert (Wan2.1: never)."""
        return 0

    def vae_rules(self) -> VaeRules:
        """The VAE's cost trees and peak live bytes (Wan2.1: the Wan-VAE's)."""
        return WAN21_VAE

    def conditioning_frames(self, frames: int) -> int:
        """Frames the VAE encodes to condition a ``frames``-frame video (Wan2.1 I2V/FLF2V: the
        whole video, the image(s) and zeros)."""
        return frames if self.images else 0

    def image_size(self, height: int, width: int) -> tuple[int, int, str]:
        """The official image-to-video pixel size for ``max_area = height × width`` and an image of
        aspect ``height / width`` (image2video.py): each latent side is a float square root, floored
        to whole patches, so 480×832 gives 464×832; and the rule's name."""
        _, sh, sw = self.vae_stride
        _, ph, pw = self.patch_size
        area, aspect = height * width, height / width
        lat_h = round(math.sqrt(area * aspect) // sh // ph * ph)
        lat_w = round(math.sqrt(area / aspect) // sw // pw * pw)
        return lat_h * sh, lat_w * sw, "official max_area rule: sqrt(H*W*aspect) floored to patches"


def parse_model(
    raw: Mapping[str, Any], pipeline: str, cls: type[WanModelSpec] = WanModelSpec
) -> WanModelSpec:
    """The ``model`` section (components included) as a typed record (``cls``: a family's
    extension of :class:`WanModelSpec`), with the component dtypes and depths ``pipeline`` runs
    them in; errors name the field."""
    sem = SEMANTICS[pipeline]
    why = f"is set by the pipeline (pipeline={pipeline}); allowed: pipeline=official|diffusers"
    dtype = {"dtype": why}  # component keys the pipeline sets, never the model config
    images = raw.get("pipeline") in ("i2v", "flf2v") and cls.clip_conditioned
    always = {
        "text_encoder": (UMT5Spec, "umt5", sem.text_encoder_dtype),
        "vae": (VaeSpec, "wan-vae", sem.vae_dtype),
    }
    components: dict[str, Any] = {
        key: parse(cls, raw.get(key), f"model.{key}", name=_name(raw, key, default), hidden=dtype, dtype=dt)
        for key, (cls, default, dt) in always.items()
    }
    if images:
        clip = raw.get("image_encoder")
        layers = clip.get("num_hidden_layers") if isinstance(clip, Mapping) else None
        if sem.image_encoder_drop_last and isinstance(layers, int) and layers < 2:
            raise ConfigError(
                "model.image_encoder.num_hidden_layers",
                f"{layers} not allowed: pipeline=official drops the last block (use_31_block); allowed: >= 2",
            )
        dropped = 1 if sem.image_encoder_drop_last and isinstance(layers, int) else 0
        tower = None  # the rest of the CLIP the pipeline holds, where it holds it
        if sem.image_encoder_whole_clip and isinstance(clip, Mapping):
            tower = parse(ClipTextTowerSpec, clip.get("text_tower"), "model.image_encoder.text_tower")
        components["image_encoder"] = parse(
            ClipSpec,
            clip,
            "model.image_encoder",
            name=_name(raw, "image_encoder", "clip"),
            hidden={**dtype, "layers_run": why},
            dtype=sem.image_encoder_dtype,
            layers_run=layers - dropped if isinstance(layers, int) else layers,
            text_tower=tower,
        )
    elif raw.get("image_encoder") is not None:
        raise ConfigError(
            "model.image_encoder",
            "only image-conditioned models (i2v, flf2v) have one"
            + ("" if cls.clip_conditioned else f"; {raw.get('family')} conditions without CLIP"),
        )
    return parse(cls, raw, "model", **components)


def _name(raw: Mapping[str, Any], section: str, default: str) -> str:
    sub = raw.get(section)
    return str(sub.get("name", default)) if isinstance(sub, Mapping) else default
