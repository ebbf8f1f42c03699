"""``timeline.json``: one predicted video on one GPU as a Chrome trace-event file.

Opens in ui.perfetto.dev and chrome://tracing. Every slice is a complete event
(``"ph": "X"``) with ``ts``/``dur`` in microseconds on process 0 (the GPU); the
threads are tracks, one per level of nesting, all at the same times:

====  ==========  =====================================================================
tid   track       one slice per
====  ==========  =====================================================================
1     stages      selected stage (text encoder, image encoder, VAE encode, DiT, VAE decode),
                  spanning every run of it, in execution order; and ``offload``: each weight move
                  between host and GPU (``offload.model``) before the stage it serves
2     steps       denoising step (the forward stage only)
3     forwards    run of a stage: each DiT forward (``cond``/``uncond`` with guidance), each
                  text-encoder run (prompt, negative prompt), each run of the other stages
4     blocks      child of a repeated module (``dit.blocks.7``, ``text_encoder.blocks.3``)
5     kernels     leaf module, named by its kernel class (``gemm``, ``conv``, ``elementwise``,
                  ``attention:<backend>``); its args carry the FLOPs, bytes and times
====  ==========  =====================================================================

Time runs one way: stages one after another, a stage's runs one after another,
inside a run the leaves in execution order, each lasting its predicted time
(:mod:`ditmeter.analytic.timing`: no overlap between kernels). A run lasts the sum
of its leaves (cumulative time, so children always fit inside their parents); the
last stage ends at ``Prediction.per_video_s`` up to float rounding.

Detail is bounded so the file stays small (a 14B DiT at 50 steps × 2 forwards
would be 100k+ kernel slices): block and kernel slices are written for the first
forward of the first step only; a stage other than the forward stage gets them
for every run when its leaves × runs stay under :data:`MAX_DETAIL_LEAVES`, else
for its first run only. Every other run is one slice on the forwards track whose
``detail`` arg names the run that shows its inside (all runs of a stage are
identical in the analytic model).

Units in args: seconds (``*_s``), FLOPs (2 per multiply-add; ``tensor_flops`` on
tensor cores, ``cuda_flops`` element-wise), bytes (read + written, fused ideal).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from ditmeter.analytic.analysis import Analysis, Stage
from ditmeter.analytic.cost import Cost
from ditmeter.analytic.timing import OFFLOAD_PHASE, Prediction, Timing
from ditmeter.analytic.tree import ModuleRow
from ditmeter.reports.tables import kernel_name

#: The process every slice sits on: the one GPU the video runs on.
GPU_PID = 0
#: Track name → thread id (also its sort index: stages on top, kernels at the bottom).
TRACKS: dict[str, int] = {"stages": 1, "steps": 2, "forwards": 3, "blocks": 4, "kernels": 5}
#: What each track holds, for ``otherData`` (see the module docstring).
TRACK_MEANINGS: dict[str, str] = {
    "stages": "one slice per selected stage, spanning all its runs",
    "steps": "one slice per denoising step of the forward stage",
    "forwards": "one slice per run of a stage (each DiT forward, each text-encoder run)",
    "blocks": "one slice per child of a repeated module (transformer blocks), detailed runs only",
    "kernels": "one slice per leaf module named by kernel class, detailed runs only",
}
#: A stage other than the forward stage shows every run in detail below this many leaf slices.
MAX_DETAIL_LEAVES = 2000
US_PER_S = 1e6


@attrs.frozen
class Placed:
    """One module of a run laid out in time: offsets in seconds from the run's start."""

    row: ModuleRow
    start_s: float
    end_s: float


def layout(rows: Sequence[ModuleRow], times: dict[str, Timing]) -> list[Placed]:
    """Every module of one run (``rows`` in walk order, parents first) at cumulative offsets:
    leaves back to back, each lasting its ``predicted_s``; a container from its first leaf's
    start to its last leaf's end (so it holds its children exactly)."""
    out: list[Placed] = []
    open_: list[tuple[int, ModuleRow, float]] = []  # containers not yet closed: (depth, row, start)
    now = 0.0

    def close(depth: int) -> None:
        while open_ and open_[-1][0] >= depth:
            _, row, start = open_.pop()
            out.append(Placed(row, start, now))

    for r in rows:
        close(r.depth)
        if r.kind == "leaf":
            end = now + times[r.module_id].predicted_s
            out.append(Placed(r, now, end))
            now = end
        else:
            open_.append((r.depth, r, now))
    close(0)
    return out


def run_length_s(placed: Sequence[Placed]) -> float:
    """Seconds of one run: the end of its last leaf (0 for a run without leaves)."""
    return max((p.end_s for p in placed if p.row.kind == "leaf"), default=0.0)


def _slice(name: str, track: str, start_s: float, end_s: float, args: dict[str, Any]) -> dict[str, Any]:
    """A complete event on ``track`` from ``start_s`` to ``end_s`` (seconds from the video's start)."""
    ts = start_s * US_PER_S
    return {
        "name": name,
        "cat": track,
        "ph": "X",
        "pid": GPU_PID,
        "tid": TRACKS[track],
        "ts": ts,
        "dur": max(end_s * US_PER_S - ts, 0.0),
        "args": args,
    }


def _cost_args(cost: Cost, timing: Timing) -> dict[str, Any]:
    """Counts of one run of a module (FLOPs, bytes) and its times (seconds)."""
    return {
        "tensor_flops": cost.tensor_flops,
        "cuda_flops": cost.cuda_flops,
        "bytes": cost.bytes_read + cost.bytes_written,
        "predicted_s": timing.predicted_s,
        "roofline_s": timing.roofline_s,
        "bound": timing.bound,
    }


def metadata_events(device_name: str) -> list[dict[str, Any]]:
    """The GPU's process name and each track's name and sort index."""
    out: list[dict[str, Any]] = [
        {
            "name": "process_name",
            "ph": "M",
            "pid": GPU_PID,
            "tid": 0,
            "args": {"name": f"GPU 0 ({device_name}) predicted"},
        }
    ]
    for track, tid in TRACKS.items():
        out.append({"name": "thread_name", "ph": "M", "pid": GPU_PID, "tid": tid, "args": {"name": track}})
        out.append(
            {"name": "thread_sort_index", "ph": "M", "pid": GPU_PID, "tid": tid, "args": {"sort_index": tid}}
        )
    return out


def detail_events(
    placed: Sequence[Placed], run_start_s: float, stage: str, prediction: Prediction
) -> list[dict[str, Any]]:
    """Block and kernel slices of one run starting at ``run_start_s`` (seconds)."""
    repeated = {p.row.module_id for p in placed if p.row.kind == "repeated"}
    out = []
    for p in placed:
        r, timing = p.row, prediction.modules[p.row.module_id]
        start, end = run_start_s + p.start_s, run_start_s + p.end_s
        if r.kind == "leaf":
            args = {"module_id": r.module_id, "category": r.category, "rule": r.rule}
            name = kernel_name(r.rule, stage, prediction) or "kernel"
            out.append(_slice(name, "kernels", start, end, args | _cost_args(r.cost, timing)))
        elif r.parent_id in repeated:
            out.append(
                _slice(
                    r.module_id,
                    "blocks",
                    start,
                    end,
                    {"module_id": r.module_id, **_cost_args(r.cost, timing)},
                )
            )
    out.sort(key=lambda e: (e["tid"], e["ts"]))
    return out


def forward_names(guidance_forwards: int) -> list[str]:
    """Names of the forwards of one step: ``cond``/``uncond`` with guidance, else ``cond``."""
    if guidance_forwards <= 2:
        return ["cond", "uncond"][:guidance_forwards]
    return [str(i) for i in range(guidance_forwards)]


def forward_stage_events(
    stage: Stage, start_s: float, run_s: float, guidance_forwards: int
) -> list[dict[str, Any]]:
    """Step slices and forward slices of the forward stage (``runs_per_video`` = steps × forwards)."""
    per_step = guidance_forwards if stage.runs_per_video % guidance_forwards == 0 else 1
    labels = forward_names(per_step)
    steps, out = stage.runs_per_video // per_step, []
    for s in range(steps):
        step_start = start_s + s * per_step * run_s
        out.append(
            _slice(
                f"step {s}",
                "steps",
                step_start,
                step_start + per_step * run_s,
                {"step": s, "forwards": per_step},
            )
        )
        for f, label in enumerate(labels):
            begin = step_start + f * run_s
            args: dict[str, Any] = {"stage": stage.name, "step": s, "forward": label, "run": s * per_step + f}
            if s or f:
                args["detail"] = "see step 0 forward 0"
            out.append(_slice(f"forward {label}", "forwards", begin, begin + run_s, args))
    return out


def run_events(stage: Stage, start_s: float, run_s: float, detailed: int) -> list[dict[str, Any]]:
    """One slice per run of a stage other than the forward stage; runs from ``detailed`` on say
    where their detail is."""
    out = []
    for i in range(stage.runs_per_video):
        args: dict[str, Any] = {"stage": stage.name, "run": i}
        if i >= detailed:
            args["detail"] = "see run 0"
        begin = start_s + i * run_s
        out.append(_slice(f"{stage.name} run", "forwards", begin, begin + run_s, args))
    return out


def stage_events(
    analysis: Analysis, prediction: Prediction, stage: Stage, start_s: float
) -> tuple[list[dict[str, Any]], float]:
    """Every slice of one stage starting at ``start_s``, and the seconds the stage lasts."""
    rows = stage.rows()
    placed = layout(rows, prediction.modules)
    run_s = run_length_s(placed)
    leaves = sum(1 for r in rows if r.kind == "leaf")
    is_forward = stage.name == analysis.forward.name
    if is_forward:
        detailed = 1
        runs = forward_stage_events(stage, start_s, run_s, analysis.workload.guidance_forwards)
    else:
        detailed = stage.runs_per_video if leaves * stage.runs_per_video < MAX_DETAIL_LEAVES else 1
        runs = run_events(stage, start_s, run_s, detailed)
    length = run_s * stage.runs_per_video
    args = {
        "stage": stage.name,
        "one_run": stage.run,
        "runs_per_video": stage.runs_per_video,
        "dtype": stage.dtype,
        "attention": prediction.backends.get(stage.name),
        "video_s": length,
        "counts_and_times_per": "run",
        "detail": "every run" if detailed == stage.runs_per_video else "first run only",
    }
    out = [
        _slice(
            stage.name,
            "stages",
            start_s,
            start_s + length,
            args | _cost_args(stage.per_run, prediction.modules[stage.name]),
        )
    ]
    out += runs
    for i in range(min(detailed, stage.runs_per_video)):
        out += detail_events(placed, start_s + i * run_s, stage.name, prediction)
    return out, length


def transfer_events(
    prediction: Prediction, before: Sequence[str], start_s: float
) -> tuple[list[dict[str, Any]], float]:
    """The ``offload`` slices (stages track) of the weight moves made before the stages ``before``,
    one after another from ``start_s``, and the seconds they last."""
    out, now = [], start_s
    for t, seconds in prediction.transfers:
        if t.before in before:
            args = {"component": t.component, "direction": t.direction, "bytes": t.bytes, "why": t.why}
            out.append(_slice(OFFLOAD_PHASE, "stages", now, now + seconds, args | {"video_s": seconds}))
            now += seconds
    return out, now - start_s


def timeline_events(analysis: Analysis, prediction: Prediction) -> list[dict[str, Any]]:
    """The trace events of one video: metadata first, then each stage's slices, stage by stage,
    with the weight moves (``offload`` slices) made before each; moves before a stage the run does
    not select go before the next selected one, or at the end."""
    out = metadata_events(prediction.device.display_name)
    now = 0.0
    order = [p.stage for p in analysis.memory.phases]
    selected = [s.name for s in analysis.stages]
    pending: list[str] = []
    for name in order:
        pending.append(name)
        if name not in selected:
            continue
        moves, took = transfer_events(prediction, pending, now)
        out += moves
        now += took
        pending = []
        stage = next(s for s in analysis.stages if s.name == name)
        events, length = stage_events(analysis, prediction, stage, now)
        out += events
        now += length
    moves, _ = transfer_events(prediction, [*pending, ""], now)
    return out + moves


def timeline_json(analysis: Analysis, prediction: Prediction) -> dict[str, Any]:
    """The whole ``timeline.json`` document (JSON Object Format of the trace-event spec)."""
    w = analysis.workload
    other = {
        "model": str(getattr(analysis.model, "name", analysis.family)),
        "family": analysis.family,
        "workload": w.name,
        "device": prediction.device.name,
        "device_name": prediction.device.display_name,
        "pipeline": w.pipeline,
        "num_inference_steps": w.num_inference_steps,
        "guidance_forwards": w.guidance_forwards,
        "per_video_s": prediction.per_video_s,
        "time.mode": prediction.plan.mode,
        "units": "ts/dur in microseconds; args: *_s seconds, *_flops FLOPs (2 per multiply-add), bytes",
        "detail": "blocks and kernels for step 0 forward 0 of the forward stage and for the runs of "
        f"other stages (every run when leaves x runs < {MAX_DETAIL_LEAVES}, else run 0); other runs "
        "are one slice each",
        **{f"track.{tid} {name}": TRACK_MEANINGS[name] for name, tid in TRACKS.items()},
    }
    return {"traceEvents": timeline_events(analysis, prediction), "displayTimeUnit": "ms", "otherData": other}


def write_timeline(path: Path, analysis: Analysis, prediction: Prediction) -> None:
    """Write ``timeline.json`` (compact UTF-8 JSON; NaN or infinity refused)."""
    text = json.dumps(timeline_json(analysis, prediction), allow_nan=False, separators=(",", ":"))
    Path(path).write_text(text + "\n", encoding="utf-8")
