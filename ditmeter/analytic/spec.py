"""Typed model and workload records, validated with the config field names.

A bad value raises :class:`ditmeter.errors.ConfigError` naming the field
(``workload.height``) and what is allowed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from ditmeter.analytic.cost import DTYPE_BYTES
from ditmeter.errors import ConfigError

ROUNDING_RULES = ("official", "diffusers")
#: t2v: text only; i2v: one CLIP image (257 tokens); flf2v: first and last frame
#: (2 × 257 tokens and a learned position table).
PIPELINES = ("t2v", "i2v", "flf2v")

MODEL_INT_KEYS = (
    "dim",
    "ffn_dim",
    "num_heads",
    "num_layers",
    "in_dim",
    "out_dim",
    "freq_dim",
    "text_dim",
    "text_len",
    "z_dim",
    "default_steps",
)
WORKLOAD_INT_KEYS = (
    "batch_size",
    "num_frames",
    "height",
    "width",
    "num_inference_steps",
    "text_len",
    "context_len",
)


def _positive_int(section: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{section}.{key}", f"must be a positive integer, got {value!r}")
    return value


def component_section(section: str, raw: Any, keys: tuple[str, ...]) -> tuple[dict[str, int], str]:
    """Validate a component config (``model.text_encoder`` …): positive ``keys`` and a dtype.

    Returns the integers and the dtype name; errors name ``section.key``.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(section, "missing (required section)")
    ints = {k: _positive_int(section, k, raw.get(k)) for k in keys}
    if raw.get("dtype") not in DTYPE_BYTES:
        raise ConfigError(f"{section}.dtype", f"{raw.get('dtype')!r}; allowed: {', '.join(DTYPE_BYTES)}")
    return ints, str(raw["dtype"])


def _triple(section: str, key: str, value: Any) -> tuple[int, int, int]:
    items = list(value) if isinstance(value, list | tuple) else None
    if items is None or len(items) != 3:
        raise ConfigError(f"{section}.{key}", f"must be a list of 3 positive integers, got {value!r}")
    a, b, c = (_positive_int(section, f"{key}[{i}]", v) for i, v in enumerate(items))
    return (a, b, c)


def _require(section: str, raw: Mapping[str, Any], keys: tuple[str, ...]) -> None:
    for key in keys:
        if key not in raw or raw[key] is None:
            raise ConfigError(f"{section}.{key}", "missing (required key)")


@attrs.frozen
class ModelSpec:
    """A Wan2.1 DiT in the official ``config.json`` vocabulary."""

    name: str
    pipeline: str
    dim: int
    ffn_dim: int
    num_heads: int
    num_layers: int
    in_dim: int
    out_dim: int
    patch_size: tuple[int, int, int]
    freq_dim: int
    text_dim: int
    text_len: int
    eps: float
    qk_norm: bool
    cross_attn_norm: bool
    vae_stride: tuple[int, int, int]
    z_dim: int
    default_steps: int
    image_dim: int = 0  # CLIP width feeding the image embedding MLP (0: no image conditioning)
    image_tokens: int = 0  # CLIP tokens in the DiT's context (257 per image)
    image_pos_embed: bool = False  # FLF2V's learned position table over the image tokens

    @property
    def images(self) -> int:
        """Conditioning images per sample: 0 (T2V), 1 (I2V), 2 (FLF2V)."""
        return {"t2v": 0, "i2v": 1, "flf2v": 2}[self.pipeline]

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> ModelSpec:
        s = "model"
        _require(s, raw, (*MODEL_INT_KEYS, "name", "pipeline", "patch_size", "vae_stride", "eps"))
        ints: dict[str, Any] = {k: _positive_int(s, k, raw[k]) for k in MODEL_INT_KEYS}
        if ints["dim"] % ints["num_heads"]:
            raise ConfigError(f"{s}.num_heads", f"must divide model.dim={ints['dim']}")
        if raw["pipeline"] not in PIPELINES:
            raise ConfigError(
                f"{s}.pipeline", f"{raw['pipeline']!r} not allowed; allowed: {', '.join(PIPELINES)}"
            )
        image: dict[str, Any] = {"image_dim": 0, "image_tokens": 0, "image_pos_embed": False}
        if raw["pipeline"] != "t2v":
            image = {k: _positive_int(s, k, raw.get(k)) for k in ("image_dim", "image_tokens")}
            image["image_pos_embed"] = raw["pipeline"] == "flf2v"
        for flag in ("qk_norm", "cross_attn_norm"):
            if not raw.get(flag, True):
                raise ConfigError(f"{s}.{flag}", "Wan2.1 always uses it; allowed: true")
        return cls(
            name=str(raw["name"]),
            pipeline=str(raw["pipeline"]),
            patch_size=_triple(s, "patch_size", raw["patch_size"]),
            vae_stride=_triple(s, "vae_stride", raw["vae_stride"]),
            eps=float(raw["eps"]),
            qk_norm=True,
            cross_attn_norm=True,
            **image,
            **ints,
        )


@attrs.frozen
class Workload:
    """What one video asks of the model, as the user wrote it."""

    name: str
    batch_size: int
    num_frames: int
    height: int
    width: int
    num_inference_steps: int
    guidance_scale: float
    text_len: int
    context_len: int
    dtype: str
    rounding: str

    @property
    def act_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @property
    def guidance_forwards(self) -> int:
        """Classifier-free guidance runs a second, unconditional forward when scale > 1."""
        return 2 if self.guidance_scale > 1.0 else 1

    @property
    def forwards_per_video(self) -> int:
        return self.num_inference_steps * self.guidance_forwards

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], model: ModelSpec) -> Workload:
        s = "workload"
        if raw.get("num_inference_steps") is None:  # the release default of the model's pipeline
            raw = {**raw, "num_inference_steps": model.default_steps}
        _require(s, raw, (*WORKLOAD_INT_KEYS, "guidance_scale", "dtype", "rounding"))
        ints = {k: _positive_int(s, k, raw[k]) for k in WORKLOAD_INT_KEYS}
        gs = raw["guidance_scale"]
        if isinstance(gs, bool) or not isinstance(gs, int | float) or not 0 <= gs < float("inf"):
            raise ConfigError(f"{s}.guidance_scale", f"must be a finite number >= 0, got {gs!r}")
        if raw["dtype"] not in DTYPE_BYTES:
            allowed = ", ".join(DTYPE_BYTES)
            raise ConfigError(f"{s}.dtype", f"{raw['dtype']!r} not allowed; allowed: {allowed}")
        if raw["rounding"] not in ROUNDING_RULES:
            allowed = ", ".join(ROUNDING_RULES)
            raise ConfigError(f"{s}.rounding", f"{raw['rounding']!r} not allowed; allowed: {allowed}")
        for key in ("text_len", "context_len"):
            if ints[key] > model.text_len:
                raise ConfigError(f"{s}.{key}", f"{ints[key]} exceeds the model's text_len {model.text_len}")
        if ints["text_len"] > ints["context_len"]:
            raise ConfigError(
                f"{s}.text_len",
                f"{ints['text_len']} exceeds workload.context_len {ints['context_len']}",
            )
        return cls(
            name=str(raw.get("name", "custom")),
            guidance_scale=float(gs),
            dtype=str(raw["dtype"]),
            rounding=str(raw["rounding"]),
            **ints,
        )
