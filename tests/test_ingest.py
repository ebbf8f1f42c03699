"""``ditmeter ingest``: real torch.profiler traces of the diffusers DiT and of the official
``WanModel`` run on this CPU, and a hand-made CUDA trace, joined to the module tree.

The references nobody here wrote: the profiler's own in-memory event tree (which module object
ran each op, and for how long), torch's FLOP formulas applied to the shapes the trace recorded,
and hand arithmetic on the hand-made trace.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import attrs
import pandas as pd
import pyarrow.parquet as pq
import pytest
from ingest_runs import (
    CUDA_ARGS,
    Run,
    cpu_op,
    diffusers_run,
    gzipped,
    hand_cuda_trace,
    official_run,
    pipeline_run,
)

from ditmeter.cli import main

H100 = "device=h100-sxm"


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(argv))
    return status, out.getvalue(), err.getvalue()


def _folder(root: Path, rid: str) -> Path:
    (folder,) = (root / rid / "static_analysis").glob("*")
    return folder


def _ingest(root: Path, run: Run, rid: str, *extra: str, trace: Path | None = None) -> Path:
    status, out, err = _run(
        "ingest",
        f"trace={trace or run.trace}",
        *run.overrides,
        *extra,
        f"run_id={rid}",
        f"output_root={root}",
    )
    assert status == 0, err + out
    return _folder(root, rid)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two forwards (one step) of each pipeline's DiT with 2 blocks, ingested."""
    folder = tmp_path_factory.mktemp("traces")
    root = tmp_path_factory.mktemp("runs")
    real = {"diffusers": diffusers_run(folder), "official": official_run(folder)}
    out: dict[str, Any] = {"root": root, **real}
    for name, run in real.items():
        out[f"{name}_dir"] = _ingest(root, run, name)
    return out


@pytest.mark.parametrize("pipeline", ["diffusers", "official"])
def test_every_op_sits_in_the_module_the_profiler_itself_saw(runs: dict[str, Any], pipeline: str) -> None:
    """The module path of every top-level op, rebuilt from the Chrome trace's ``nn.Module`` events,
    equals the module object the profiler recorded in memory (matched by ``id``)."""
    run: Run = runs[pipeline]
    ops = pd.read_parquet(runs[f"{pipeline}_dir"] / "ops.parquet")
    ours = [(o, None if pd.isna(p) else p) for o, p in zip(ops["op"], ops["module_path"], strict=True)]
    assert len(ours) == len(run.ops) > 300
    assert ours == run.ops
    # the official WanModel calls time_embedding before text_embedding, both Sequential, in the
    # other order than it registers them: resolved by what their calls hold, not by order alone
    if pipeline == "official":
        assert {"time_embedding.0", "text_embedding.0", "time_projection.1"} <= set(ops["module_path"])


@pytest.mark.parametrize("pipeline", ["diffusers", "official"])
def test_cpu_time_per_module_equals_the_profilers(runs: dict[str, Any], pipeline: str) -> None:
    run: Run = runs[pipeline]
    ops = pd.read_parquet(runs[f"{pipeline}_dir"] / "ops.parquet")
    ours = ops.groupby("module_path")["cpu_time_s"].sum()
    assert set(ours.index) == set(run.op_ns)
    for path, ns in run.op_ns.items():
        assert ours[path] == pytest.approx(ns * 1e-9, rel=1e-3, abs=2e-6), path


@pytest.mark.parametrize("pipeline", ["diffusers", "official"])
def test_the_traces_flops_equal_the_analytic_leaf_by_leaf(runs: dict[str, Any], pipeline: str) -> None:
    """torch's FLOP formulas on the shapes the run recorded give every DiT leaf the analytic
    tensor FLOPs: the ops went to the right leaves and the run is the workload."""
    folder = runs[f"{pipeline}_dir"]
    check = json.loads((folder / "report.json").read_text())["ingest"]["flops"]
    assert check["differing"] == [] and check["leaves"] > 20
    assert check["trace_per_run"] == check["analytic_per_run"] > 0
    # hand arithmetic for one leaf: the FFN's first matmul, 2 × tokens × dim × ffn_dim per forward
    ops = pd.read_parquet(folder / "ops.parquet")
    ffn0 = int(ops.loc[ops["leaf_id"] == "dit.blocks.1.ffn.0", "flops"].sum()) // 2
    dims = {"diffusers": (2 * 16 * 16, 1536, 8960), "official": (1 * 8 * 8, 3072, 14336)}[pipeline]
    tokens, dim, ffn = dims
    assert ffn0 == 2 * tokens * dim * ffn


def test_a_run_of_another_workload_fails_the_flops_check(runs: dict[str, Any]) -> None:
    """The same trace read as a 9-frame run: the leaves' FLOPs no longer match."""
    folder = _ingest(runs["root"], runs["diffusers"], "frames9", "workload.num_frames=9")
    check = json.loads((folder / "report.json").read_text())["ingest"]["flops"]
    assert "dit.blocks.0.ffn.0" in check["differing"]


def test_a_wrong_node_rule_fails_the_flops_check(
    runs: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Self-attention's core costed as cross-attention's: both attention leaves differ."""
    from ditmeter.compare.mapping import NodeRule, NodeRules
    from ditmeter.models.wan21.family import Wan21

    real = Wan21.ingest_stages

    def wrong(self: Any, *args: Any) -> Any:
        stages = list(real(self, *args))
        for n, s in enumerate(stages):
            if s.rules is not None:
                rules = [
                    attrs.evolve(r, target=r"blocks.\1.cross_attn.attn_core")
                    if r.name == "self_attn.core"
                    else r
                    for r in s.rules
                ]
                stages[n] = attrs.evolve(s, rules=NodeRules(s.rules.reference, tuple[NodeRule, ...](rules)))
        return tuple(stages)

    monkeypatch.setattr(Wan21, "ingest_stages", wrong)
    folder = _ingest(runs["root"], runs["diffusers"], "wrong-rule")
    differing = json.loads((folder / "report.json").read_text())["ingest"]["flops"]["differing"]
    assert {"dit.blocks.0.self_attn.attn_core", "dit.blocks.0.cross_attn.attn_core"} <= set(differing)


def test_resolving_by_call_order_alone_would_misplace_the_official_embeddings(
    runs: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the children's classes, the first-called Sequential (time_embedding) takes the first
    registered one (text_embedding): the profiler's own tree and the FLOPs both say so."""
    import ditmeter.tracer.ingest as reader

    monkeypatch.setattr(reader, "_fits", lambda *_: True)
    folder = _ingest(runs["root"], runs["official"], "order-only")
    ops = pd.read_parquet(folder / "ops.parquet")
    ours = [(o, None if pd.isna(p) else p) for o, p in zip(ops["op"], ops["module_path"], strict=True)]
    assert ours != runs["official"].ops
    assert json.loads((folder / "report.json").read_text())["ingest"]["flops"]["differing"]


def test_a_whole_small_video_text_encoder_dit_and_vae(tmp_path: Path) -> None:
    """Every stage of a small diffusers video in one trace, each mapped leaf by leaf: the module
    paths are the profiler's, every leaf's FLOPs the analytic ones. The VAE's run is the
    ``AutoencoderKLWan._decode`` frame (the pipeline calls ``vae.decode``): its ``post_quant_conv``,
    the decoder's per-frame calls and the final clamp are one run."""
    run = pipeline_run(tmp_path)
    folder = _ingest(tmp_path / "runs", run, "video")
    ops = pd.read_parquet(folder / "ops.parquet")
    ours = [(o, None if pd.isna(p) else p) for o, p in zip(ops["op"], ops["module_path"], strict=True)]
    assert ours == run.ops and len(ours) > 300
    assert set(ops["stage"].dropna()) == {"text_encoder", "dit", "vae_decode"}
    data = json.loads((folder / "report.json").read_text())["ingest"]
    stages = {s["stage"]: s for s in data["stages"]}
    assert list(stages) == ["text_encoder", "dit", "vae_decode"]
    assert [stages[s]["runs"] for s in stages] == [1, 2, 1]
    for stage in stages.values():
        assert stage["flops"]["equal"] and stage["flops"]["differing"] == [] and stage["flops"]["leaves"] > 5
    modules = pd.read_parquet(folder / "modules.parquet").set_index("module_id")
    for stage in stages:
        spent = ops.loc[ops["stage"] == stage, "time_s"].sum() / stages[stage]["runs"]
        assert modules.loc[stage, "measured_time_s"] == pytest.approx(spent, rel=1e-9)
    assert modules.loc["text_encoder.blocks.1.attn.q", "measured_time_s"] > 0
    assert modules.loc["vae_decode.post_quant_conv", "measured_time_s"] > 0
    assert modules.loc["vae_decode.decoder.conv_in", "measured_time_s"] > 0
    assert data["outside_s"] == 0 and data["unresolved_calls"] == 0


def test_forwards_and_steps_found(runs: dict[str, Any]) -> None:
    data = json.loads((runs["diffusers_dir"] / "report.json").read_text())["ingest"]
    assert (data["forwards"], data["forwards_per_step"], data["steps"]) == (2, 2, 1)
    assert data["time_source"] == "cpu" and data["gpu_busy_s"] is None and data["comm_s"] is None
    (dit,) = data["stages"]
    assert dit["stage"] == "dit" and dit["runs"] == 2 and dit["root_calls"] == 2
    assert 0 < dit["measured_per_run_s"] <= dit["wall_per_run_s"]
    folder = _ingest(runs["root"], runs["diffusers"], "no-cfg", "workload.guidance_scale=1")
    data = json.loads((folder / "report.json").read_text())["ingest"]
    assert (data["forwards"], data["forwards_per_step"], data["steps"]) == (2, 1, 2)


def test_measured_time_per_module_is_the_mean_per_forward(runs: dict[str, Any]) -> None:
    folder = runs["diffusers_dir"]
    modules = pd.read_parquet(folder / "modules.parquet").set_index("module_id")
    ops = pd.read_parquet(folder / "ops.parquet")
    dit = ops[ops["stage"] == "dit"]
    assert modules.loc["dit", "measured_time_s"] == pytest.approx(dit["time_s"].sum() / 2, rel=1e-9)
    q = dit.loc[dit["leaf_id"] == "dit.blocks.0.self_attn.q", "time_s"].sum() / 2
    assert modules.loc["dit.blocks.0.self_attn.q", "measured_time_s"] == pytest.approx(q, rel=1e-9)
    assert (ops["status"] != "unmatched").mean() > 0.99


def test_a_gzipped_trace_reads_the_same(runs: dict[str, Any]) -> None:
    folder = _ingest(runs["root"], runs["diffusers"], "gz", trace=gzipped(runs["diffusers"]))
    a = pd.read_parquet(runs["diffusers_dir"] / "ops.parquet")
    b = pd.read_parquet(folder / "ops.parquet")
    pd.testing.assert_frame_equal(a, b)


def test_the_run_folder_holds_its_files_and_they_are_documented(runs: dict[str, Any]) -> None:
    folder = runs["official_dir"]
    for name in (
        "report.json",
        "summary.md",
        "modules.parquet",
        "ops.parquet",
        "kernels.parquet",
        "ingest.png",
    ):
        assert (folder / name).is_file(), name
    summary = (folder / "summary.md").read_text()
    assert "## Measured run (ingested trace)" in summary and "per leaf: equal" in summary
    docs = (Path(__file__).parents[1] / "docs" / "artifacts.md").read_text()
    for table in ("ops.parquet", "kernels.parquet"):
        schema = pq.read_schema(folder / table)
        assert schema.metadata[b"ditmeter.table"] == table.removesuffix(".parquet").encode()
        for name in schema.names:
            assert f"`{name}`" in docs, (table, name)
    for key in json.loads((folder / "report.json").read_text())["ingest"]:
        assert f"`{key}`" in docs, key


# ---- a hand-made CUDA trace: kernels, launches, correlation ids, NCCL, idle time ------------------


@pytest.fixture(scope="module")
def cuda_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cuda")
    trace = hand_cuda_trace(root / "cuda.json")
    status, out, err = _run("ingest", f"trace={trace}", *CUDA_ARGS, H100, "run_id=i", f"output_root={root}")
    assert status == 0, err + out
    assert "GPU busy 0.22 ms of the 0.35 ms" in out and "idle 0.13 ms (37.1%)" in out
    return root


def test_kernels_join_their_ops_and_modules_by_hand(cuda_run: Path) -> None:
    folder = _folder(cuda_run, "i")
    ops = pd.read_parquet(folder / "ops.parquet").set_index("op")
    assert ops.loc["aten::linear", "gpu_time_s"] == pytest.approx(60e-6)  # its nested addmm's kernel
    assert ops.loc["aten::linear", "leaf_id"] == "dit.blocks.0.self_attn.q"
    assert ops.loc["aten::scaled_dot_product_attention", "gpu_time_s"] == pytest.approx(100e-6)
    assert ops.loc["aten::scaled_dot_product_attention", "leaf_id"] == "dit.blocks.0.self_attn.attn_core"
    assert ops.loc["aten::mul", "leaf_id"] == "dit.blocks.0.self_attn.rope"
    assert ops.loc["nccl:all_gather", "status"] == "outside" and pd.isna(ops.loc["nccl:all_gather", "stage"])
    assert json.loads(ops.loc["aten::linear", "kernels"]) == ["sm90_xmma_gemm_bf16"]
    modules = pd.read_parquet(folder / "modules.parquet").set_index("module_id")
    assert modules.loc["dit.blocks.0.self_attn", "measured_time_s"] == pytest.approx(170e-6)
    assert modules.loc["dit", "measured_time_s"] == pytest.approx(170e-6)
    kernels = pd.read_parquet(folder / "kernels.parquet").set_index("kernel")
    assert kernels.loc["ncclDevKernel_AllGather_RING_LL", "communication"]
    assert not kernels.loc["flash_fwd_kernel", "communication"]
    assert kernels.loc["flash_fwd_kernel", "module_id"] == "dit.blocks.0.self_attn.attn_core"


def test_gpu_idle_and_communication_by_hand(cuda_run: Path) -> None:
    data = json.loads((_folder(cuda_run, "i") / "report.json").read_text())["ingest"]
    assert data["time_source"] == "gpu" and data["device_names"] == ["NVIDIA H100 80GB HBM3"]
    assert data["gpu_busy_s"] == pytest.approx(220e-6) and data["gpu_window_s"] == pytest.approx(350e-6)
    assert data["gpu_idle_s"] == pytest.approx(130e-6) and data["comm_s"] == pytest.approx(50e-6)
    assert data["outside_s"] == pytest.approx(50e-6)
    assert (data["forwards"], data["steps"]) == (1, 0.5)
    assert data["predicted_forward_s"] > 0 and data["predicted_ratio"] == pytest.approx(
        data["predicted_forward_s"] / 170e-6
    )


def test_predicted_against_ingested_in_diff(cuda_run: Path) -> None:
    status, _, err = _run("report", *CUDA_ARGS, H100, "run_id=p", f"output_root={cuda_run}")
    assert status == 0, err
    assert _run("diff", "p", "i", f"output_root={cuda_run}", "run_id=d")[0] == 0
    frame = pd.read_parquet(_folder(cuda_run, "d") / "diff.parquet")
    row = frame[
        (frame["level"] == "module") & (frame["key"] == "dit") & (frame["metric"] == "measured_time_s")
    ]
    assert len(row) == 1 and pd.isna(row["a"].iat[0]) and row["b"].iat[0] == pytest.approx(170e-6)
    predicted = frame[
        (frame["key"] == "dit") & (frame["metric"] == "predicted_s") & (frame["level"] == "module")
    ]
    assert predicted["ratio"].iat[0] == pytest.approx(1.0)


def _no_stack_trace(path: Path) -> Path:
    path.write_text(json.dumps({"traceEvents": [cpu_op("aten::mm", 0, 5, 1)]}))
    return path


@pytest.mark.parametrize(
    ("make", "extra", "field"),
    [
        (None, (), "trace"),
        (lambda p: p / "missing.json", (), "trace"),
        (lambda p: (p / "bad.json").write_text("{not json") and p / "bad.json", (), "trace"),
        (lambda p: (p / "list.json").write_text("[1, 2]") and p / "list.json", (), "trace"),
        (lambda p: _no_stack_trace(p / "n.json"), (), "trace"),
        (
            lambda p: hand_cuda_trace(p / "t.json"),
            ("pipeline=official",),
            "trace",
        ),  # diffusers run as official
        (lambda p: hand_cuda_trace(p / "t.json"), ("parallel.ulysses=2",), "parallel"),
        (lambda p: hand_cuda_trace(p / "t.json"), ("stages=[dit]",), "stages"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    tmp_path: Path, make: Any, extra: tuple[str, ...], field: str
) -> None:
    root = tmp_path / "runs"
    trace = [] if make is None else [f"trace={make(tmp_path)}"]
    args = [a for a in CUDA_ARGS if not any(a.startswith(e.split("=")[0] + "=") for e in extra)]
    status, _, err = _run("ingest", *trace, *args, *extra, f"output_root={root}")
    assert status == 2 and err.startswith(f"ditmeter: error: {field}") and err.count("\n") == 1, err
    assert not root.exists() or not any(root.iterdir())


def test_a_trace_of_stages_measured_whole_only(tmp_path: Path) -> None:
    """Only the official VAE decoder's call (no DiT): measured whole, one call a run of a 1-frame
    decode, no FLOPs claim."""
    events = [
        {
            "ph": "X",
            "cat": "python_function",
            "name": "nn.Module: Decoder3d_0",
            "ts": 0,
            "dur": 100,
            "pid": 1,
            "tid": 1,
            "args": {},
        },
        cpu_op("aten::conv3d", 10, 50, 1),
    ]
    trace = tmp_path / "vae.json"
    trace.write_text(json.dumps({"traceEvents": events}))
    model = ("model=wan2.1-t2v-1.3b", "workload=w001-tiny", "workload.num_frames=1")
    status, out, err = _run("ingest", f"trace={trace}", *model, "run_id=v", f"output_root={tmp_path}")
    assert status == 0, err + out
    data = json.loads((_folder(tmp_path, "v") / "report.json").read_text())["ingest"]
    (vae,) = data["stages"]
    assert (vae["stage"], vae["runs"], vae["flops"], data["forwards"]) == ("vae_decode", 1, None, 0)
    assert vae["measured_per_run_s"] == pytest.approx(50e-6) and data["flops"] is None
    ops = pd.read_parquet(_folder(tmp_path, "v") / "ops.parquet")
    assert list(ops["status"]) == ["whole"] and list(ops["module_id"]) == ["vae_decode"]


def test_python_events_on_another_thread_than_the_ops_are_named(tmp_path: Path) -> None:
    events = json.loads(hand_cuda_trace(tmp_path / "t.json").read_text())["traceEvents"]
    for e in events:
        if e["cat"] == "python_function":
            e["tid"] = 99
    (tmp_path / "t.json").write_text(json.dumps({"traceEvents": events}))
    status, _, err = _run(
        "ingest", f"trace={tmp_path / 't.json'}", *CUDA_ARGS, f"output_root={tmp_path / 'r'}"
    )
    assert status == 2 and "another thread" in err and not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("spans", "expected"),
    [
        # one kernel inside another; idle 100 µs between 500 and 600
        ((("long", 0, 500), ("inside", 10, 10), ("later", 600, 50)), (550, 650)),
        # partly overlapping (two streams, or two GPUs): [0, 100) ∪ [60, 160) ∪ [150, 200) is 200 µs,
        # not the 250 of their durations; with [300, 320): 220 µs busy of a 320 µs window
        ((("a", 0, 100), ("b", 60, 100), ("c", 150, 50), ("d", 300, 20)), (220, 320)),
    ],
    ids=["nested", "partly-overlapping"],
)
def test_the_gpu_window_ends_at_the_last_end_and_busy_time_is_a_union(
    spans: tuple[tuple[str, int, int], ...], expected: tuple[int, int]
) -> None:
    from ditmeter.commands.ingest import _busy_us
    from ditmeter.tracer.ingest import events_of

    kernels = [
        {"ph": "X", "cat": "kernel", "name": n, "ts": ts, "dur": dur, "pid": i % 2, "tid": 7, "args": {}}
        for i, (n, ts, dur) in enumerate(spans)
    ]
    assert _busy_us(events_of(kernels)) == expected


def test_zero_duration_ops_at_one_instant_are_siblings() -> None:
    """Two ops of no duration at the instant a third ends, each launching a kernel: three top-level
    ops (an op that starts where another ends is after it, not in it)."""
    from ditmeter.tracer.ingest import events_of

    events = [
        cpu_op("aten::add", 0, 5, 3),
        cpu_op("aten::fill_", 5, 0, 1),
        cpu_op("aten::zero_", 5, 0, 2),
        {
            "ph": "X",
            "cat": "kernel",
            "name": "k1",
            "ts": 9,
            "dur": 2,
            "pid": 0,
            "tid": 7,
            "args": {"External id": 1},
        },
        {
            "ph": "X",
            "cat": "kernel",
            "name": "k2",
            "ts": 12,
            "dur": 4,
            "pid": 0,
            "tid": 7,
            "args": {"External id": 2},
        },
    ]
    ops = {o.name: o for o in events_of(events).ops}
    assert set(ops) == {"aten::fill_", "aten::zero_", "aten::add"}
    assert (ops["aten::fill_"].gpu_us, ops["aten::zero_"].gpu_us) == (2, 4)


def test_a_corrupt_gzip_trace_is_bad_input(tmp_path: Path) -> None:
    import gzip

    raw = bytearray(gzip.compress(json.dumps({"traceEvents": [cpu_op("aten::mm", 0, 1, 1)] * 200}).encode()))
    raw[len(raw) // 2 : len(raw) // 2 + 8] = b"\xff" * 8
    (tmp_path / "t.json.gz").write_bytes(bytes(raw))
    status, _, err = _run(
        "ingest", f"trace={tmp_path / 't.json.gz'}", *CUDA_ARGS, f"output_root={tmp_path / 'r'}"
    )
    assert status == 2 and err.startswith("ditmeter: error: trace") and err.count("\n") == 1


def test_a_trace_larger_than_the_memory_free_can_parse_is_refused_before_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With 100 MiB free, reading JSON (about 5x its size, JSON_MEMORY_FACTOR) stops at 20 MiB of it:
    a 70 MB file is refused from its size (sparse: never read), a gzip decompressing to 70 MB is cut
    at the 64 MiB floor; each one line, exit 2, nothing written."""
    import gzip

    from ditmeter import files

    monkeypatch.setattr(files, "available_memory_bytes", lambda: 100 * 2**20)
    big = tmp_path / "big.json"
    with open(big, "wb") as f:
        f.truncate(70_000_000)
    bomb = tmp_path / "bomb.json.gz"
    bomb.write_bytes(gzip.compress(b" " * 70_000_000))
    for trace, words in ((big, "more than this machine has free"), (bomb, "decompresses to more than")):
        root = tmp_path / f"r-{trace.stem}"
        status, _, err = _run("ingest", f"trace={trace}", *CUDA_ARGS, f"output_root={root}")
        assert status == 2 and err.startswith("ditmeter: error: trace") and words in err, err
        assert err.count("\n") == 1 and not root.exists()


def test_the_official_wan22_code_cannot_be_taken_for_wan21_i2v(runs: dict[str, Any]) -> None:
    """The installed official code is Wan2.2's: its WanModel has no CLIP branch, so a Wan2.1 I2V
    run cannot be mapped against it (refused, not mapped wrongly)."""
    root = runs["root"] / "i2v"
    argv = ["ingest", f"trace={runs['official'].trace}", "model=wan2.1-i2v-14b-480p", "workload=w001-tiny"]
    status, _, err = _run(*argv, "model.num_layers=2", f"output_root={root}")
    assert status == 2 and err.startswith("ditmeter: error: pipeline") and "img_emb" in err
    assert not root.exists()


def test_a_trace_nested_deeper_than_any_real_one_stays_linear() -> None:
    """20,000 Python functions each inside the one before, an op at the bottom: read in one pass
    (a chain copied whole at every level would hold 200 million names), the op under its innermost
    functions only (``MAX_FUNCTIONS``)."""
    from ditmeter.tracer.ingest import MAX_FUNCTIONS, events_of

    depth = 20_000
    events = [
        {
            "ph": "X",
            "cat": "python_function",
            "name": f"f{n}.py(1): g{n}",
            "ts": n,
            "dur": 2 * (depth - n) + 9,
            "pid": 1,
            "tid": 1,
        }
        for n in range(depth)
    ]
    events.append(cpu_op("aten::add", depth + 1, 2, 1))
    (op,) = events_of(events).ops
    assert len(op.functions) == MAX_FUNCTIONS and op.functions[-1].endswith(f"g{depth - 1}")


@pytest.mark.parametrize("pipeline", ["official", "diffusers"])
def test_a_default_profile_trace_names_the_way_to_one_ingest_reads(pipeline: str) -> None:
    """``profile`` runs diffusers' modules whatever ``pipeline=`` says; a trace profiled under the
    default (official) shapes is refused by ingest under either pipeline, and each refusal names
    ``pipeline=diffusers``, the one profile run ingest takes (its help says so)."""
    from ditmeter.commands.ingest import _as_recorded
    from ditmeter.commands.profile import recorded_run
    from ditmeter.commands.report import analyze
    from ditmeter.config import load
    from ditmeter.errors import ConfigError

    base = ["model=wan2.1-t2v-1.3b", "workload=w001-tiny"]
    profiled = load([*base, "pipeline=official"], "profile")
    run = recorded_run(profiled, analyze(profiled)[0])
    with pytest.raises(ConfigError) as err:
        _as_recorded(load([*base, f"pipeline={pipeline}"], "ingest"), run)
    assert err.value.field == "pipeline" and "pipeline=diffusers" in err.value.message
    same = load([*base, "pipeline=diffusers"], "profile")
    assert _as_recorded(load([*base, "pipeline=diffusers"], "ingest"), recorded_run(same, analyze(same)[0]))
