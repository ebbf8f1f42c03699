"""The stages of one Wan2.2 video (docs/wan22.md): Wan2.1's stages and cost trees, with what the
two-expert release changes.

- The DiT: one expert's shape (both experts are the same); the official code feeds it a timestep
  per token (time embedding and projection on every token, a per-token modulation kept for the
  forward); diffusers only with ``expand_timesteps``.
- Which expert runs which step: from the scheduler the pipeline uses at the release's shift
  (:mod:`ditmeter.analytic.schedule`); FLOPs and time per forward are the same either way.
- ``offload.convert_model_dtype`` (official ``--convert_model_dtype``): the DiT's weights in bf16
  instead of the checkpoint's fp32 (the modules diffusers keeps in fp32 are counted fp32).
- Placement, official (``wan/text2video.py``): the experts start on the CPU (``init_on_cpu``)
  and ``_prepare_model_for_timestep`` keeps one on the GPU at a time; ``--offload_model``
  moves T5 back after its encode and the expert off before the VAE decode. diffusers keeps
  ``transformer`` and ``transformer_2`` both on the GPU unless offloaded.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import attrs

from ditmeter.analytic.analysis import Analysis
from ditmeter.analytic.memory import DEFAULT_OFFLOAD, Offload
from ditmeter.analytic.schedule import diffusers_timesteps, expert_split, official_timesteps
from ditmeter.analytic.workload import Workload
from ditmeter.errors import ConfigError
from ditmeter.models.wan21 import pipeline as wan21
from ditmeter.models.wan21 import placement
from ditmeter.models.wan22.spec import Wan22ModelSpec


def split(m: Wan22ModelSpec, w: Workload) -> tuple[int, int]:
    """(high-noise steps, low-noise steps) of the video, from the pipeline's own scheduler."""
    steps = w.num_inference_steps
    timesteps = (official_timesteps if w.pipeline == "official" else diffusers_timesteps)(
        steps, m.sample_shift
    )
    return expert_split(timesteps, m.boundary) if m.experts == 2 else (steps, 0)


#: Components on the GPU per stage under Wan2.2's generate.py on one GPU: Wan2.1's placement with
#: the experts on the CPU until the steps (``init_on_cpu``), one on the GPU at a time.
official_placement = functools.partial(placement.official_on_gpu, dit_on_init=False)


def analyze(
    m: Wan22ModelSpec, w: Workload, stages: Sequence[str], family: str, offload: Offload = DEFAULT_OFFLOAD
) -> Analysis:
    """Wan2.1's analysis (the model record brings the per-token timesteps and the experts on the
    GPU) with Wan2.2's cast, official placement and notes."""
    convert = offload.convert_model_dtype
    if convert and w.pipeline != "official":
        raise ConfigError(
            "offload.convert_model_dtype",
            "an official generate.py flag (diffusers loads the DiT in workload.dtype)",
        )
    base = wan21.analyze(
        m,
        w,
        stages,
        family,
        attrs.evolve(offload, convert_model_dtype=False),
        weight_dtype="bf16" if convert else None,
        placed=official_placement,
    )
    return attrs.evolve(base, notes=(*base.notes, *notes(m, w, convert)))


def notes(m: Wan22ModelSpec, w: Workload, convert: bool = False) -> tuple[str, ...]:
    high, low = split(m, w)
    low_scale, high_scale = m.guide_scale
    scheduler = "FlowUniPC (official)" if w.pipeline == "official" else "diffusers UniPCMultistepScheduler"
    out = []
    if m.experts == 2:
        out.append(
            f"Experts: two DiTs of this shape; the high-noise expert runs {high} of {high + low} steps "
            f"(t >= {m.boundary:g} x 1000 under the {scheduler} schedule at shift {m.sample_shift:g}), the "
            f"low-noise one {low}; the release's guidance scales are {high_scale:g} (high) and "
            f"{low_scale:g} (low)"
            + (
                "; workload.guidance_scale applies to both in diffusers (guidance_scale_2 defaults to it)."
                if w.pipeline == "diffusers"
                else "."
            )
            + " FLOPs and time per forward are the same whichever runs."
        )
    per_token = m.per_token_timesteps(w.pipeline)
    out.append(
        "Timesteps: one per token (the time embedding and projection run on every token and the "
        "modulation is per token, kept for the forward"
        + (" in fp32)." if w.pipeline == "official" else ", expand_timesteps).")
        if per_token
        else "Timesteps: one per sample (diffusers without expand_timesteps)."
    )
    if convert:
        out.append(
            "offload.convert_model_dtype: the DiT's weights are cast to bf16 (--convert_model_dtype), "
            "not the fp32 the DiT dtypes note above gives; the modules diffusers keeps in fp32 are "
            "counted fp32."
        )
    return tuple(out)
