"""Wan2.2's model records: a Wan2.1 DiT record plus what the two-expert release config adds
(``wan/configs/wan_t2v_A14B.py``): the experts, the boundary, the sampling shift and the guidance
scale of each expert."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from ditmeter.models.wan21.spec import WanModelSpec
from ditmeter.models.wan21.spec import parse_model as parse_wan_model
from ditmeter.validate import as_tuple, boolean, finite_number, whole_number


def _guidance(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    from ditmeter.validate import FieldError

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

    def per_token_timesteps(self, pipeline: str) -> bool:
        """Whether ``pipeline`` feeds the DiT a timestep per token."""
        return pipeline == "official" or self.expand_timesteps

    def resident_experts(self, pipeline: str) -> int:
        """diffusers keeps ``transformer`` and ``transformer_2`` on the GPU; the official code one
        expert at a time."""
        return self.experts if pipeline == "diffusers" else 1


def parse_model(raw: Mapping[str, Any], pipeline: str) -> Wan22ModelSpec:
    spec = parse_wan_model(raw, pipeline, Wan22ModelSpec)
    assert isinstance(spec, Wan22ModelSpec)
    return spec
