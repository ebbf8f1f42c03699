"""``ditmeter ingest trace=PATH``: a torch.profiler trace of the user's own run, joined to the
module tree and set against the prediction.

The trace (``.json`` or ``.json.gz``, recorded with ``with_stack=True``; see
``docs/ingest.md``) is read into top-level ops, their module calls and the GPU
work they launched (:mod:`ditmeter.tracer.ingest`). Each stage's runs are found
by its root module's class (the family's :class:`~ditmeter.models.family.IngestStage`);
the stages whose real module ``trace`` checks are mapped to the analytic leaves
with the same name tables and node rules (ops named without overloads; the
family says which: every stage under diffusers, the DiT under the official
code), the others are measured whole. Measured time is GPU time where the trace has GPU events, else
the ops' CPU time; per module it is the mean over the runs found (per forward
for the DiT), beside the analytic FLOPs and bytes and, with ``device=``, the
prediction. The run folder holds what ``report`` writes with the measured
columns filled, plus ``ops.parquet``, ``kernels.parquet`` and ``ingest.png``.
"""

from __future__ import annotations

import json
import reprlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import attrs
import pandas as pd

from ditmeter.analytic.analysis import Analysis, Stage, qualify
from ditmeter.analytic.tree import ModuleRow
from ditmeter.commands.progress import Progress, Steps, no_progress
from ditmeter.commands.report import analyze, open_run, run_id_for
from ditmeter.compare.join import with_times
from ditmeter.compare.mapping import NodeInfo, assign
from ditmeter.compare.names import NameTable
from ditmeter.config import RunConfig
from ditmeter.errors import ConfigError
from ditmeter.files import TRACE_LIMIT_BYTES, regular_file
from ditmeter.models.family import IngestStage, ModuleTable
from ditmeter.reports.device_report import DeviceView, stage_times
from ditmeter.reports.ingest_report import (
    INGEST_FILES,
    KERNELS_SCHEMA,
    OPS_SCHEMA,
    FlopsCheck,
    IngestSummary,
    StageRuns,
    ingest_png,
)
from ditmeter.reports.run_dir import analysis_dir, check_run_folder
from ditmeter.reports.run_files import write_analysis_files
from ditmeter.reports.tables import modules_frame, table_metadata, write_parquet
from ditmeter.tracer.chrome_trace import TraceFormatError
from ditmeter.tracer.ingest import Place, Root, TraceEvents, read_trace, resolve_calls

#: The overload the mapper gives a profiler op (``aten::mul`` → ``aten.mul.any``); the node rules
#: are matched at the same level (:meth:`~ditmeter.compare.mapping.NodeRules.any_overload`).
ANY_OVERLOAD = "any"
#: A communication kernel (NCCL's all-gather, all-to-all, send/recv …), by its name.
COMM_MARKERS = ("nccl",)


@attrs.frozen
class IngestResult:
    run_id: str
    analysis_dir: Path
    analysis: Analysis
    view: DeviceView
    summary: IngestSummary
    modules: pd.DataFrame
    ops: pd.DataFrame
    files: tuple[str, ...]


def _aten(name: str) -> str:
    """The mapper's form of a profiler op name: ``aten::mul`` → ``aten.mul.any``."""
    return f"{name.replace('::', '.')}.{ANY_OVERLOAD}"


def _read(cfg: RunConfig, stages: Sequence[IngestStage]) -> TraceEvents:
    path = cfg.ingest_trace
    if path is None:
        raise ConfigError(
            "trace", "missing: give trace=PATH, a torch.profiler Chrome trace (.json or .json.gz)"
        )
    regular_file(path, "trace", TRACE_LIMIT_BYTES)  # a device, FIFO or folder is not "no such file"
    frames = {s.frame: s.classes[0] for s in stages if s.frame is not None}
    try:
        events = read_trace(path, frames)
    except TraceFormatError as exc:
        raise ConfigError("trace", str(exc)) from None
    if not events.has_stack:
        raise ConfigError(
            "trace",
            f"{path} has no Python events: record it with torch.profiler.profile(with_stack=True) so the "
            "ops can be placed in modules (see docs/ingest.md)",
        )
    return events


def _as_recorded(cfg: RunConfig, run: dict[str, Any] | None) -> RunConfig:
    """``cfg`` at the blocks a ``ditmeter profile`` trace says its forward ran (``run``; None for
    another trace: ``cfg`` as it is). Refused where the profile ran another model, workload or
    pipeline: its forward's shapes are not the ones this command would cost."""
    if run is None:
        return cfg
    w = cfg.workload
    ran = run.get("modules")
    for key, theirs, ours, hint in (
        (
            "pipeline",
            ran,
            w.pipeline,
            f"its forward ran {ran}' modules: profile and ingest with pipeline={ran}",
        ),
        ("pipeline", run.get("pipeline"), w.pipeline, f"profile with pipeline={w.pipeline} to ingest it"),
        ("model", run.get("model"), cfg.model.name, "give the same"),
        ("workload", run.get("workload"), w.name, "give the same"),
        (
            "workload",
            run.get("latent_shape"),
            list(cfg.geometry.latent_shape),
            "(latent frames, height, width)",
        ),
    ):
        if theirs != ours:
            raise ConfigError(
                key, f"the trace's profile run used {reprlib.repr(theirs)}, this command {ours!r}; {hint}"
            )
    layers, most = run.get("num_layers"), cfg.model.num_layers
    if type(layers) is not int or not 1 <= layers <= most:
        raise ConfigError(
            "trace",
            f"the trace's profile run ran {reprlib.repr(layers)} blocks, this command's model has {most}",
        )
    return attrs.evolve(cfg, model=attrs.evolve(cast(Any, cfg.model), num_layers=layers))


def _place_ops(events: TraceEvents, places: Sequence[Place]) -> list[Place]:
    outside = Place(None, None)
    return [places[o.call] if o.call is not None else outside for o in events.ops]


def _mapped(
    stage: IngestStage, ops: pd.DataFrame, rows: Sequence[ModuleRow], modules: ModuleTable
) -> pd.DataFrame:
    """The stage's op rows with their analytic leaf, run by run (``after`` restarts each run).

    NB: a profiler trace has no data flow; the op just before a cast stands in for the cast's
    producer (``self.norm2(x).type_as(x)``: the norm's last op), as the mapper's cast step needs.
    """
    assert stage.names is not None and stage.rules is not None
    rules = list(stage.rules.any_overload(ANY_OVERLOAD))
    names: NameTable = stage.names
    cols: dict[str, list[Any]] = {
        k: [] for k in ("module_id", "leaf_id", "rule", "category", "mapping", "status")
    }
    index: list[Any] = []
    for _, run in ops.groupby("run", sort=True):
        ids = [str(i) for i in run.index]
        infos = [
            NodeInfo(
                ids[n],
                _aten(r.op),
                r.module_path,
                modules.get(r.module_path, ("", ()))[0],
                (ids[n - 1],) if n else (),
                tuple(r.functions),
            )
            for n, r in enumerate(run.itertuples())
        ]
        for a in assign(infos, rows, names, rules, lambda m: qualify(stage.stage, m)):
            for k in cols:
                cols[k].append(getattr(a, k))
        index += list(run.index)
    return pd.DataFrame(cols, index=index)


def _own_modules(s: IngestStage, stage: Stage) -> ModuleTable:
    """The modules of ``s``'s real module that the stage may run: all but those with parameters
    whose analytic id the stage's tree lacks (the decode's module holds the encoder too: its
    ``quant_conv`` must not take the call of ``post_quant_conv``; a parameterless ``Identity``
    shortcut stays, costing nothing)."""
    assert s.modules is not None and s.names is not None
    ids = {r.module_id for r in stage.rows()}
    out = {}
    for path, (cls, params) in s.modules().items():
        cid = s.names(path)
        if cid is None or not params or qualify(stage.name, cid) in ids:
            out[path] = (cls, params)
    return out


def _ops_frame(
    cfg: RunConfig, analysis: Analysis, events: TraceEvents, stages: Sequence[IngestStage], step: Any
) -> tuple[pd.DataFrame, dict[str, int], int, dict[str, float]]:
    """One row per top-level op: where it ran (stage, run, module), its leaf and its time; the
    stages' root calls found, the calls no module matched and each stage's wall seconds."""
    with step("resolve"):
        seen = {c.cls for c in events.calls}  # list the modules of the stages the trace has only
        by_name = {st.name: st for st in analysis.stages}
        tables = {
            s.stage: _own_modules(s, by_name[s.stage])
            for s in stages
            if s.modules is not None and seen & set(s.classes) and s.stage in by_name
        }
        roots = [Root(s.stage, s.classes, tables.get(s.stage), s.transparent) for s in stages]
        places = resolve_calls(events.calls, roots, events.ops)
    unresolved = sum(1 for p in places if p.stage is not None and not p.resolved)
    wall: dict[str, float] = {}
    for n, (c, p) in enumerate(zip(events.calls, places, strict=True)):
        if p.stage is not None and p.run == n:
            wall[p.stage] = wall.get(p.stage, 0.0) + (c.end_us - c.ts_us) * 1e-6
    on_gpu = bool(events.device)
    placed = _place_ops(events, places)
    frame = pd.DataFrame(
        {
            "stage": [p.stage for p in placed],
            "run": [p.run for p in placed],
            "op": [o.name for o in events.ops],
            "module_path": [p.path if p.stage is not None else None for p in placed],
            "functions": [o.functions for o in events.ops],
            "flops": pd.array([o.flops for o in events.ops], dtype="Int64"),
            "cpu_time_s": [o.dur_us * 1e-6 for o in events.ops],
            "gpu_time_s": [o.gpu_us * 1e-6 for o in events.ops],
            "kernel_count": [len(o.kernels) for o in events.ops],
            "kernels": [json.dumps(list(dict.fromkeys(o.kernels))) for o in events.ops],
            "thread": [o.thread for o in events.ops],
            "ts_us": [o.ts_us for o in events.ops],
        }
    )
    frame["time_s"] = frame["gpu_time_s"] if on_gpu else frame["cpu_time_s"]
    runs = {s: int(frame.loc[frame["stage"] == s, "run"].nunique()) for s in frame["stage"].dropna().unique()}
    with step("place"):
        mapped = [pd.DataFrame(index=frame.index[frame["stage"].isna()])]
        for s in stages:
            own = frame[frame["stage"] == s.stage]
            if s.stage in tables and s.stage in by_name:
                mapped.append(_mapped(s, own, by_name[s.stage].rows(), tables[s.stage]))
            else:
                whole = pd.DataFrame(index=own.index)
                whole["module_id"], whole["status"], whole["mapping"] = s.stage, "whole", "stage"
                mapped.append(whole)
        columns = ["module_id", "leaf_id", "rule", "category", "mapping", "status"]
        frame = frame.join(pd.concat(mapped).reindex(index=frame.index, columns=columns))
    frame["status"] = frame["status"].fillna("outside")
    return frame, runs, unresolved, wall


def _calls_per_run(analysis: Analysis, stages: Sequence[IngestStage]) -> dict[str, int]:
    """Root calls per run of each stage: the family's, else the stage's own (the VAE's chunks)."""
    given = {s.stage: s.calls_per_run for s in stages if s.calls_per_run is not None}
    return {st.name: given.get(st.name, st.calls) for st in analysis.every_stage}


def _per_run(frame: pd.DataFrame, calls: dict[str, int], runs: dict[str, int]) -> pd.DataFrame:
    """The ops of the analysed stages with ``measured_time_s`` = their time / the stage's runs
    found (runs = root calls / calls per run)."""
    own = frame[frame["stage"].isin(list(calls))].copy()
    per = {s: runs.get(s, 0) / n for s, n in calls.items()}
    own["measured_time_s"] = own["time_s"] / own["stage"].map(per)
    return own


def _absent_missing(modules: pd.DataFrame, runs: dict[str, int]) -> pd.DataFrame:
    """``modules`` with the measured time of the stages the trace does not hold missing (null), not
    0: a stage not recorded was not measured (a module of a stage found that ran no op took 0)."""
    found = [stage for stage, n in runs.items() if n]
    out = modules.copy()
    out.loc[~out["stage"].isin(found), "measured_time_s"] = float("nan")
    return out


def _busy_us(events: TraceEvents) -> tuple[float, float]:
    """The union of the GPU events' intervals (over every GPU of the trace) and the window from the
    first one's start to the last one's end (µs)."""
    spans = sorted((d.ts_us, d.ts_us + d.dur_us) for d in events.device)
    busy, end = 0.0, float("-inf")
    for start, stop in spans:
        if stop > end:
            busy += stop - max(start, end)
            end = stop
    return busy, end - spans[0][0] if spans else 0.0


def _is_comm(name: str) -> bool:
    return any(m in name.lower() for m in COMM_MARKERS)


def kernels_frame(events: TraceEvents, frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (stage, module, kernel name): launches and GPU seconds over the whole trace."""
    owner = frame["leaf_id"].where(frame["leaf_id"].notna(), frame["module_id"])
    rows = pd.DataFrame(
        {
            "stage": [frame["stage"].iat[d.op] if d.op is not None else None for d in events.device],
            "module_id": [owner.iat[d.op] if d.op is not None else None for d in events.device],
            "kernel": [d.name for d in events.device],
            "cat": [d.cat for d in events.device],
            "gpu_time_s": [d.dur_us * 1e-6 for d in events.device],
        }
    )
    out = (
        rows.groupby(["stage", "module_id", "kernel", "cat"], dropna=False, sort=False)
        .agg(count=("kernel", "size"), gpu_time_s=("gpu_time_s", "sum"))
        .reset_index()
    )
    out["communication"] = [_is_comm(k) for k in out["kernel"]]
    return out.sort_values("gpu_time_s", ascending=False, kind="stable").reset_index(drop=True)


def _flops_check(stage: Stage, frame: pd.DataFrame, calls: int, per_run: int) -> FlopsCheck | None:
    """A mapped stage's FLOPs in the trace (torch's formulas on the recorded shapes) against its
    analytic tensor FLOPs over the ``calls`` of its root found, ``per_run`` a run (exact integers:
    trace × calls per run = analytic per run × calls), and each leaf's; None when no op of the
    stage has a formula (a trace recorded without shapes).

    NB: a stage measured whole gets no check: the root its pipeline's trace shows need not hold
    all of its work (the official VAE runs its ``conv2`` outside the ``Decoder3d`` it calls)."""
    own = frame[frame["stage"] == stage.name]
    counted = own["flops"].dropna()
    if not calls or counted.empty:
        return None
    total = int(counted.sum())
    runs = calls // per_run if calls % per_run == 0 else None  # whole runs, for the leaves
    differ: list[str] = []
    leaves = 0
    if runs is not None:
        seen = own[own["leaf_id"].notna()].groupby("leaf_id")["flops"].sum(min_count=1).dropna()
        analytic = {r.module_id: r.cost.tensor_flops * runs for r in stage.rows() if r.kind == "leaf"}
        names = sorted(set(seen.index) | {k for k, v in analytic.items() if v})
        differ = [leaf for leaf in names if int(seen.get(leaf, 0)) != analytic.get(leaf, 0)]
        leaves = len(names)
    whole = stage.per_run.tensor_flops
    return FlopsCheck(
        trace_per_run=total * per_run / calls,
        analytic_per_run=whole,
        equal=total * per_run == whole * calls,
        leaves=leaves,
        differing=tuple(differ),
    )


def _summary(
    cfg: RunConfig,
    analysis: Analysis,
    view: DeviceView,
    events: TraceEvents,
    frame: pd.DataFrame,
    runs: dict[str, int],
    unresolved: int,
    wall: dict[str, float],
    calls: dict[str, int],
) -> IngestSummary:
    predicted = {t["stage"]: t["per_run_s"] for t in stage_times(view)}
    by_name = {st.name: st for st in analysis.every_stage}
    stages = []
    for stage, n in runs.items():
        found = n / calls.get(stage, 1)
        total = float(frame.loc[frame["stage"] == stage, "time_s"].sum())
        mapped = bool((frame.loc[frame["stage"] == stage, "status"] != "whole").any())
        check = _flops_check(by_name[stage], frame, n, calls[stage]) if mapped and stage in by_name else None
        stages.append(
            StageRuns(stage, n, found, total / found, wall[stage] / found, predicted.get(stage), check)
        )
    forward = analysis.forward.name
    fwd = next((s for s in stages if s.stage == forward), None)
    on_gpu = bool(events.device)
    busy, window = _busy_us(events)
    comm = sum(d.dur_us for d in events.device if _is_comm(d.name))
    unmatched = frame[frame["status"] == "unmatched"]
    unlinked = sum(d.dur_us for d in events.device if d.op is None)
    return IngestSummary(
        trace=str(cfg.ingest_trace),
        device_names=events.device_names,
        time_source="gpu" if on_gpu else "cpu",
        span_s=events.span_us * 1e-6,
        ops=len(events.ops),
        device_events=len(events.device),
        forwards=runs.get(forward, 0),
        forwards_per_step=cfg.workload.guidance_forwards,
        stages=tuple(stages),
        measured_forward_s=fwd.measured_per_run_s if fwd is not None else None,
        predicted_forward_s=view.per_forward_s if view.prediction is not None else None,
        gpu_busy_s=busy * 1e-6 if on_gpu else None,
        gpu_window_s=window * 1e-6 if on_gpu else None,
        comm_s=comm * 1e-6 if on_gpu else None,
        outside_s=float(frame.loc[frame["stage"].isna(), "time_s"].sum()),
        unlinked_gpu_s=unlinked * 1e-6 if on_gpu else None,
        unresolved_calls=unresolved,
        unmatched_ops=len(unmatched),
        unmatched_s=float(unmatched["time_s"].sum()),
        flops=fwd.flops if fwd is not None else None,
    )


def ingest(cfg: RunConfig, progress: Progress = no_progress) -> IngestResult:
    """Read, map and publish one ingested trace (module docstring)."""
    check_run_folder(cfg.output_root, cfg.run_id)  # refused before the trace is read (minutes), not after
    step = Steps(progress)
    stages = cfg.family.ingest_stages(cfg.model, cfg.workload, cfg.geometry)
    with step("read"):
        events = _read(cfg, stages)
    if events.run is not None:  # a profile's own trace: its blocks, checked to be this command's run
        cfg = _as_recorded(cfg, events.run)
        stages = cfg.family.ingest_stages(cfg.model, cfg.workload, cfg.geometry)
    analysis, view = analyze(cfg)
    frame, runs, unresolved, wall = _ops_frame(cfg, analysis, events, stages, step)
    if not runs and any(c.cls in {k for s in stages for k in s.classes} for c in events.calls):
        raise ConfigError(
            "trace",
            "the model's module calls are in the trace but none of its ops sits inside one: the Python "
            "events are on another thread than the ops (record the run on one thread with with_stack=True)",
        )
    if not runs:
        classes = ", ".join(c for s in stages for c in s.classes)
        raise ConfigError(
            "trace",
            f"no module of {cfg.model.name}'s {cfg.workload.pipeline} pipeline in the trace (looked for "
            f"{classes}); is pipeline= the code that ran?",
        )
    rows = [r for st in analysis.stages for r in st.rows()]
    calls = _calls_per_run(analysis, stages)
    modules = _absent_missing(
        with_times(modules_frame(analysis, view.prediction), _per_run(frame, calls, runs), rows), runs
    )
    summary = _summary(cfg, analysis, view, events, frame, runs, unresolved, wall, calls)
    run_id = run_id_for(cfg, "_ingest")
    with open_run(cfg, "ingest", run_id) as out, step("write"):
        section = summary.as_json()
        meta = {"ingest": json.dumps(section)}
        ops = frame.drop(columns=["functions"])
        write_parquet(ops, OPS_SCHEMA, out / "ops.parquet", table_metadata(analysis, "ops", **meta))
        kernels = kernels_frame(events, frame)
        write_parquet(
            kernels, KERNELS_SCHEMA, out / "kernels.parquet", table_metadata(analysis, "kernels", **meta)
        )
        title = f"{analysis.model.name} × {analysis.workload.name}: ingested trace"
        ingest_png(modules, analysis.forward.name, title, out / "ingest.png")
        files = write_analysis_files(out, view, modules, run_id, meta=meta, ingest=summary)
    return IngestResult(
        run_id,
        analysis_dir(cfg.output_root / run_id, cfg.family.slug),
        analysis,
        view,
        summary,
        modules,
        frame,
        (*files, *INGEST_FILES),
    )
