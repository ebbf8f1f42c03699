"""``timeline.json``: a valid Chrome trace-event file whose slices nest and add up to the prediction."""

from __future__ import annotations

import json
import math
from functools import cache
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from ditmeter.analytic.analysis import Analysis
from ditmeter.analytic.timing import Prediction
from ditmeter.commands.report import analyze
from ditmeter.config import load
from ditmeter.reports.timeline import MAX_DETAIL_LEAVES, TRACKS, timeline_json, write_timeline

TINY = ("workload=w001-tiny", "device=h100-sxm")
CASES = {
    "t2v": ("model=wan2.1-t2v-1.3b", *TINY),
    "i2v": ("model=wan2.1-i2v-14b-480p", *TINY),
    # 3 steps × 1 forward (diffusers skips the unconditional forward at scale 1), roofline times
    "steps": (
        "model=wan2.1-t2v-1.3b",
        *TINY,
        "workload.num_inference_steps=3",
        "pipeline=diffusers",
        "workload.guidance_scale=1",
        "time.mode=roofline",
    ),
    # 4 steps × 2 forwards
    "guided": ("model=wan2.1-t2v-1.3b", *TINY, "workload.num_inference_steps=4"),
    # no DiT selected: no steps, no forwards
    "no_dit": ("model=wan2.1-t2v-1.3b", *TINY, "stages=[text_encoder,vae_decode]"),
}
WITH_DIT = sorted(set(CASES) - {"no_dit"})
EPS_US = 1e-6  # float slack when comparing microsecond times


@cache
def case(name: str) -> tuple[Analysis, Prediction, dict[str, Any]]:
    analysis, view = analyze(load(list(CASES[name]), "report"))
    assert view is not None and view.prediction is not None
    return analysis, view.prediction, timeline_json(analysis, view.prediction)


def slices(doc: dict[str, Any], track: str) -> list[dict[str, Any]]:
    """The complete events of one track, in time order."""
    out = [e for e in doc["traceEvents"] if e["ph"] == "X" and e["tid"] == TRACKS[track]]
    return sorted(out, key=lambda e: e["ts"])


def end(e: dict[str, Any]) -> float:
    return float(e["ts"] + e["dur"])


def inside(inner: dict[str, Any], outer: dict[str, Any]) -> bool:
    return bool(outer["ts"] - EPS_US <= inner["ts"] and end(inner) <= end(outer) + EPS_US)


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_document_follows_the_trace_event_format(name: str) -> None:
    doc = case(name)[2]
    assert isinstance(doc, dict) and isinstance(doc["traceEvents"], list)
    assert doc["displayTimeUnit"] == "ms"
    for e in doc["traceEvents"]:
        assert e["ph"] in {"X", "M"}
        assert isinstance(e["name"], str) and e["name"]
        assert type(e["pid"]) is int and type(e["tid"]) is int
        assert isinstance(e.get("args", {}), dict)
        if e["ph"] == "X":
            assert math.isfinite(e["ts"]) and e["ts"] >= 0
            assert math.isfinite(e["dur"]) and e["dur"] >= 0
    text = json.dumps(doc, allow_nan=False)
    assert json.loads(text) == doc


def test_write_timeline_writes_utf8_json(tmp_path: Path) -> None:
    analysis, prediction, doc = case("i2v")
    path = tmp_path / "timeline.json"
    write_timeline(path, analysis, prediction)
    assert json.loads(path.read_text(encoding="utf-8")) == doc


def test_the_tracks_are_named_and_sorted() -> None:
    analysis, prediction, doc = case("t2v")
    meta = [e for e in doc["traceEvents"] if e["ph"] == "M"]
    names = {e["tid"]: e["args"]["name"] for e in meta if e["name"] == "thread_name"}
    assert names == {1: "stages", 2: "steps", 3: "forwards", 4: "blocks", 5: "kernels"}
    order = {e["tid"]: e["args"]["sort_index"] for e in meta if e["name"] == "thread_sort_index"}
    assert sorted(order, key=order.__getitem__) == [1, 2, 3, 4, 5]
    (process,) = [e for e in meta if e["name"] == "process_name"]
    assert (
        process["pid"] == 0
        and process["args"]["name"] == f"GPU 0 ({prediction.device.display_name}) predicted"
    )
    assert {e["pid"] for e in doc["traceEvents"]} == {0}
    other = doc["otherData"]
    assert other["workload"] == analysis.workload.name and other["pipeline"] == analysis.workload.pipeline
    assert other["time.mode"] == prediction.plan.mode and other["per_video_s"] == prediction.per_video_s


@pytest.mark.parametrize("name", sorted(CASES))
def test_stages_run_back_to_back_and_end_at_the_video_time(name: str) -> None:
    analysis, prediction, doc = case(name)
    phases = slices(doc, "stages")  # the stages and the weight moves between them (offload)
    stages = [e for e in phases if e["name"] != "offload"]
    assert [e["name"] for e in stages] == [s.name for s in analysis.stages]
    moves = [e["dur"] for e in phases if e["name"] == "offload"]
    assert sum(moves) == pytest.approx(prediction.transfer_s * 1e6, rel=1e-9)
    assert phases[0]["ts"] == 0.0
    for a, b in pairwise(phases):
        assert b["ts"] == pytest.approx(end(a), abs=EPS_US)
    last = max(end(e) for e in doc["traceEvents"] if e["ph"] == "X")
    assert last == pytest.approx(prediction.per_video_s * 1e6, rel=1e-6)
    assert end(phases[-1]) == pytest.approx(last, abs=EPS_US)
    for e, stage in zip(stages, analysis.stages, strict=True):
        assert e["dur"] == pytest.approx(prediction.stage_video_s(stage.name, stage.runs_per_video) * 1e6)


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_slice_nests_in_the_levels_above(name: str) -> None:
    doc = case(name)[2]
    stages, runs, blocks = slices(doc, "stages"), slices(doc, "forwards"), slices(doc, "blocks")
    kernels = slices(doc, "kernels")
    assert kernels and blocks
    for k in kernels:
        assert any(inside(k, s) for s in stages)
        assert any(inside(k, r) for r in runs)
        module = k["args"]["module_id"]
        mine = [b for b in blocks if module.startswith(b["args"]["module_id"] + ".")]
        assert not mine or any(inside(k, b) for b in mine)  # its block, in the same run
    for group in (runs, blocks, slices(doc, "steps")):
        assert all(any(inside(e, s) for s in stages) for e in group)
    for track in ("stages", "steps", "forwards", "kernels"):  # no overlap on one track
        ordered = slices(doc, track)
        assert all(b["ts"] >= end(a) - EPS_US for a, b in pairwise(ordered))


@pytest.mark.parametrize("name", WITH_DIT)
def test_one_forward_slice_per_dit_forward(name: str) -> None:
    analysis, _, doc = case(name)
    w, dit = analysis.workload, analysis.forward.name
    forwards = [e for e in slices(doc, "forwards") if e["args"]["stage"] == dit]
    assert len(forwards) == w.num_inference_steps * w.guidance_forwards == analysis.forwards_per_video
    labels = ["cond", "uncond"][: w.guidance_forwards]
    assert [e["args"]["forward"] for e in forwards] == labels * w.num_inference_steps
    assert [e["args"]["step"] for e in forwards] == sorted(
        list(range(w.num_inference_steps)) * w.guidance_forwards
    )
    steps = slices(doc, "steps")
    assert [e["args"]["step"] for e in steps] == list(range(w.num_inference_steps))
    for f in forwards:
        assert inside(f, steps[f["args"]["step"]])
    # detail for the first forward only; the others point at it
    first = forwards[0]
    assert "detail" not in first["args"]
    assert all(e["args"]["detail"] == "see step 0 forward 0" for e in forwards[1:])
    dit_kernels = [k for k in slices(doc, "kernels") if k["args"]["module_id"].startswith(dit + ".")]
    assert dit_kernels and all(inside(k, first) for k in dit_kernels)


def test_without_the_dit_there_are_no_steps() -> None:
    analysis, _, doc = case("no_dit")
    assert analysis.forward.name not in {s.name for s in analysis.stages}
    assert slices(doc, "steps") == []
    assert {e["args"]["stage"] for e in slices(doc, "forwards")} == {s.name for s in analysis.stages}


def test_the_first_forwards_kernels_add_up_to_the_forward_time() -> None:
    analysis, prediction, doc = case("t2v")
    dit = analysis.forward.name
    kernels = [k for k in slices(doc, "kernels") if k["args"]["module_id"].startswith(dit + ".")]
    leaves = [r for r in analysis.forward.rows() if r.kind == "leaf"]
    assert [k["args"]["module_id"] for k in kernels] == [r.module_id for r in leaves]
    total_us = math.fsum(k["dur"] for k in kernels)
    assert total_us == pytest.approx(prediction.per_forward.predicted_s * 1e6, rel=1e-9)
    assert math.fsum(k["args"]["predicted_s"] for k in kernels) == pytest.approx(
        prediction.per_forward.predicted_s, rel=1e-12
    )


def test_kernel_slices_carry_costs_and_kernel_classes() -> None:
    analysis, prediction, doc = case("i2v")
    costs = {r.module_id: r.cost for _, r in analysis.rows()}
    names = set()
    for k in slices(doc, "kernels"):
        a = k["args"]
        cost, timing = costs[a["module_id"]], prediction.modules[a["module_id"]]
        assert (a["tensor_flops"], a["cuda_flops"]) == (cost.tensor_flops, cost.cuda_flops)
        assert a["bytes"] == cost.bytes_read + cost.bytes_written
        assert a["predicted_s"] == timing.predicted_s and a["roofline_s"] == timing.roofline_s
        assert a["bound"] in {"compute", "memory", "overhead"} and isinstance(a["category"], str)
        names.add(k["name"])
    assert {"gemm", "conv", "elementwise", "attention:fa2"} <= names  # the official flash_attention: FA2
    assert names <= {"gemm", "conv", "elementwise"} | {f"attention:{b}" for b in prediction.backends.values()}


def test_small_stages_show_every_run() -> None:
    """The text encoder runs twice (prompt, negative prompt) and is small enough to show both."""
    analysis, _, doc = case("t2v")
    (text,) = [s for s in analysis.stages if s.name == "text_encoder"]
    leaves = sum(1 for r in text.rows() if r.kind == "leaf")
    assert text.runs_per_video == 2 and leaves * 2 < MAX_DETAIL_LEAVES
    kernels = [k for k in slices(doc, "kernels") if k["args"]["module_id"].startswith("text_encoder.")]
    assert len(kernels) == 2 * leaves
    runs = [e for e in slices(doc, "forwards") if e["args"]["stage"] == "text_encoder"]
    assert [e["args"]["run"] for e in runs] == [0, 1]
    assert all(sum(inside(k, r) for k in kernels) == leaves for r in runs)


def test_a_big_video_stays_small(tmp_path: Path) -> None:
    """14B at 720p × 81 frames, 50 steps × 2 forwards: detail for one forward keeps it under 5 MB."""
    analysis, view = analyze(load(["model=wan2.1-t2v-14b", "workload=720p-81f", "device=h100-sxm"], "report"))
    assert view is not None and view.prediction is not None
    path = tmp_path / "timeline.json"
    write_timeline(path, analysis, view.prediction)
    assert path.stat().st_size < 5_000_000
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert len(slices(doc, "forwards")) >= 100
    assert len(slices(doc, "kernels")) < 3 * MAX_DETAIL_LEAVES


def test_perfetto_reads_every_slice(tmp_path: Path) -> None:
    """Perfetto's trace processor (optional; not installed offline) imports every slice."""
    tp_module = pytest.importorskip("perfetto.trace_processor")
    analysis, prediction, doc = case("t2v")
    path = tmp_path / "timeline.json"
    write_timeline(path, analysis, prediction)
    try:
        tp = tp_module.TraceProcessor(trace=str(path))
    except Exception as err:  # the shell binary is fetched on first use
        pytest.skip(f"trace processor unavailable: {err}")
    try:
        rows = list(tp.query("select count(*) as n from slice"))
        assert rows[0].n == sum(1 for e in doc["traceEvents"] if e["ph"] == "X")
    finally:
        tp.close()
