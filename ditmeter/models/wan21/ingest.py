"""How a Wan run shows each stage in a torch.profiler trace (``ditmeter ingest``).

Each pipeline's code calls its components through their root modules, whose
class names mark a stage's run in the trace. A stage whose root is the module
``trace`` checks is mapped module by module (against the real module's
``named_modules()`` on meta, with its name table and node rules): under
diffusers every stage, under the official code the DiT (its ``WanModel`` where
the official code is installed). diffusers' pipelines call the VAE's
``decode``/``encode`` methods, not the module: the run is the
``AutoencoderKLWan._decode`` (``_encode``) frame, its modules reached through
the never-called ``AutoencoderKLWan``. The official T5, CLIP and VAE are measured
whole, at their root call (their paths are not the references' and no rules are
written for their inline ops).

- official ``generate.py``: ``T5Encoder`` (inside ``T5EncoderModel``), the CLIP
  ``VisionTransformer``, the VAE's ``Encoder3d`` / ``Decoder3d`` (called once per
  chunk of frames), ``WanModel``;
- diffusers: ``UMT5EncoderModel``, ``CLIPVisionModel(WithProjection)``, the
  ``AutoencoderKLWan._encode`` / ``_decode`` frames (one per run),
  ``WanTransformer3DModel``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ditmeter.analytic.geometry import Geometry
from ditmeter.analytic.workload import Workload
from ditmeter.models.family import IngestStage, ModuleTable, Reference
from ditmeter.models.wan21.official import OFFICIAL_DIT_NAMES, OFFICIAL_DIT_RULES, official_model_module
from ditmeter.models.wan21.spec import WanModelSpec

ROOT_CLASSES: dict[str, dict[str, tuple[str, ...]]] = {
    "official": {
        "text_encoder": ("T5Encoder",),
        "image_encoder": ("VisionTransformer",),
        "vae_encode": ("Encoder3d",),
        "dit": ("WanModel",),
        "vae_decode": ("Decoder3d",),
    },
    "diffusers": {
        "text_encoder": ("UMT5EncoderModel",),
        "image_encoder": ("CLIPVisionModel", "CLIPVisionModelWithProjection"),
        "vae_encode": ("AutoencoderKLWan._encode",),  # a frame: the pipelines call vae.encode()
        "dit": ("WanTransformer3DModel",),
        "vae_decode": ("AutoencoderKLWan._decode",),
    },
}


#: The stages mapped module by module, per pipeline.
MAPPED = {
    "official": ("dit",),
    "diffusers": ("text_encoder", "image_encoder", "vae_encode", "dit", "vae_decode"),
}
#: diffusers' VAE stages: the method the pipelines call is the run (``AutoencoderKLWan._decode``
#: calls ``post_quant_conv`` and then the decoder once per chunk of frames).
_VAE_FRAMES = {"vae_encode": "_encode", "vae_decode": "_decode"}


def _diffusers_modules(m: WanModelSpec, w: Workload, g: Geometry, ref: Reference) -> Any:
    def modules() -> ModuleTable:
        from ditmeter.models.wan21.builders import module_table

        return module_table(ref.make(m, w, g, "meta")[0])

    return modules


def _official_modules(m: WanModelSpec) -> Any:
    def modules() -> ModuleTable:
        from ditmeter.models.wan21.builders import build_official_dit, module_table

        return module_table(build_official_dit(m, "meta"))

    return modules


def ingest_stages(
    m: WanModelSpec, w: Workload, g: Geometry, references: Mapping[str, Reference]
) -> tuple[IngestStage, ...]:
    """The stages of ``w.pipeline``'s run, those in :data:`MAPPED` module by module (module docstring)."""
    roots = ROOT_CLASSES[w.pipeline]
    out = []
    for stage, classes in roots.items():
        if stage not in MAPPED[w.pipeline]:
            out.append(IngestStage(stage, classes))
        elif w.pipeline == "official":
            official_model_module()  # refused now, naming the key, if the code is not installed
            out.append(
                IngestStage(
                    stage,
                    classes,
                    _official_modules(m),
                    OFFICIAL_DIT_NAMES,
                    OFFICIAL_DIT_RULES,
                )
            )
        elif stage in _VAE_FRAMES:
            ref, method = references[stage], _VAE_FRAMES[stage]
            out.append(
                IngestStage(
                    stage,
                    classes,
                    _diffusers_modules(m, w, g, ref),
                    ref.names,
                    ref.rules,
                    frame=("autoencoder_kl_wan.py", method),
                    transparent=("AutoencoderKLWan",),
                    calls_per_run=1,
                )
            )
        else:
            ref = references[stage]
            out.append(IngestStage(stage, classes, _diffusers_modules(m, w, g, ref), ref.names, ref.rules))
    return tuple(out)
