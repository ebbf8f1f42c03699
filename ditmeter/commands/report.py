"""``ditmeter report``: the analytic model only (no tracing), published as a run folder."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import attrs
import pandas as pd

from ditmeter.analytic.analysis import Analysis
from ditmeter.analytic.device import DeviceSpec
from ditmeter.analytic.eager import EAGER_DTYPE_BYTES
from ditmeter.analytic.methods import (
    SKIPPED_RUNS,
    cache_note,
    cache_schedule,
    check_under_plan,
    needs_device,
    quantized_weights,
    residual_pass,
    residual_time,
    with_runs,
)
from ditmeter.analytic.parallel import ParallelEstimate, RankPlan, check_domain
from ditmeter.analytic.plan_methods import (
    check_plan_methods,
    rank_schedule,
    rank_skipped_forward,
    shard_elements,
    with_rank_cache,
    with_rank_runs,
)
from ditmeter.analytic.timing import ZERO, TimePlan
from ditmeter.catalog import magcache_model
from ditmeter.config import RunConfig
from ditmeter.errors import ConfigError
from ditmeter.reports.device_report import DeviceView, device_view
from ditmeter.reports.parallel_report import PlanView, plan_estimate, scaling_frame
from ditmeter.reports.run_dir import analysis_dir, new_run_id, staged_run
from ditmeter.reports.run_files import write_analysis_files
from ditmeter.reports.tables import modules_frame


@attrs.frozen
class ReportResult:
    run_id: str
    analysis_dir: Path
    analysis: Analysis
    view: DeviceView
    files: tuple[str, ...]
    modules: pd.DataFrame


def analyze(cfg: RunConfig, model: object = None, *, scaling: bool = True) -> tuple[Analysis, DeviceView]:
    """The analysis of the selected stages and its time and memory on ``cfg.device``.

    ``model`` replaces ``cfg.model`` (``profile`` runs fewer blocks) and then
    only the forward stage is costed. Under a plan (``parallel.*``) the analysis is one GPU's of
    the plan (rank 0: its share of the denoiser forward, its memory) and the view holds the plan's
    per-GPU time against one GPU; ``scaling``: with its scaling table over GPU counts (else empty).
    """
    fam = cfg.family
    key = needs_device(cfg.methods)
    if key is not None and cfg.device is None:
        raise ConfigError(key, "needs device=NAME: it changes the predicted time")
    if not cfg.parallel.single:
        check_under_plan(cfg.methods)
    if model is None:
        analysis = fam.analyze(cfg.model, cfg.workload, cfg.stages, cfg.offload)
    else:
        analysis = fam.analyze(model, cfg.workload, (fam.forward_stage,), cfg.offload)
    analysis = quantized_weights(analysis, cfg.time.gemm_dtype)
    analysis.check_bounds()  # before any tracing, plotting or writing
    view = with_methods(cfg, device_view(analysis, cfg.device, cfg.measured_video_s, cfg.time))
    analysis = view.analysis
    if cfg.parallel.single or model is not None:
        if cfg.parallel.dit_fsdp or cfg.parallel.t5_fsdp:
            note = (
                "parallel.dit_fsdp / parallel.t5_fsdp on one GPU: nothing to shard (generate.py refuses "
                "FSDP without a process group); costed as one GPU."
            )
            analysis = attrs.evolve(analysis, notes=(*analysis.notes, note))
            view = attrs.evolve(view, analysis=analysis)
        return analysis, view
    return under_plan(cfg, analysis, view, scaling=scaling)


def with_methods(cfg: RunConfig, view: DeviceView) -> DeviceView:
    """``view`` with the denoiser's forwards as the methods run them (docs/whatif.md): a step cache
    (``methods.cache``) splits them into those that run the blocks and those that reuse the cache;
    sparse attention (``methods.sparse``) keeps its first steps dense."""
    a, p, m = view.analysis, view.prediction, cfg.methods
    steps = a.workload.num_inference_steps
    schedule = cache_schedule(m, a.forwards_per_video, magcache_model(cfg.model), steps)
    dense_steps = round(m.sparse_dense_steps * steps) if m.sparse is not None else 0
    if schedule is None and not dense_steps:
        return view
    if p is None:
        raise ConfigError("methods.cache", "needs device=NAME: it changes the predicted time")
    notes, rounded = list(a.notes), []
    if dense_steps != m.sparse_dense_steps * steps:
        rounded.append(
            f"methods.sparse_dense_steps={m.sparse_dense_steps:g} of {steps} steps is "
            f"{m.sparse_dense_steps * steps:g}, rounded to {dense_steps} dense steps"
        )
        notes.append(f"Sparse attention: {rounded[-1]}.")
    if schedule is not None and schedule.rounded is not None:
        rounded.append(schedule.rounded)
    dense = a.prediction(p.device, attrs.evolve(p.plan, sparse=None)) if dense_steps else None
    residual, memory = None, a.memory
    if schedule is not None:
        elements, dtype = cfg.family.residual_stream(a)
        residual = residual_pass(elements, dtype, p)
        held = a.workload.prompts * elements * EAGER_DTYPE_BYTES[dtype]
        phases = tuple(
            attrs.evolve(ph, activation_bytes=(ph.activation_bytes or 0) + held)
            if ph.stage == a.forward.name
            else ph
            for ph in a.memory.phases
        )
        memory = attrs.evolve(a.memory, phases=phases)
        notes.append(cache_note(schedule, a.forwards_per_video, held))
    a = attrs.evolve(a, notes=tuple(notes), memory=memory)
    per_step = a.workload.guidance_forwards
    runs = with_runs(p, schedule, residual, dense, dense_steps * per_step)
    return attrs.evolve(view, analysis=a, prediction=runs, rounded=tuple(rounded))


def under_plan(
    cfg: RunConfig, analysis: Analysis, view: DeviceView, *, scaling: bool = True
) -> tuple[Analysis, DeviceView]:
    """One GPU's ``analysis`` and ``view`` (:func:`analyze` without a plan) as one GPU of the plan
    ``cfg.parallel`` sees them; ``scaling``: the plan view's scaling table too (else empty)."""
    fam = cfg.family
    p = view.prediction
    if p is None:
        raise ConfigError(
            "parallel", "needs device=NAME: a plan's time, traffic and memory are per GPU of a device"
        )
    check_domain(cfg.parallel, p.device)
    rank = fam.parallel(analysis, cfg.parallel, cfg.offload)  # refuses what the code refuses
    runtime = cfg.parallel.runtime  # the scaling's plans run the same code
    table = (
        scaling_frame(
            analysis, p, lambda plan: fam.parallel(analysis, attrs.evolve(plan, runtime=runtime), cfg.offload)
        )
        if scaling
        else pd.DataFrame()
    )
    rank, estimate = estimate_with_methods(cfg, analysis, rank, p.device, p.plan, p.stage_seconds)
    per_gpu = rank.apply(analysis)
    plan_view = device_view(per_gpu, cfg.device, cfg.measured_video_s, cfg.time)
    rp = plan_view.prediction
    if rp is not None and any(r.kind == "dense" for r in estimate.forward_runs):
        # the dense warm-up's own time of every module of the GPU's forward (its layer table)
        dense = per_gpu.prediction(rp.device, attrs.evolve(rp.plan, sparse=None)).modules
        runs = estimate.forward_runs
        kinds = tuple(attrs.evolve(r, modules=dense) if r.kind == "dense" else r for r in runs)
        estimate = attrs.evolve(estimate, forward_runs=kinds)
    planned = PlanView(estimate, analysis.memory, table)
    return per_gpu, attrs.evolve(plan_view, plan=planned, rounded=view.rounded)


def estimate_with_methods(
    cfg: RunConfig,
    analysis: Analysis,
    rank: RankPlan,
    device: DeviceSpec,
    time: TimePlan,
    stage_video_s: dict[str, float],
) -> tuple[RankPlan, ParallelEstimate]:
    """``rank`` and its per-GPU estimate (:func:`plan_estimate` on ``time``, from the one-GPU
    ``stage_video_s``) with ``cfg.methods``' step cache and sparse attention as the plan's code runs
    them (:mod:`ditmeter.analytic.plan_methods`; refused, naming the key, where it cannot)."""
    m, w = cfg.methods, analysis.workload
    check_plan_methods(m, rank.plan, w.pipeline, mixed_timesteps=analysis.model.mixed_timesteps())
    steps = w.num_inference_steps
    one = cache_schedule(m, analysis.forwards_per_video, magcache_model(cfg.model), steps)
    dense_steps = round(m.sparse_dense_steps * steps) if m.sparse is not None else 0
    if one is None and not dense_steps:
        return rank, plan_estimate(analysis, device, time, stage_video_s, rank)
    residual, skipped, schedule = None, ZERO, None
    if one is not None:
        elements, dtype = cfg.family.residual_stream(analysis)
        branches = max(1, w.prompts // rank.plan.cfg)
        rank = with_rank_cache(
            rank,
            elements=elements,
            dtype=dtype,
            method=one.method,
            branches=branches,
            stage=analysis.forward.name,
        )
        residual = residual_time(shard_elements(rank, elements), dtype, device, time)
        stage = analysis.stage_kernels(rank.forward_stage(analysis.forward), time)
        skipped = rank_skipped_forward(rank, device, time, stage, one.method)
        schedule = rank_schedule(one, rank.plan.cfg, w.guidance_forwards)
    est = plan_estimate(analysis, device, time, stage_video_s, rank)
    dense = None
    if dense_steps:
        dense = plan_estimate(analysis, device, attrs.evolve(time, sparse=None), stage_video_s, rank)
    runs = with_rank_runs(
        est,
        schedule=schedule,
        skipped=skipped,
        skipped_blocks=1 if one is not None and SKIPPED_RUNS[one.method] == "first_block" else 0,
        layers=cfg.model.num_layers,
        residual=residual,
        dense=dense,
        dense_forwards=dense_steps * est.forwards_per_gpu_step,
    )
    return rank, runs


def run_id_for(cfg: RunConfig, suffix: str = "") -> str:
    """The run id the user gave, or a fresh unique one."""
    return cfg.run_id or new_run_id(cfg.model.name, cfg.workload.name + suffix)


@contextmanager
def open_run(cfg: RunConfig, command: str, run_id: str) -> Iterator[Path]:
    """Reserve ``run_id`` (before any long work) and yield the artifact folder; published on success."""
    manifest = {
        "command": command,
        "family": cfg.family.name,
        "model": cfg.model.name,
        "workload": cfg.workload.name,
    }
    with staged_run(cfg.output_root, run_id, cfg.family.slug, manifest) as out:
        yield out


def report(cfg: RunConfig) -> ReportResult:
    """Evaluate the analytic model and publish a complete run folder atomically."""
    analysis, view = analyze(cfg)
    modules = modules_frame(analysis, view.prediction)
    run_id = run_id_for(cfg)
    with open_run(cfg, "report", run_id) as out:
        files = write_analysis_files(out, view, modules, run_id)
    return ReportResult(
        run_id,
        analysis_dir(cfg.output_root / run_id, cfg.family.slug),
        analysis,
        view,
        tuple(files),
        modules,
    )
