"""The Wan2.2 DiT reference: the diffusers ``WanTransformer3DModel`` fed the timesteps the pipeline
feeds (one per token under the official code and with ``expand_timesteps``)."""

from __future__ import annotations

from typing import Any

from ditmeter.analytic.geometry import Geometry
from ditmeter.analytic.workload import Workload
from ditmeter.models.wan21.builders import Built, build_diffusers_dit, diffusers_dit_inputs
from ditmeter.models.wan22.spec import Wan22ModelSpec


def make_dit(m: Wan22ModelSpec, w: Workload, g: Geometry, device: str) -> Built:
    """One expert and one forward's inputs (``return_dict=False``)."""
    per_token = m.per_token_timesteps(w.pipeline)
    inputs: dict[str, Any] = {**diffusers_dit_inputs(m, w, g, device, per_token), "return_dict": False}
    return build_diffusers_dit(m, w.dtype, device), inputs
