"""The Wan2.2 family: T2V-A14B (two experts). Wan2.1's family with what Wan2.2 changes: its model
records, its pipeline's analysis, and no multi-GPU plans yet. The references and memory rules are
Wan2.1's (the model record says which timesteps the DiT is fed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ditmeter.analytic.analysis import Analysis
from ditmeter.analytic.memory import DEFAULT_OFFLOAD, Offload
from ditmeter.analytic.parallel import CollectiveSpec, ParallelPlan, RankPlan
from ditmeter.analytic.workload import Workload
from ditmeter.errors import ConfigError
from ditmeter.models.wan21.family import Wan21
from ditmeter.models.wan21.spec import WanModelSpec
from ditmeter.models.wan22 import pipeline
from ditmeter.models.wan22.spec import Wan22ModelSpec, parse_model

if TYPE_CHECKING:
    from torch import nn

_NO_PLANS = "Wan2.2's plans are not modeled yet (issue 14); allowed: the defaults"


class Wan22(Wan21):
    """Wan2.2's implementation of :class:`ditmeter.models.family.Family`."""

    name = "wan2.2"
    slug = "wan2_2"

    def parse_model(self, raw: Mapping[str, Any], pipeline: str) -> Wan22ModelSpec:
        return parse_model(raw, pipeline)

    def analyze(
        self,
        model: WanModelSpec,
        workload: Workload,
        stages: Sequence[str],
        offload: Offload = DEFAULT_OFFLOAD,
    ) -> Analysis:
        assert isinstance(model, Wan22ModelSpec)  # parse_model made it
        return pipeline.analyze(model, workload, stages, self.name, offload)

    def parallel(self, analysis: Analysis, plan: ParallelPlan, offload: Offload) -> RankPlan:
        raise ConfigError("parallel", _NO_PLANS)

    def context_parallel(
        self, module: nn.Module, analysis: Analysis, plan: ParallelPlan
    ) -> list[CollectiveSpec]:
        raise ConfigError("parallel", _NO_PLANS)


WAN22 = Wan22()
