"""The Wan2.2 family: T2V-A14B (two experts)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from ditmeter.analytic.analysis import Analysis
from ditmeter.analytic.geometry import Geometry
from ditmeter.analytic.memory import DEFAULT_OFFLOAD, Offload
from ditmeter.analytic.parallel import CollectiveSpec, ParallelPlan, RankPlan
from ditmeter.analytic.workload import Workload
from ditmeter.errors import ConfigError
from ditmeter.models.family import Lazy, Reference
from ditmeter.models.wan21 import pipeline as wan21
from ditmeter.models.wan21.family import WAN21
from ditmeter.models.wan22 import pipeline
from ditmeter.models.wan22.spec import Wan22ModelSpec, parse_model

if TYPE_CHECKING:
    from torch import nn


class Wan22:
    """Wan2.2's implementation of :class:`ditmeter.models.family.Family`."""

    name = "wan2.2"
    slug = "wan2_2"
    forward_stage = wan21.FORWARD

    def parse_model(self, raw: Mapping[str, Any], pipeline: str) -> Wan22ModelSpec:
        return parse_model(raw, pipeline)

    def geometry(self, model: Wan22ModelSpec, workload: Workload) -> Geometry:
        return wan21.video_geometry(model, workload)

    def available_stages(self, model: Wan22ModelSpec) -> tuple[str, ...]:
        return wan21.available_stages(model)

    def analyze(
        self,
        model: Wan22ModelSpec,
        workload: Workload,
        stages: Sequence[str],
        offload: Offload = DEFAULT_OFFLOAD,
    ) -> Analysis:
        return pipeline.analyze(model, workload, stages, self.name, offload)

    def parallel(self, analysis: Analysis, plan: ParallelPlan, offload: Offload) -> RankPlan:
        raise ConfigError("parallel", "Wan2.2's plans are not modeled yet (issue 14); allowed: the defaults")

    def context_parallel(
        self, module: nn.Module, analysis: Analysis, plan: ParallelPlan
    ) -> list[CollectiveSpec]:
        raise ConfigError("parallel", "Wan2.2's plans are not modeled yet (issue 14); allowed: the defaults")

    def references(self) -> Mapping[str, Reference]:
        refs = dict(WAN21.references())
        dit = refs[wan21.FORWARD]
        refs[wan21.FORWARD] = attrs.evolve(dit, make=Lazy("ditmeter.models.wan22.builders:make_dit"))
        return refs

    def reference_memory(self, analysis: Analysis) -> dict[str, int]:
        """As Wan2.1's, the diffusers DiT fed per-token timesteps where the pipeline feeds them."""
        from ditmeter.models.wan21.memory import dit_footprint, stage_activation_bytes

        a = analysis
        m, w, g = a.model, a.workload, a.geometry
        per_token = "diffusers" if m.per_token_timesteps(w.pipeline) else None
        reference = dit_footprint(m, w, g, a.forward.tree, residual_dtype=w.dtype, per_token=per_token)
        return stage_activation_bytes(m, w, g, reference)

    def component_weights(self, model: Wan22ModelSpec) -> dict[str, dict[str, int]]:
        return wan21.component_weights(model)


WAN22 = Wan22()
