"""``ditmeter sweep``: analytic predictions over a grid of models, workloads, devices and time plans.

Four steps, each in the module that knows its concept:

* the grid and each point's configs (:mod:`ditmeter.commands.sweep_grid`): every ``key=[a,b,c]``
  or Hydra sweep is an axis, the points are the product of the axes; one analysis per distinct
  analysis-side combination, one device and time plan per distinct device-side one;
* the times (:mod:`ditmeter.analytic.batch_timing`): every analysis timed on every device and plan
  at once, checked against ``tree_time`` on the first point of each stage, kernel table and plan;
* the table (:mod:`ditmeter.reports.sweep_table`): one row per point (its ``sweep_schema``), the
  axis values, the video's costs and memory peak, its predicted times;
* the run folder (:func:`publish`): ``sweep.parquet`` and the plots.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import numpy as np
import pandas as pd
import pyarrow as pa

from ditmeter.analytic.batch_timing import DevicePlan, Evaluated, Timer
from ditmeter.analytic.methods import (
    UNDER_PLANS,
    check_under_plan,
    methods_plan,
    needs_device,
    quantized_weights,
)
from ditmeter.analytic.parallel import ParallelEstimate, ParallelPlan, RankPlan, check_domain
from ditmeter.analytic.timing import OFFLOAD_PHASE
from ditmeter.analytic.tree import shared_builds
from ditmeter.commands.progress import Progress, Steps, no_progress
from ditmeter.commands.report import estimate_with_methods, with_methods
from ditmeter.commands.sweep_grid import (
    DEVICE_SIDE,
    RUN_KEYS,
    Grid,
    at_point,
    configs,
    device_plans,
    grid,
    top_key,
)
from ditmeter.config import RunConfig, check_used, load
from ditmeter.errors import ConfigError
from ditmeter.reports.device_report import device_view
from ditmeter.reports.run_dir import check_run_folder
from ditmeter.reports.sweep_table import ONE_GPU_COLUMNS, sweep_frame, sweep_metadata

if TYPE_CHECKING:
    from rich.console import Console

    from ditmeter.analytic.analysis import Analysis


@attrs.frozen
class SweepResult:
    frame: pd.DataFrame  # one row per point, in grid order (the last axis fastest)
    schema: pa.Schema
    grid: Grid
    overrides: tuple[str, ...]
    output_root: Path
    run_id: str | None
    analyses: int  # distinct analyses built
    device_plans: int  # distinct devices and plans
    seconds: dict[str, float]  # wall time of each step

    @property
    def total_s(self) -> float:
        return sum(self.seconds.values())


def sweep(
    overrides: Sequence[str], progress: Progress | None = None, check_output: bool = False
) -> SweepResult:
    """Every point of the grid ``overrides`` describe (see the module docstring): one analysis per
    distinct analysis-side combination, timed on every device and plan. Nothing is written;
    ``check_output`` (the result is to be published): an ``output_root`` or ``run_id``
    :func:`publish` would refuse is refused before any point is loaded."""
    steps = Steps(progress or no_progress)
    with steps("grid"):
        g = grid(overrides)
        if check_output:
            check_run_folder(*_run_folder(g))
        side = [a for a in g.axes if a.device_side], [a for a in g.axes if not a.device_side]
        fixed = (
            [o for o in g.fixed if top_key(o) in DEVICE_SIDE],
            [o for o in g.fixed if top_key(o) not in DEVICE_SIDE],
        )
    with steps("devices"):
        plans = device_plans(fixed[0], side[0])
    with steps("analyses"), shared_builds():  # equal stages of the points built once
        points, cfgs = configs(fixed[1], side[1])
        check_used(overrides, cfgs)  # a key that needs another on, asked of the whole grid
        _check_domains(cfgs, plans)  # before the long work: a GPU count no device of the grid holds
        analyses = []
        for point, cfg in zip(points, cfgs, strict=True):
            try:
                analysis = cfg.family.analyze(cfg.model, cfg.workload, cfg.stages, cfg.offload)
                analysis.check_bounds()
            except ConfigError as exc:
                raise at_point(point, exc) from exc
            analyses.append(analysis)
    with steps("times"):
        timer = Timer(plans)
        evaluated = []
        for point, cfg, a in zip(points, cfgs, analyses, strict=True):
            try:
                evaluated.append(per_gpu(with_point_methods(timer.evaluate(a), cfg, plans), cfg, plans))
            except ConfigError as exc:
                raise at_point(point, exc) from exc
    with steps("table"):
        gpus = [c.gpus or c.parallel.gpus for c in cfgs]
        frame, schema = sweep_frame(g.axes, evaluated, plans, gpus, g.constants)
    first = cfgs[0]
    return SweepResult(
        frame,
        schema,
        g,
        tuple(overrides),
        first.output_root,
        first.run_id,
        len(analyses),
        len(plans),
        dict(steps.seconds),
    )


def _run_folder(g: Grid) -> tuple[Path, str | None]:
    """The sweep's ``output_root`` and ``run_id`` (one value each, never an axis), as ``load``
    reads them: loaded alone, before the points."""
    cfg = load([o for o in g.fixed if top_key(o) in RUN_KEYS], "sweep")
    return cfg.output_root, cfg.run_id


def with_point_methods(e: Evaluated, cfg: RunConfig, plans: Sequence[DevicePlan]) -> Evaluated:
    """``e`` under the ``methods.*`` that change how the video's forwards and kernels are timed (a
    step cache, CUDA graphs, sparse attention): each device and plan costed as ``report`` costs it
    (:func:`~ditmeter.commands.report.with_methods`), point by point; ``methods.cfg_free`` and
    ``methods.cfg_batch`` are already in the analysis."""
    m = cfg.methods
    if (cfg.gpus or 1) > 1 or not cfg.parallel.single:  # what report's plans take but CUDA graphs
        check_under_plan(m, allowed=tuple(k for k in UNDER_PLANS if k != "cuda_graphs"))
    if needs_device(m) is None:
        return e
    a, analysis = e.analysis, e.analysis
    times = {k: v.copy() for k, v in e.times.items()}
    peaks = np.full(len(plans), a.memory.peak_per_gpu_bytes, dtype=np.int64)
    for i, dp in enumerate(plans):
        plan = methods_plan(dp.plan, m, cfg.model.num_layers)
        base = quantized_weights(a, plan.gemm_dtype)  # as analyze does
        at = attrs.evolve(cfg, device=dp.device, time=plan)
        view = with_methods(at, device_view(base, dp.device, None, plan))
        p, analysis = view.prediction, view.analysis
        peaks[i] = analysis.memory.peak_per_gpu_bytes
        assert p is not None
        for stage, seconds in p.stage_seconds.items():
            times[f"{stage}_per_video_s"][i] = seconds
        parts = {"compute_s": 0.0, "memory_s": 0.0, "overhead_s": 0.0}
        for stage, runs in p.stage_runs:
            kinds = p.forward_runs if stage == p.forward_id and p.forward_runs else ()
            for f in parts:
                parts[f] += (
                    sum(getattr(r.timing, f) * r.count for r in kinds)
                    if kinds
                    else getattr(p.modules[stage], f) * runs
                )
        times["per_video_s"][i] = p.per_video_s
        times["roofline_per_video_s"][i] = p.roofline_video_s
        times["compute_per_video_s"][i] = parts["compute_s"]
        times["memory_per_video_s"][i] = parts["memory_s"]
        times["overhead_per_video_s"][i] = parts["overhead_s"]
        times["per_forward_s"][i] = p.per_forward.predicted_s
        times["roofline_per_forward_s"][i] = p.per_forward.roofline_s
        times["per_step_s"][i] = p.per_step_s
    return attrs.evolve(e, analysis=analysis, times=times, peaks=peaks)


def per_gpu(e: Evaluated, cfg: RunConfig, plans: Sequence[DevicePlan]) -> Evaluated:
    """``e`` under ``cfg``'s ``parallel.*`` plan, or with ``gpus=N`` each device's fastest plan on
    N GPUs (:func:`best_plans`): the video, forward and step times and the memory of one GPU of the
    plan on every device, with its speedup, efficiency and exposed communication
    (:func:`ditmeter.reports.parallel_report.plan_estimate`, as ``report`` computes them)."""
    if cfg.gpus is not None and cfg.gpus > 1:
        return best_plans(e, cfg, plans, cfg.gpus)
    if cfg.parallel.single:
        return e
    a = e.analysis
    for dp in plans:
        check_domain(cfg.parallel, dp.device)
    ranks: dict[str | None, tuple[Analysis, RankPlan]] = {}  # by gemm_dtype: its quantized weights
    ests = []
    for i, dp in enumerate(plans):  # a step cache and sparse attention as report costs them
        time = methods_plan(dp.plan, cfg.methods, cfg.model.num_layers)
        if time.gemm_dtype not in ranks:
            q = quantized_weights(a, time.gemm_dtype)  # as analyze does
            ranks[time.gemm_dtype] = q, cfg.family.parallel(q, cfg.parallel, cfg.offload)
        q, rank = ranks[time.gemm_dtype]
        ranked, est = estimate_with_methods(cfg, q, rank, dp.device, time, _one_gpu_stages(e, i))
        ests.append(est)
    analysis = attrs.evolve(a, memory=ranked.memory, footprint=ranked.footprint)
    name = cfg.parallel.name.partition(": ")[2]
    peaks = np.array([x.peak_per_gpu_bytes for x in ests], dtype=np.int64)
    times = _plan_times(e, ests)
    return attrs.evolve(e, analysis=analysis, times=times, peaks=peaks, plan_names=(name,) * len(plans))


def _check_domains(cfgs: Sequence[RunConfig], plans: Sequence[DevicePlan]) -> None:
    """Every GPU count of the grid (``gpus``, ``parallel.*``) on every device of it, as the points
    would check it one by one (:func:`~ditmeter.analytic.parallel.check_domain`)."""
    counts = {c.gpus for c in cfgs if c.gpus is not None and c.gpus > 1}
    layouts = {c.parallel for c in cfgs if c.parallel.gpus > 1}
    for dp in plans:
        for n in sorted(counts):
            check_domain(ParallelPlan(ulysses=n, gpus=n), dp.device, "gpus")
        for layout in layouts:
            check_domain(layout, dp.device)


def best_plans(e: Evaluated, cfg: RunConfig, plans: Sequence[DevicePlan], gpus: int) -> Evaluated:
    """``e`` with each device running its fastest plan on ``gpus`` GPUs among every plan
    ``ditmeter plan`` enumerates (:func:`~ditmeter.commands.plan.parallel_plans`): the fastest whose
    peak fits the device, else the fastest; plans the family refuses, and those whose code cannot
    run the point's step cache or sparse attention, are skipped, as ``plan`` lists them as unable
    to run. Each plan is costed with the methods as ``report`` costs it
    (:func:`~ditmeter.commands.report.estimate_with_methods`). The plan per device is in
    ``plan_names``, its peak in ``peaks``."""
    from ditmeter.commands.plan import parallel_plans

    candidates = parallel_plans(gpus)
    refused: list[str] = []
    ranks: dict[str | None, tuple[Analysis, list[RankPlan]]] = {}  # by gemm_dtype: its weights

    def ranked(gemm_dtype: str | None) -> tuple[Analysis, list[RankPlan]]:
        if gemm_dtype not in ranks:
            q, out = quantized_weights(e.analysis, gemm_dtype), []  # as analyze does
            for p in candidates:
                try:
                    out.append(cfg.family.parallel(q, p, cfg.offload))
                except ConfigError as exc:
                    refused.append(exc.message)
            ranks[gemm_dtype] = q, out
        return ranks[gemm_dtype]

    ests = []
    for i, dp in enumerate(plans):
        check_domain(ParallelPlan(ulysses=gpus, gpus=gpus), dp.device, "gpus")
        time = methods_plan(dp.plan, cfg.methods, cfg.model.num_layers)
        q, rs = ranked(time.gemm_dtype)
        stages = _one_gpu_stages(e, i)
        options, why = [], list(refused)  # the family's refusals, then this device's
        for rank in rs:
            try:
                options.append(estimate_with_methods(cfg, q, rank, dp.device, time, stages)[1])
            except ConfigError as exc:  # e.g. cfg 2 with one forward per step, sparse with ring
                why.append(exc.message)
        if not options:
            raise ConfigError("gpus", f"no plan on {gpus} GPUs runs on {dp.device.name}: {why[0]}")
        capacity = dp.device.memory_bytes
        ests.append(min(options, key=lambda x: (x.peak_per_gpu_bytes > capacity, x.per_video_s)))
    return attrs.evolve(
        e,
        times=_plan_times(e, ests),
        peaks=np.array([x.peak_per_gpu_bytes for x in ests], dtype=np.int64),
        plan_names=tuple(x.plan.name.partition(": ")[2] for x in ests),
    )


def _one_gpu_stages(e: Evaluated, i: int) -> dict[str, float]:
    """Each stage's seconds per video on device ``i`` on one GPU, the weight transfers with them
    (the plan's replace them)."""
    stages = [s.name for s in e.analysis.stages]
    return {s: float(e.times[f"{s}_per_video_s"][i]) for s in (*stages, OFFLOAD_PHASE)}


def _plan_times(e: Evaluated, ests: Sequence[ParallelEstimate]) -> dict[str, np.ndarray]:
    """``e``'s time columns with those a plan changes taken from ``ests`` (one per device)."""
    forward = e.analysis.forward.name
    times = dict(e.times)
    columns: dict[str, Callable[[ParallelEstimate], float]] = {
        "per_video_s": lambda x: x.per_video_s,
        "per_forward_s": lambda x: x.forward_s,
        "per_step_s": lambda x: x.step_s,
        "speedup": lambda x: x.speedup,
        "parallel_efficiency": lambda x: x.efficiency,
        "comm_exposed_per_video_s": lambda x: x.comm_video_s,
        f"{OFFLOAD_PHASE}_per_video_s": lambda x: x.stage_video_s.get(OFFLOAD_PHASE, 0.0),
    }
    if forward in {s.name for s in e.analysis.stages}:
        columns[f"{forward}_per_video_s"] = lambda x: x.stage_video_s[forward]
    for name, of in columns.items():
        times[name] = np.array([of(x) for x in ests])
    for name in ONE_GPU_COLUMNS:  # one GPU's split of the whole video: not the plan's, so null
        times[name] = np.full(len(ests), np.nan)
    return times


def write_sweep(result: SweepResult, out_dir: Path) -> tuple[str, ...]:
    """``sweep.parquet`` and the plots into ``out_dir`` (a staged run folder); the file names."""
    from ditmeter.reports.sweep_plots import write_plots
    from ditmeter.reports.tables import write_parquet

    g = result.grid
    meta = sweep_metadata(result.overrides, g.axes, g.fixed, len(result.frame))
    write_parquet(result.frame, result.schema, out_dir / "sweep.parquet", meta)
    return ("sweep.parquet", *write_plots(result.frame, [a.key for a in result.grid.axes], out_dir))


def publish(result: SweepResult) -> tuple[Path, tuple[str, ...]]:
    """Write the sweep as a run folder, ``<output_root>/<run_id>/static_analysis/sweep/``, that
    appears only when complete; the folder and its files."""
    from ditmeter.reports.run_dir import analysis_dir, new_run_id, staged_run

    run_id = result.run_id or new_run_id("sweep", f"{len(result.frame)}-points")
    manifest = {"command": "sweep", "points": len(result.frame), "overrides": list(result.overrides)}
    with staged_run(result.output_root, run_id, "sweep", manifest) as out:
        files = write_sweep(result, out)
    return analysis_dir(result.output_root / run_id, "sweep"), files


def run_sweep(overrides: list[str], console: Console, progress: Progress | None = None) -> int:
    """``ditmeter sweep``: evaluate, print the rate and the fastest and slowest points, publish the
    run folder; 0. A bad key, value or point is a :class:`ConfigError` (the CLI's exit 2)."""
    from ditmeter.reports.console import print_wrote
    from ditmeter.reports.sweep_table import ranked_table
    from ditmeter.reports.table_model import to_rich

    start = time.perf_counter()
    result = sweep(overrides, progress, check_output=True)
    n, took = len(result.frame), result.total_s
    console.print(
        f"{n:,} points in {took:.2f} s ({n / took:,.0f} points/s): {result.analyses:,} analyses × "
        f"{result.device_plans:,} devices and plans"
    )
    plans = any(top_key(a.key) in ("parallel", "gpus") for a in result.grid.axes)
    changed = result.frame["adjusted"].dropna()
    if len(changed):
        console.print(
            f"adjusted workload at {len(changed):,} of {n:,} points (column `adjusted`), e.g. "
            f"{changed.iloc[0]}: the swept value is as given, the time is the adjusted workload's",
            style="yellow",
        )
    console.print(to_rich(ranked_table(result.frame, [a.key for a in result.grid.axes], plans)))
    folder, files = publish(result)
    print_wrote(console, folder, files, start)
    return 0
