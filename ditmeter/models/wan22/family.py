"""The Wan2.2 family: T2V-A14B and I2V-A14B (two experts), TI2V-5B (text or image to video) and
the Wan2.2 VAE. Wan2.1's family with what Wan2.2 changes: its model records, its pipeline's
analysis, its VAE references and its multi-GPU rules. The memory rules and the rank plan are
Wan2.1's (the model record says which timesteps the DiT is fed, which VAE rules apply and how
many experts each GPU keeps)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from ditmeter.analytic.analysis import Analysis
from ditmeter.analytic.memory import DEFAULT_OFFLOAD, Offload
from ditmeter.analytic.parallel import CollectiveSpec, ParallelPlan, RankPlan
from ditmeter.analytic.workload import Workload
from ditmeter.errors import ConfigError
from ditmeter.models.family import Reference
from ditmeter.models.wan21.family import Wan21
from ditmeter.models.wan21.spec import WanModelSpec
from ditmeter.models.wan22 import pipeline
from ditmeter.models.wan22.spec import Wan22ModelSpec, parse_model

if TYPE_CHECKING:
    from torch import nn


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

    def references(self) -> Mapping[str, Reference]:
        from ditmeter.models.wan22.references import REFERENCES

        return REFERENCES

    def parallel(self, analysis: Analysis, plan: ParallelPlan, offload: Offload) -> RankPlan:
        """Wan2.1's rank plan (``models/wan21/parallel.py``) with Wan2.2's rules: the official
        generate.py has ``--ulysses_size`` only (no ring, no CFG split); its per-token timesteps are
        embedded for the whole sequence on every rank; both experts stay on every GPU (sharded
        under ``dit_fsdp``); ``--convert_model_dtype`` applies only without ``--dit_fsdp``."""
        from ditmeter.models.wan21.parallel import rank_plan

        if analysis.workload.pipeline == "official":
            for key, value in (("ring", plan.ring), ("cfg", plan.cfg)):
                if value > 1:
                    raise ConfigError(
                        f"parallel.{key}",
                        f"{value} not allowed: Wan2.2's generate.py splits the sequence with "
                        "--ulysses_size only; allowed: 1 (or pipeline=diffusers)",
                    )
        convert = offload.convert_model_dtype and not plan.dit_fsdp
        rank = rank_plan(
            analysis,
            plan,
            attrs.evolve(offload, convert_model_dtype=False),
            weight_dtype="bf16" if convert else None,
            placed=pipeline.official_placement if plan.gpus == 1 else None,  # one GPU: one expert at a time
        )
        notes = list(rank.notes)
        if offload.convert_model_dtype and plan.dit_fsdp:
            notes.append(
                "offload.convert_model_dtype has no effect under parallel.dit_fsdp: generate.py "
                "shards the fp32 experts (FSDP gathers them in bf16) and casts only unsharded ones."
            )
        if "dit_2" in rank.memory.components:  # what the rank plan placed, not a second guess
            notes.append(
                "Both experts stay on every GPU (dit and dit_2 in the memory timeline)"
                + (", each sharded by FSDP." if plan.dit_fsdp else ".")
            )
        return attrs.evolve(rank, notes=tuple(notes))

    def context_parallel(
        self, module: nn.Module, analysis: Analysis, plan: ParallelPlan
    ) -> list[CollectiveSpec]:
        if analysis.workload.pipeline == "official":
            raise ConfigError(
                "pipeline",
                "tracing a Wan2.2 plan runs diffusers' context parallelism, which splits the per-token "
                "timesteps that the official code embeds whole on every rank (report and sweep cost "
                "the official plan); allowed: pipeline=diffusers",
            )
        return super().context_parallel(module, analysis, plan)


WAN22 = Wan22()
