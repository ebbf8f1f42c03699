"""What a model family gives the rest of ditmeter: a typed model, its analysis, its references.

A family (``ditmeter.models.wan21`` …) knows one line of models: its config
records, its cost-tree compositions, its name tables, the real modules it is
checked against and the stages of its pipeline. The generic packages
(``tracer``, ``compare``, ``reports``, ``commands``) receive a :class:`Family`
and never import one by name.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from ditmeter.analytic.analysis import Analysis
from ditmeter.analytic.geometry import Geometry
from ditmeter.analytic.memory import Offload
from ditmeter.analytic.parallel import CollectiveSpec, ParallelPlan, RankPlan
from ditmeter.analytic.workload import Workload
from ditmeter.compare.mapping import NodeRules
from ditmeter.compare.names import NameTable

if TYPE_CHECKING:
    from torch import nn

#: Builds a reference's real module and the inputs of one run:
#: (model, workload, geometry, device) → (module, keyword inputs).
Make = Callable[[Any, Workload, Geometry, str], "tuple[nn.Module, dict[str, Any]]"]


@attrs.frozen
class Lazy:
    """A builder named ``"package.module:function"``, imported on first call, so that reading a
    family (``report``, ``--help``) never imports torch."""

    target: str

    def __call__(self, *args: Any) -> Any:
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)(*args)


@attrs.frozen
class Reference:
    """A real module a stage is checked against: how to build it and feed it one run, how its
    module paths become analytic ids, and the rules for the ops its containers run inline."""

    name: str  # e.g. "diffusers-dit"
    source: str  # the class that is built, e.g. "diffusers.WanTransformer3DModel"
    names: NameTable
    rules: NodeRules
    make: Make


#: A real module's modules: path → (class name, its own parameters' shapes), ``named_modules()`` order.
ModuleTable = dict[str, tuple[str, tuple[tuple[int, ...], ...]]]


@attrs.frozen
class IngestStage:
    """A stage as a user's own run calls it (``ditmeter ingest``): the class names of its root
    module in a torch.profiler trace and, for a stage mapped module by module, the modules of the
    real module that ran (``modules()``: a :data:`ModuleTable`), how its
    paths become analytic ids and the rules for the ops its containers run inline. A stage without
    ``modules`` is measured whole."""

    stage: str
    classes: tuple[str, ...]
    modules: Callable[[], ModuleTable] | None = None
    names: NameTable | None = None
    rules: NodeRules | None = None
    #: A Python frame (file name, function) that is the stage's root call, named ``classes[0]``:
    #: a pipeline that calls a method of the module (``vae.decode``) leaves no module event for it.
    frame: tuple[str, str] | None = None
    #: Classes of ``modules`` never called themselves (the VAE whose method is the frame).
    transparent: tuple[str, ...] = ()
    #: Root calls per run of the stage (None: the stage's own ``calls``, e.g. the VAE's chunks).
    calls_per_run: int | None = None


class ModelSpec(Protocol):
    """What generic code reads of a family's model record (an attrs class)."""

    @property
    def name(self) -> str: ...

    @property
    def num_layers(self) -> int: ...

    @property
    def default_steps(self) -> int: ...

    @property
    def text_len(self) -> int: ...


class Family(Protocol):
    """One line of models (see the module docstring)."""

    @property
    def name(self) -> str:
        """The ``model.family`` value of its configs, e.g. ``wan2.1``."""

    @property
    def slug(self) -> str:
        """The folder of its run artifacts: ``<run>/static_analysis/<slug>/``."""

    @property
    def forward_stage(self) -> str:
        """The stage that runs every denoising step (``dit``): per-forward figures are its."""

    def parse_model(self, raw: Mapping[str, Any], pipeline: str) -> ModelSpec:
        """The ``model`` config section as the family's typed record, its components in the dtypes
        ``pipeline`` (``official`` or ``diffusers``) runs them in (errors name the field)."""

    def geometry(self, model: Any, workload: Workload) -> Geometry:
        """Latent and token shapes of ``workload`` (refuses sizes the model cannot run)."""

    def available_stages(self, model: Any) -> tuple[str, ...]:
        """The stages ``model``'s pipeline runs, in order."""

    def analyze(
        self, model: Any, workload: Workload, stages: Sequence[str], offload: Offload = ...
    ) -> Analysis:
        """Cost trees of the selected stages of one video and its memory timeline under ``offload``."""

    def references(self) -> Mapping[str, Reference]:
        """The real module behind each stage."""

    def context_parallel(
        self, module: nn.Module, analysis: Analysis, plan: ParallelPlan
    ) -> list[CollectiveSpec]:
        """Make the forward stage's reference ``module`` one rank of ``plan``'s sequence parallelism
        (the caller runs it under a process group of ulysses × ring ranks) and say, by the family's
        rules, which collectives one forward of it issues on a rank (the trace's gate); refuses
        what the reference code cannot run (errors name the key)."""

    def parallel(self, analysis: Analysis, plan: ParallelPlan, offload: Offload) -> RankPlan:
        """What one GPU runs, sends and holds for the video of ``analysis`` under ``plan`` (rank 0,
        the one that also decodes); refuses plans the pipeline's code refuses (errors name the key)."""

    def ingest_stages(self, model: Any, workload: Workload, geometry: Geometry) -> tuple[IngestStage, ...]:
        """How a run of ``workload.pipeline``'s own code shows each stage in a profiler trace
        (refuses, naming the key, what cannot be mapped here, such as the official code when it
        is not installed)."""

    def reference_memory(self, analysis: Analysis) -> dict[str, int]:
        """Per stage with a memory rule: the analytic peak live activation bytes of the stage's
        reference module as the tracer runs it (its dtypes), for the memory gate."""

    def residual_stream(self, analysis: Analysis) -> tuple[int, str]:
        """Elements and dtype of the forward stage's residual stream in one forward (what a step
        cache keeps per guidance branch)."""

    def component_weights(self, model: Any) -> dict[str, dict[str, int]]:
        """Weight bytes by dtype of every component besides the forward stage's, for the memory fit."""
