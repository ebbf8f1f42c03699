"""The real module behind each stage of a Wan2.1 video: one :class:`Reference` per stage.

Each reference is one object: how to build the module and the inputs of one
run (:mod:`ditmeter.models.wan21.builders`, imported only when a run is
traced or profiled), how its module paths become the analytic ids
(:mod:`~ditmeter.models.wan21.names`), and the node rules of the ops its
containers run inline (:mod:`~ditmeter.models.wan21.node_rules`). ``trace``
and ``profile`` use the same objects.
"""

from __future__ import annotations

from ditmeter.models.family import Lazy, Reference
from ditmeter.models.wan21 import names, node_rules

_BUILDERS = "ditmeter.models.wan21.builders"

REFERENCES: dict[str, Reference] = {
    "text_encoder": Reference(
        "transformers-umt5",
        "transformers.UMT5EncoderModel",
        names.UMT5_NAMES,
        node_rules.UMT5_RULES,
        Lazy(f"{_BUILDERS}:make_text_encoder"),
    ),
    "image_encoder": Reference(
        "transformers-clip-vision",
        "transformers.CLIPVisionModel",
        names.CLIP_NAMES,
        node_rules.CLIP_RULES,
        Lazy(f"{_BUILDERS}:make_image_encoder"),
    ),
    "vae_encode": Reference(
        "diffusers-wan-vae-encode",
        "diffusers.AutoencoderKLWan.encode",
        names.VAE_NAMES,
        node_rules.VAE_ENCODE_RULES,
        Lazy(f"{_BUILDERS}:make_vae_encode"),
    ),
    "dit": Reference(
        "diffusers-dit",
        "diffusers.WanTransformer3DModel",
        names.DIT_NAMES,
        node_rules.DIT_RULES,
        Lazy(f"{_BUILDERS}:make_dit"),
    ),
    "vae_decode": Reference(
        "diffusers-wan-vae",
        "diffusers.AutoencoderKLWan.decode",
        names.VAE_NAMES,
        node_rules.VAE_DECODE_RULES,
        Lazy(f"{_BUILDERS}:make_vae_decode"),
    ),
}
