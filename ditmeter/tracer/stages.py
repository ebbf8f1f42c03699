"""The real module behind each stage of the video, built on a device and fed one run.

Each entry says which node-rule set maps its graph (``reference``), how its
module paths become the analytic ids (``canonical_id``), and how to build the
module and the inputs of one run from the model config and the workload.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs
from torch import nn

from ditmeter.analytic.clip_names import clip_canonical_id
from ditmeter.analytic.geometry import Geometry
from ditmeter.analytic.spec import ModelSpec, Workload
from ditmeter.analytic.umt5_names import umt5_canonical_id
from ditmeter.analytic.wan_names import canonical_id as dit_canonical_id
from ditmeter.analytic.wan_vae_names import vae_canonical_id
from ditmeter.tracer import reference as ref

Make = Callable[[ModelSpec, Workload, Geometry, Mapping[str, Any], str], tuple[nn.Module, dict[str, Any]]]


@attrs.frozen
class StageReference:
    reference: str  # the node-rule set (ditmeter.compare.mapping.NODE_RULES)
    source: str
    canonical_id: Callable[[str], str | None]
    make: Make


def _dit(
    m: ModelSpec, w: Workload, g: Geometry, raw: Mapping[str, Any], device: str
) -> tuple[nn.Module, dict[str, Any]]:
    inputs: dict[str, Any] = {**ref.diffusers_dit_inputs(m, w, g, device), "return_dict": False}
    return ref.build_diffusers_dit(m, w.dtype, device), inputs


def _text(
    m: ModelSpec, w: Workload, g: Geometry, raw: Mapping[str, Any], device: str
) -> tuple[nn.Module, dict[str, Any]]:
    return ref.build_umt5_encoder(raw.get("text_encoder"), device), ref.umt5_inputs(
        w.batch_size, m.text_len, device
    )


def _image(
    m: ModelSpec, w: Workload, g: Geometry, raw: Mapping[str, Any], device: str
) -> tuple[nn.Module, dict[str, Any]]:
    section = raw.get("image_encoder")
    return ref.build_clip_vision(section, device), ref.clip_inputs(section, w.batch_size * m.images, device)


def _encode(
    m: ModelSpec, w: Workload, g: Geometry, raw: Mapping[str, Any], device: str
) -> tuple[nn.Module, dict[str, Any]]:
    video = (g.effective_frames, g.effective_height, g.effective_width)
    section = raw.get("vae")
    return ref.build_vae_encode_module(section, device), ref.vae_encode_inputs(
        section, w.batch_size, video, device
    )


def _decode(
    m: ModelSpec, w: Workload, g: Geometry, raw: Mapping[str, Any], device: str
) -> tuple[nn.Module, dict[str, Any]]:
    section = raw.get("vae")
    return ref.build_vae_decode_module(section, device), ref.vae_decode_inputs(
        section, w.batch_size, g.latent_shape, device
    )


STAGE_REFERENCES: dict[str, StageReference] = {
    "text_encoder": StageReference(
        "transformers-umt5", "transformers.UMT5EncoderModel", umt5_canonical_id, _text
    ),
    "image_encoder": StageReference(
        "transformers-clip-vision", "transformers.CLIPVisionModel", clip_canonical_id, _image
    ),
    "vae_encode": StageReference(
        "diffusers-wan-vae-encode", "diffusers.AutoencoderKLWan.encode", vae_canonical_id, _encode
    ),
    "dit": StageReference("diffusers-dit", "diffusers.WanTransformer3DModel", dit_canonical_id, _dit),
    "vae_decode": StageReference(
        "diffusers-wan-vae", "diffusers.AutoencoderKLWan.decode", vae_canonical_id, _decode
    ),
}
