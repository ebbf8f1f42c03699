"""The Wan2.1 family: T2V-14B, T2V-1.3B, I2V-14B (480p, 720p) and FLF2V-14B."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ditmeter.analytic.analysis import Analysis
from ditmeter.analytic.geometry import Geometry
from ditmeter.analytic.memory import DEFAULT_OFFLOAD, Offload
from ditmeter.analytic.parallel import CollectiveSpec, ParallelPlan, RankPlan
from ditmeter.analytic.workload import Workload
from ditmeter.models.family import IngestStage, Reference
from ditmeter.models.wan21 import pipeline
from ditmeter.models.wan21.spec import WanModelSpec, parse_model

if TYPE_CHECKING:
    from torch import nn


class Wan21:
    """Wan2.1's implementation of :class:`ditmeter.models.family.Family`."""

    name = "wan2.1"
    slug = "wan2_1"
    forward_stage = pipeline.FORWARD

    def parse_model(self, raw: Mapping[str, Any], pipeline: str) -> WanModelSpec:
        return parse_model(raw, pipeline)

    def geometry(self, model: WanModelSpec, workload: Workload) -> Geometry:
        return pipeline.video_geometry(model, workload)

    def available_stages(self, model: WanModelSpec) -> tuple[str, ...]:
        return pipeline.available_stages(model)

    def analyze(
        self,
        model: WanModelSpec,
        workload: Workload,
        stages: Sequence[str],
        offload: Offload = DEFAULT_OFFLOAD,
    ) -> Analysis:
        return pipeline.analyze(model, workload, stages, self.name, offload)

    def parallel(self, analysis: Analysis, plan: ParallelPlan, offload: Offload) -> RankPlan:
        from ditmeter.models.wan21.parallel import rank_plan

        return rank_plan(analysis, plan, offload)

    def context_parallel(
        self, module: nn.Module, analysis: Analysis, plan: ParallelPlan
    ) -> list[CollectiveSpec]:
        from ditmeter.models.wan21.builders import enable_context_parallel
        from ditmeter.models.wan21.parallel import reference_collectives

        expected = reference_collectives(analysis, plan.sequence)  # refuses what diffusers refuses
        enable_context_parallel(module, plan.ulysses, plan.ring)
        return expected

    def references(self) -> Mapping[str, Reference]:
        from ditmeter.models.wan21.references import REFERENCES

        return REFERENCES

    def ingest_stages(
        self, model: WanModelSpec, workload: Workload, geometry: Geometry
    ) -> tuple[IngestStage, ...]:
        from ditmeter.models.wan21.ingest import ingest_stages

        return ingest_stages(model, workload, geometry, self.references())

    def reference_memory(self, analysis: Analysis) -> dict[str, int]:
        from ditmeter.models.wan21.memory import reference_activation_bytes

        a = analysis
        return reference_activation_bytes(a.model, a.workload, a.geometry, a.forward.tree)

    def residual_stream(self, analysis: Analysis) -> tuple[int, str]:
        from ditmeter.models.wan21.semantics import SEMANTICS

        a, w = analysis, analysis.workload
        return w.dit_batch * a.geometry.tokens * a.model.dim, SEMANTICS[w.pipeline].residual_dtype or w.dtype

    def component_weights(self, model: WanModelSpec) -> dict[str, dict[str, int]]:
        return pipeline.component_weights(model)


WAN21 = Wan21()
