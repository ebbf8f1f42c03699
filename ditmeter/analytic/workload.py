"""What one video asks of a model: the ``workload`` config section as a typed record.

A bad value raises :class:`ditmeter.errors.ConfigError` naming the field
(``workload.height``) and what is allowed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from ditmeter.analytic.cost import DTYPE_BYTES
from ditmeter.errors import ConfigError
from ditmeter.validate import finite_number, one_of, parse, positive_int, positive_int_at_most

#: Which code runs the video (top-level ``pipeline=``): the Wan repository's ``generate.py`` or
#: the diffusers pipelines. It decides dtypes, guidance, sizes and offload (see a family's semantics).
PIPELINES = ("official", "diffusers")

#: The most denoising steps a workload may ask for: releases run 40 to 50, few-step models 1 to 8;
#: the timeline gets slices for every step, so a million would take half a minute and 0.5 GB.
MAX_STEPS = 10_000


def _float(value: Any) -> Any:
    """Converter: an int from YAML (``guidance_scale: 5``) is a float; other values go to the validator."""
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


@attrs.frozen
class Workload:
    """What one video asks of the model, as the user wrote it."""

    name: str = attrs.field(converter=str)
    batch_size: int = attrs.field(validator=positive_int)
    num_frames: int = attrs.field(validator=positive_int)
    height: int = attrs.field(validator=positive_int)
    width: int = attrs.field(validator=positive_int)
    num_inference_steps: int = attrs.field(validator=positive_int_at_most(MAX_STEPS))
    guidance_scale: float = attrs.field(converter=_float, validator=finite_number(0))
    text_len: int = attrs.field(validator=positive_int)
    context_len: int = attrs.field(validator=positive_int)
    dtype: str = attrs.field(validator=one_of(*DTYPE_BYTES))
    pipeline: str = attrs.field(validator=one_of(*PIPELINES))  # from the top-level ``pipeline`` key
    #: what-if methods (``methods.cfg_free``, ``methods.cfg_batch``; docs/whatif.md): a
    #: guidance-distilled model's one forward per step, or a step's two forwards as one of batch 2
    cfg_free: bool = False
    cfg_batch: bool = False
    #: ``methods.vae_tiling``: diffusers' tiled VAE decode (``models/wan21/vae_tiling.py``)
    vae_tiling: bool = False
    #: ``methods.vae_parallel``: LightX2V's decode spread over a plan's GPUs
    #: (``models/wan21/vae_parallel.py``; a one-GPU analysis decodes whole, the plan's rank its tile)
    vae_parallel: bool = False

    @property
    def act_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @property
    def prompts(self) -> int:
        """Prompts encoded and guidance branches per step: the official code always runs a conditional
        and an unconditional branch (whatever ``guide_scale`` is); diffusers skips the second when
        scale <= 1, a guidance-distilled model (``cfg_free``) always."""
        if self.cfg_free:
            return 1
        return 2 if self.pipeline == "official" or self.guidance_scale > 1.0 else 1

    @property
    def guidance_forwards(self) -> int:
        """DiT forwards per step: one per branch, or one of both branches batched (``cfg_batch``)."""
        return 1 if self.cfg_batch else self.prompts

    @property
    def dit_batch(self) -> int:
        """Samples in one DiT forward: the batch, twice over when ``cfg_batch`` batches the branches."""
        return self.batch_size * (2 if self.cfg_batch and self.prompts == 2 else 1)

    @property
    def forwards_per_video(self) -> int:
        return self.num_inference_steps * self.guidance_forwards


def parse_workload(raw: Any, *, default_steps: int, text_len: int, pipeline: str) -> Workload:
    """The ``workload`` section for a model whose release runs ``default_steps`` steps (used when
    ``num_inference_steps`` is null) and whose text embedding takes at most ``text_len`` tokens,
    run by ``pipeline`` (the top-level key)."""
    section = "workload"
    given: dict[str, Any] = {
        "name": raw.get("name", "custom") if isinstance(raw, Mapping) else "custom",
        "pipeline": pipeline,
    }
    if isinstance(raw, Mapping) and raw.get("num_inference_steps") is None:
        if default_steps > MAX_STEPS:  # the model's release value stands in: name the key that set it
            raise ConfigError(
                "model.default_steps", f"{default_steps} not allowed; allowed: 1 to {MAX_STEPS:,}"
            )
        given["num_inference_steps"] = default_steps
    hidden = {
        "pipeline": "is a top-level key: pipeline=official|diffusers",
        "rounding": "replaced by the top-level key pipeline=official|diffusers",  # a retired key
        "cfg_free": "is methods.cfg_free",
        "cfg_batch": "is methods.cfg_batch",
        "vae_tiling": "is methods.vae_tiling",
        "vae_parallel": "is methods.vae_parallel",
    }
    w = parse(Workload, raw, section, hidden=hidden, **given)
    for key in ("text_len", "context_len"):
        if getattr(w, key) > text_len:
            raise ConfigError(
                f"{section}.{key}", f"{getattr(w, key)} exceeds the model's text_len {text_len}"
            )
    if w.text_len > w.context_len:  # the presets' context is the model's whole text_len: context_len moved
        raise ConfigError(
            f"{section}.context_len",
            f"{w.context_len} is below {section}.text_len {w.text_len} (the context holds the prompt); "
            f"allowed: {w.text_len} to {text_len}, or a shorter text_len",
        )
    return w
