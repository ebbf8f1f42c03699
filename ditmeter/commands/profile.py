"""``ditmeter profile``: measured time per module from torch.profiler, joined with the analytic costs.

The forward stage's reference module (the diffusers DiT for Wan2.1) is built
with random weights on ``profile.device_kind`` with ``profile.num_layers``
blocks (fewer than the model's, to fit a CPU or a budget), one forward is
profiled node by node (:mod:`ditmeter.tracer.profile`), every node is mapped to
its analytic leaf exactly as ``trace`` maps it, and the times are rolled up per
module beside the analytic FLOPs and bytes of the same reduced model. The run
folder holds the usual files, ``nodes.parquet`` with ``measured_time_s``, and
the profiler's Chrome trace under ``torch_profiler/``, which says what ran (model,
blocks, workload, pipeline, latent shape) for ``ditmeter ingest`` to read it back.

With ``profile.trace=<run folder>/…/torch_profiler/trace.json`` the trace of an
earlier profile run is re-read and re-joined with that run's ``nodes.parquet``
instead of running anything.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, cast

import attrs
import pandas as pd

from ditmeter.analytic.analysis import Analysis
from ditmeter.commands.progress import Progress, Steps, no_progress
from ditmeter.commands.report import analyze, open_run, run_id_for
from ditmeter.commands.trace import REFERENCE_FLAVOUR
from ditmeter.compare.check import map_graph
from ditmeter.compare.join import NODES_SCHEMA, with_times
from ditmeter.config import RunConfig
from ditmeter.errors import ConfigError
from ditmeter.reports.device_report import DeviceView
from ditmeter.reports.run_dir import analysis_dir
from ditmeter.reports.run_files import PROFILE_FILES, write_analysis_files
from ditmeter.reports.tables import modules_frame, read_table, table_metadata, write_parquet

TRACE_FILE = Path(PROFILE_FILES[1])
#: The largest forward ``profile`` runs on a CPU: about 4 minutes at the 20 GFLOP/s of bf16 matmuls
#: measured on the project's CPU machines.
MAX_CPU_FLOPS = 5e12


@attrs.frozen
class ProfileSummary:
    """What one profiled forward says, scaled to the full model where it must be."""

    device_kind: str
    num_layers: int  # blocks that ran
    model_layers: int
    forward_s: float  # the profiled forward, as measured
    in_nodes_s: float  # time inside node ranges (the rest is Python and dispatch overhead)
    blocks_s: float
    other_s: float
    trace: str

    @property
    def scale(self) -> float:
        return self.model_layers / self.num_layers

    @property
    def full_forward_s(self) -> float:
        """The full model's forward: the measured non-block time plus the block time × scale."""
        return self.other_s + self.blocks_s * self.scale


@attrs.frozen
class ProfileResult:
    run_id: str
    analysis_dir: Path
    analysis: Analysis
    view: DeviceView
    summary: ProfileSummary
    modules: pd.DataFrame
    files: tuple[str, ...]


def _check_device(kind: str, analysis: Analysis) -> None:
    """The device exists and holds the run: refused before anything is allocated or written."""
    import torch

    from ditmeter.reports.format import binary_bytes
    from ditmeter.tracer.profile import available_bytes

    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError("profile.device_kind", "cuda requested but torch sees no CUDA device; use cpu")
    flops = analysis.forward.per_run.flops
    if kind == "cpu" and flops > MAX_CPU_FLOPS:
        raise ConfigError(
            "workload",
            f"one forward of {flops / 1e12:,.1f} TFLOP would take minutes to hours on a CPU (at most "
            f"{MAX_CPU_FLOPS / 1e12:g} TFLOP); shrink the workload or profile.num_layers, or use "
            "profile.device_kind=cuda",
        )
    run = analysis.forward.per_run  # the recorder keeps every output of the forward until it ends
    need, have = run.weight_bytes + run.activation_bytes, available_bytes(kind)
    if need > have:
        raise ConfigError(
            "workload",
            f"profiling needs about {binary_bytes(need)} ({binary_bytes(run.weight_bytes)} of weights, "
            f"{binary_bytes(run.activation_bytes)} of activations kept for the trace) and the {kind} has "
            f"{binary_bytes(have)} free; shrink the workload or profile.num_layers",
        )


def _run(cfg: RunConfig, analysis: Analysis, staging: Path, step: Any) -> tuple[pd.DataFrame, float]:
    """Build, profile, map: the nodes table with measured times, and the forward's seconds."""
    from ditmeter.tracer.profile import profile_forward

    stage, p = analysis.forward, cfg.profile
    ref = cfg.family.references()[stage.name]
    with step(f"build {stage.name}"):
        model, inputs = ref.make(analysis.model, cfg.workload, analysis.geometry, p.device_kind)
    with step(f"profile {stage.name}"):
        graph, times = profile_forward(
            model,
            inputs,
            staging / TRACE_FILE,
            device_kind=p.device_kind,
            warmup=p.warmup,
            name_prefix=f"{stage.name}.",
            run=recorded_run(cfg, analysis),
        )
    with step(f"map {stage.name}"):
        per_node = {f"{stage.name}.{n.name}": times.time_s(f"{stage.name}.{n.name}") for n in graph.nodes}
        nodes = map_graph(graph, stage.rows(), ref.names, ref.rules, stage=stage.name, times=per_node)
    return nodes, times.forward_s


def recorded_run(cfg: RunConfig, analysis: Analysis) -> dict[str, Any]:
    """What the profiled forward ran, written into its trace for ``ditmeter ingest``: the model
    and the blocks built, the workload, the pipeline whose shapes the forward took, the pipeline
    whose modules ran (the references' whatever ``pipeline=`` says) and the latent shape."""
    return {
        "command": "profile",
        "model": analysis.model.name,
        "num_layers": analysis.model.num_layers,
        "workload": cfg.workload.name,
        "pipeline": cfg.workload.pipeline,
        "modules": REFERENCE_FLAVOUR,
        "latent_shape": list(analysis.geometry.latent_shape),
    }


def _check_same_run(meta: dict[str, str], analysis: Analysis, workload_name: str) -> None:
    model, workload = (json.loads(meta.get(f"ditmeter.{key}", "{}")) for key in ("model", "workload"))
    if not isinstance(model, dict) or not isinstance(workload, dict):
        raise ConfigError(
            "profile.trace", "the earlier run's nodes.parquet does not name its model and workload"
        )
    for field, theirs, ours in (
        ("model", model.get("name"), analysis.model.name),
        ("profile.num_layers", model.get("num_layers"), analysis.model.num_layers),
        ("workload", workload.get("name"), workload_name),
    ):
        if theirs != ours:
            raise ConfigError(field, f"the trace's run used {theirs!r}, this command {ours!r}; give the same")


def _reread(cfg: RunConfig, analysis: Analysis, staging: Path) -> tuple[pd.DataFrame, float]:
    """Re-join the Chrome trace of an earlier profile run with that run's nodes.parquet."""
    from ditmeter.tracer.profile import TraceFormatError, read_chrome_trace

    trace = cfg.profile.trace_path
    assert trace is not None
    nodes_file = trace.parent.parent / "nodes.parquet"
    if not trace.is_file() or not nodes_file.is_file():
        raise ConfigError(
            "profile.trace", f"need an earlier profile run's {TRACE_FILE} beside its nodes.parquet: {trace}"
        )
    try:
        times = read_chrome_trace(trace)
    except TraceFormatError as exc:
        raise ConfigError("profile.trace", str(exc)) from exc
    nodes, meta = read_table(nodes_file, NODES_SCHEMA, "profile.trace")
    _check_same_run(meta, analysis, cfg.workload.name)
    nodes["measured_time_s"] = [times.time_s(n) for n in nodes["node"]]
    (staging / TRACE_FILE).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(trace, staging / TRACE_FILE)
    return nodes, times.forward_s


def _summary(cfg: RunConfig, analysis: Analysis, modules: pd.DataFrame, forward_s: float) -> ProfileSummary:
    own = modules[modules["stage"] == analysis.forward.name]
    t = own.set_index("module_id")["measured_time_s"].fillna(0.0)
    blocks = float(t[own.set_index("module_id")["kind"] == "repeated"].sum())  # the repeated blocks
    inside = float(t.get(analysis.forward.name, 0.0))
    return ProfileSummary(
        device_kind=cfg.profile.device_kind,
        num_layers=analysis.model.num_layers,
        model_layers=cfg.model.num_layers,
        forward_s=forward_s,
        in_nodes_s=inside,
        blocks_s=blocks,
        other_s=forward_s - blocks,
        trace=str(TRACE_FILE),
    )


def profile(cfg: RunConfig, progress: Progress = no_progress) -> ProfileResult:
    """Profile (or re-read) one forward and publish a run folder with measured time per module."""
    layers = min(cfg.profile.num_layers, cfg.model.num_layers)
    analysis, view = analyze(cfg, attrs.evolve(cast(Any, cfg.model), num_layers=layers))
    run_id = run_id_for(cfg, "_profile")
    if not cfg.profile.trace:
        _check_device(cfg.profile.device_kind, analysis)
    step = Steps(progress)

    with open_run(cfg, "profile", run_id) as out:
        nodes, forward_s = (
            _reread(cfg, analysis, out) if cfg.profile.trace else _run(cfg, analysis, out, step)
        )
        rows = analysis.forward.rows()
        modules = with_times(
            modules_frame(analysis, view.prediction, [(analysis.forward.name, r) for r in rows]), nodes, rows
        )
        summary = _summary(cfg, analysis, modules, forward_s)
        section = {
            **attrs.asdict(summary),
            "full_forward_s": summary.full_forward_s,
            "timings_s": step.seconds,
        }
        with step("write"):
            meta = {"profile": json.dumps(section)}
            write_parquet(
                nodes, NODES_SCHEMA, out / "nodes.parquet", table_metadata(analysis, "nodes", **meta)
            )
            files = write_analysis_files(out, view, modules, run_id, meta=meta, profile=section)
    return ProfileResult(
        run_id,
        analysis_dir(cfg.output_root / run_id, cfg.family.slug),
        analysis,
        view,
        summary,
        modules,
        (*files, *PROFILE_FILES),
    )
