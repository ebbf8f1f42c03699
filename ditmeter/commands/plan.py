"""``ditmeter plan``: every plan the pipeline can run on exactly ``gpus=N`` GPUs, ranked.

A plan is ``parallel.ulysses`` × ``parallel.ring`` × ``parallel.cfg`` = N with each of
``parallel.dit_fsdp`` and ``parallel.t5_fsdp`` off and on. Each is costed by
:func:`ditmeter.commands.report.analyze`, the path ``report`` takes with the same ``parallel.*``
overrides (one implementation of the timing); a plan the family refuses (its
:class:`ConfigError`, as ``report`` would refuse it) is kept as a row that cannot run, with the
reason. Formatting lives in :mod:`ditmeter.reports.plan_table`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import pandas as pd

from ditmeter.analytic.collective_time import domain_gpus
from ditmeter.analytic.methods import check_under_plan
from ditmeter.analytic.parallel import MAX_GPUS, ParallelPlan, check_domain
from ditmeter.commands.plan_result import PlanOptions, PlanResult
from ditmeter.commands.report import analyze, under_plan
from ditmeter.config import RunConfig, load
from ditmeter.errors import ConfigError

if TYPE_CHECKING:
    from rich.console import Console

    from ditmeter.analytic.analysis import Analysis
    from ditmeter.reports.device_report import DeviceView

#: The command line's own keys (not config keys): ``gpus=N`` and ``plan.*``.
PLAN_KEYS = ("gpus", "plan.memory_limit_gib", "plan.price_per_gpu_hour")


def parallel_plans(gpus: int) -> list[ParallelPlan]:
    """Every ulysses × ring × cfg = ``gpus`` with both FSDP flags off and on (one plan on one
    GPU: FSDP has nothing to shard there and ``report`` costs it as one GPU)."""
    if gpus == 1:
        return [ParallelPlan()]
    out = []
    for cfg in (1, 2):
        for ulysses in range(1, gpus + 1):
            if gpus % (cfg * ulysses):
                continue
            ring = gpus // (cfg * ulysses)
            for dit_fsdp in (False, True):
                for t5_fsdp in (False, True):
                    out.append(ParallelPlan(ulysses, ring, cfg, dit_fsdp, t5_fsdp, gpus))
    return out


def _row(
    cfg: RunConfig, plan: ParallelPlan, options: PlanOptions, one_gpu: tuple[Analysis, DeviceView]
) -> dict[str, Any]:
    """One plan costed as ``report`` costs it (its one-GPU analysis ``one_gpu`` shared by every
    plan), or the reason the family refuses it."""
    keys: dict[str, Any] = {"plan": plan.name.partition(": ")[2] or plan.name, **plan.as_dict()}
    try:
        at = attrs.evolve(cfg, parallel=plan)
        analysis, view = one_gpu if plan.single else under_plan(at, *one_gpu, scaling=False)
    except ConfigError as exc:
        return {**keys, "runs": False, "reason": str(exc)}
    assert view.per_video_s is not None and cfg.device is not None  # a device is required
    est = view.plan.estimate if view.plan is not None else None
    peak = analysis.memory.peak_per_gpu_bytes
    limit = options.memory_limit_gib
    per_video_s = view.per_video_s
    videos = analysis.workload.batch_size  # one pipeline call makes batch_size videos
    return {
        **keys,
        "runs": True,
        "reason": None,
        "per_video_s": per_video_s,
        "speedup": est.speedup if est is not None else 1.0,
        "parallel_efficiency": est.efficiency if est is not None else 1.0,
        "comm_exposed_per_video_s": est.comm_video_s if est is not None else 0.0,
        "peak_per_gpu_bytes": peak,
        "device_memory_bytes": cfg.device.memory_bytes,
        "fits": peak <= cfg.device.memory_bytes,
        "under_limit": limit is None or peak <= limit * 2**30,
        "videos_per_gpu_hour": 3600.0 * videos / per_video_s / plan.gpus,
        "cost_per_video": (
            None
            if options.price_per_gpu_hour is None
            else per_video_s * plan.gpus / 3600.0 * options.price_per_gpu_hour / videos
        ),
    }


#: Columns a frame of refused plans only lacks, and their value there.
_REFUSED_COLUMNS: dict[str, Any] = {
    **dict.fromkeys(("per_video_s", "speedup", "parallel_efficiency", "comm_exposed_per_video_s"), math.nan),
    **dict.fromkeys(("videos_per_gpu_hour", "cost_per_video"), math.nan),
    **dict.fromkeys(("peak_per_gpu_bytes", "device_memory_bytes"), None),
    **dict.fromkeys(("fits", "under_limit"), False),
}


def _ranked(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    for col, value in _REFUSED_COLUMNS.items():
        if col not in frame:
            frame[col] = value
    frame = frame.sort_values(["runs", "per_video_s"], ascending=[False, True], kind="stable")
    return frame.reset_index(drop=True)


def plan(cfg: RunConfig, options: PlanOptions, overrides: Sequence[str] = ()) -> PlanResult:
    """Every plan on ``options.gpus`` GPUs ranked by seconds per video; the best plan on N/2 GPUs
    for the warnings. Nothing is written."""
    if cfg.device is None:
        raise ConfigError("device", "needs device=NAME: a plan's time and memory are per GPU of a device")
    check_domain(ParallelPlan(ulysses=options.gpus, gpus=options.gpus), cfg.device, "gpus")
    if options.gpus > 1:
        check_under_plan(cfg.methods)  # each plan's step cache and sparse attention: report's rule
    one_gpu = analyze(attrs.evolve(cfg, parallel=ParallelPlan()))  # what every plan is set against
    single = _row(cfg, ParallelPlan(), options, one_gpu)
    ranked: dict[int, pd.DataFrame] = {}

    def plans_on(n: int) -> pd.DataFrame:
        if n not in ranked:
            ranked[n] = _ranked([_row(cfg, p, options, one_gpu) for p in parallel_plans(n)])
        return ranked[n]

    frame = plans_on(options.gpus)
    single_s = float(single["per_video_s"])
    fewer, fewer_best = None, None
    if options.gpus > 1:
        # the largest count up to N/2 with a plan that runs (N/2 itself may not be whole nodes)
        for n in range(options.gpus // 2 if options.gpus % 2 == 0 else 1, 0, -1):
            runs_n = [single_s] if n == 1 else plans_on(n).query("runs")["per_video_s"].tolist()
            if runs_n and (n == 1 or options.gpus % n == 0):
                fewer, fewer_best = n, float(min(runs_n))
                break
    runs = frame["runs"].astype(bool)
    frame["rank"] = pd.array([i + 1 if r else None for i, r in enumerate(runs)], dtype="Int64")
    frame["slower_than_fewer_gpus"] = runs & (frame["per_video_s"] > (fewer_best or math.inf))
    return PlanResult(
        frame,
        options,
        cfg,
        single_s,
        fewer,
        fewer_best,
        tuple(overrides),
        replicas_frame(options.gpus, plans_on, domain_gpus(cfg.device)),
    )


def replicas_frame(gpus: int, plans_on: Callable[[int], pd.DataFrame], node_gpus: int) -> pd.DataFrame:
    """Data parallel: the ``gpus`` split into ``gpus / n`` replicas of ``n`` GPUs each (every
    divisor ``n``), each replica running its fastest plan that fits (device and memory limit) on
    its own videos: videos per hour = replicas × 3,600 × batch_size / seconds per video. Most videos per hour
    first; a split whose ``n`` GPUs fit no plan is left out, and so is one whose replicas would
    straddle nodes of ``node_gpus`` (``n`` neither dividing a node nor whole nodes: plans are
    costed within whole nodes)."""
    rows = []
    for n in (d for d in range(1, gpus + 1) if gpus % d == 0):
        if gpus > node_gpus and node_gpus % n and n % node_gpus:
            continue
        plans = plans_on(n)
        ok = plans[
            plans["runs"].astype(bool) & plans["fits"].astype(bool) & plans["under_limit"].astype(bool)
        ]
        if ok.empty:
            continue
        best = ok.iloc[0]
        per_video_s = float(best["per_video_s"])
        rows.append(
            {
                "gpus_per_replica": n,
                "replicas": gpus // n,
                "plan": str(best["plan"]),
                "per_video_s": per_video_s,
                "videos_per_hour": gpus * float(best["videos_per_gpu_hour"]),  # its batch's videos too
            }
        )
    columns = ["gpus_per_replica", "replicas", "plan", "per_video_s", "videos_per_hour"]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.sort_values("videos_per_hour", ascending=False, kind="stable").reset_index(drop=True)


#: What ``plan.*`` numbers may be: a memory limit from a tenth of a GiB to a rack's worth, a price
#: per GPU-hour from a hundredth of a cent to $10,000 (a cost per video then prints as a number).
RANGES = {"plan.memory_limit_gib": (0.1, 100_000.0), "plan.price_per_gpu_hour": (1e-4, 10_000.0)}


def _number(key: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    low, high = RANGES[key]
    if not math.isfinite(value) or not low <= value <= high:
        raise ConfigError(key, f"must be a number from {low:g} to {high:,g}, got {text!r}")
    return value


def parse_options(overrides: Sequence[str]) -> tuple[PlanOptions, list[str]]:
    """``gpus=N`` and ``plan.*`` from the command line, and the config overrides left."""
    mine = {o.partition("=")[0]: o.partition("=")[2] for o in overrides if o.partition("=")[0] in PLAN_KEYS}
    rest = [o for o in overrides if o.partition("=")[0] not in PLAN_KEYS]
    stray = [o for o in rest if "=" not in o]
    if stray:
        raise ConfigError("arguments", f"plan takes KEY=VALUE overrides only; got {stray[0]!r}")
    bad = [o for o in rest if o.partition("=")[0].lstrip("+~").split(".", 1)[0] == "plan"]
    if bad:
        raise ConfigError(bad[0].partition("=")[0], f"not a known key; plan keys: {', '.join(PLAN_KEYS)}")
    text = mine.get("gpus")
    if text is None:
        raise ConfigError("gpus", f"missing; give gpus=N, 1 to {MAX_GPUS}")
    if not text.isdigit() or not 1 <= int(text) <= MAX_GPUS:
        raise ConfigError(
            "gpus",
            f"{text!r} not allowed; 1 to {MAX_GPUS} (one node, a GB200 NVL72's 72, or whole nodes over "
            "the device's network)",
        )
    limit, price = (mine.get(k) for k in PLAN_KEYS[1:])
    options = PlanOptions(
        int(text),
        None if limit is None else _number(PLAN_KEYS[1], limit),
        None if price is None else _number(PLAN_KEYS[2], price),
    )
    return options, rest


def publish(result: PlanResult) -> tuple[Path, tuple[str, ...]]:
    """``plan.parquet`` and ``plan.md`` as a run folder,
    ``<output_root>/<run_id>/static_analysis/plan/``, that appears only when complete."""
    from ditmeter.reports.plan_table import plan_markdown, plan_metadata, plan_schema
    from ditmeter.reports.run_dir import analysis_dir, new_run_id, staged_run
    from ditmeter.reports.tables import write_parquet

    cfg = result.cfg
    run_id = cfg.run_id or new_run_id(cfg.model.name, f"{cfg.workload.name}-{result.options.gpus}-gpus")
    manifest = {
        "command": "plan",
        "model": cfg.model.name,
        "workload": cfg.workload.name,
        "gpus": result.options.gpus,
        "overrides": list(result.overrides),
    }
    with staged_run(cfg.output_root, run_id, "plan", manifest) as out:
        write_parquet(result.frame, plan_schema(), out / "plan.parquet", plan_metadata(result))
        (out / "plan.md").write_text(plan_markdown(result), encoding="utf-8")
    return analysis_dir(cfg.output_root / run_id, "plan"), ("plan.parquet", "plan.md")


def run_plan(overrides: list[str], console: Console) -> int:
    """``ditmeter plan``: rank the plans, print them, publish the run folder; 0. Bad input is a
    :class:`ConfigError` (the CLI's exit 2), raised before anything is written."""
    from ditmeter.reports.console import print_adjustments, print_notes, print_wrote
    from ditmeter.reports.plan_table import plan_lines, plan_table
    from ditmeter.reports.run_dir import check_run_folder
    from ditmeter.reports.table_model import to_rich

    start = time.perf_counter()
    options, rest = parse_options(overrides)
    cfg = load([*rest, f"gpus={options.gpus}"], "plan")
    check_run_folder(cfg.output_root, cfg.run_id)  # refused before the plans are costed, not after
    print_notes(console, cfg.notes)
    print_adjustments(console, cfg.geometry)
    result = plan(cfg, options, overrides)
    console.print(to_rich(plan_table(result)))
    for line in plan_lines(result):
        console.print(line)
    folder, files = publish(result)
    print_wrote(console, folder, files, start)
    return 0
