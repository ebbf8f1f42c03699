"""``trace`` and ``compare`` end to end: the gate passes exactly on the real model, fails on wrong rules."""

from __future__ import annotations

import json
from pathlib import Path

import networkx as nx
import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import MODELS, WORKLOADS

from ditmeter.cli import main
from ditmeter.commands.trace import trace
from ditmeter.compare.join import NODES_SCHEMA
from ditmeter.config import load
from ditmeter.reports.tables import MODULES_SCHEMA

NODE_COLUMNS = [
    "stage",
    "node",
    "order",
    "op",
    "module_path",
    "module_class",
    "module_id",
    "leaf_id",
    "rule",
    "category",
    "mapping",
    "status",
    "measured_flops",
    "leaf_tensor_flops",
    "bytes_in",
    "bytes_out",
    "in_shapes",
    "in_dtypes",
    "out_shapes",
    "out_dtypes",
    "input_nodes",
    "measured_time_s",
]

#: WAN_FACTS reference counts (tensor-core FLOPs of one DiT forward), written by hand there.
REFERENCE_FLOPS = {
    ("wan2.1-t2v-14b", "480p-81f"): 1_678_370_283_192_320,
    ("wan2.1-t2v-14b", "720p-81f"): 6_523_436_592_005_120,
    ("wan2.1-t2v-1.3b", "480p-81f"): 283_001_787_777_024,
}


def _analysis_dir(root: Path) -> Path:
    (run,) = [p for p in root.iterdir() if not p.name.startswith(".")]
    return run / "static_analysis" / "wan2_1"


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("workload", WORKLOADS)
def test_gate_passes_exactly_for_every_standard_workload(model: str, workload: str, out_root: Path) -> None:
    """Every stage of the video: the UMT5 encoder, the DiT and the VAE decode, module by module."""
    result = trace(load([f"model={model}", f"workload={workload}", f"output_root={out_root}"]))
    v = result.verdict
    assert v.passed, [c for c in v.checks if not c.passed][:3]
    assert v.max_error == 0.0  # exact, not merely within 5%
    assert v.coverage.nodes["unmatched"] == 0
    assert v.coverage.flops["zero"] == 0  # no FLOPs hide in nodes classified as free
    nodes = pd.read_parquet(result.analysis_dir / "nodes.parquet")
    per_stage = nodes.groupby("stage")["measured_flops"].sum()
    roots = {c.module_id: c for c in v.stage_totals()}
    assert set(roots) == {"dit", "text_encoder", "vae_decode"}
    assert (
        roots["dit"].measured == per_stage["dit"] and roots["vae_decode"].measured == per_stage["vae_decode"]
    )
    if (model, workload) in REFERENCE_FLOPS:
        assert roots["dit"].measured == roots["dit"].analytic == REFERENCE_FLOPS[model, workload]
    # every leaf with tensor FLOPs (all 40 blocks of them) was compared
    modules = pd.read_parquet(result.analysis_dir / "modules.parquet")
    flop_leaves = modules[(modules["kind"] == "leaf") & (modules["tensor_flops"] > 0)]
    compared = {c.module_id for c in v.checks}
    assert set(flop_leaves["module_id"]) <= compared


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    # diffusers: the traced module's dtypes (the official DiT's analytic weights are fp32)
    argv = [
        "trace",
        "model=wan2.1-t2v-1.3b",
        "workload=w002-512p",
        "pipeline=diffusers",
        "workload.num_frames=13",  # 4 latent frames under both pipelines' rules
        f"output_root={root}",
    ]
    assert main(argv) == 0
    return _analysis_dir(root)


def test_traced_run_has_every_artifact(traced: Path) -> None:
    names = {p.name for p in traced.iterdir()}
    assert names == {"report.json", "summary.md", "modules.parquet", "nodes.parquet", "graph.json"}
    assert "## Check against the real model" in (traced / "summary.md").read_text()
    report = json.loads((traced / "report.json").read_text())
    assert report["compare"]["passed"] is True and report["compare"]["max_rel_error"] == 0.0
    assert report["compare"]["coverage"]["nodes"]["unmatched"] == 0


def test_nodes_parquet_round_trips_with_documented_columns(traced: Path) -> None:
    nodes = pd.read_parquet(traced / "nodes.parquet")
    assert list(nodes.columns) == NODE_COLUMNS
    assert pq.read_schema(traced / "nodes.parquet").remove_metadata().equals(NODES_SCHEMA)
    for col in ("measured_flops", "bytes_in", "bytes_out"):
        assert nodes[col].dtype == "int64"
    assert nodes["order"].dtype == "int32"
    assert nodes["node"].is_unique
    for _, run in nodes.groupby("stage"):  # execution order within each stage's run
        assert list(run["order"]) == list(range(len(run)))
    assert set(nodes["status"]) <= {"costed", "zero", "unmatched"}
    q = nodes[(nodes["module_path"] == "blocks.0.attn1.to_q") & (nodes["measured_flops"] > 0)].iloc[0]
    assert q["op"] == "aten.addmm.default" and q["leaf_id"] == "dit.blocks.0.self_attn.q"
    assert json.loads(q["out_shapes"]) == [[4 * 32 * 32, 1536]]  # 16 frames → 4 latent, 512/16 = 32
    assert q["measured_flops"] == q["leaf_tensor_flops"] == 2 * 4096 * 1536 * 1536
    meta = {k.decode(): v.decode() for k, v in pq.read_schema(traced / "nodes.parquet").metadata.items()}
    assert meta["ditmeter.table"] == "nodes" and "diffusers-dit" in meta["ditmeter.reference"]
    assert {"torch", "diffusers"} <= set(json.loads(meta["ditmeter.versions"]))


def test_modules_measured_columns_agree_with_nodes(traced: Path) -> None:
    modules = pd.read_parquet(traced / "modules.parquet")
    nodes = pd.read_parquet(traced / "nodes.parquet")
    assert pq.read_schema(traced / "modules.parquet").remove_metadata().equals(MODULES_SCHEMA)
    assert modules["measured_flops"].dtype == "int64" and modules["rel_error"].notna().all()
    per_leaf = nodes.groupby("leaf_id")["measured_flops"].sum()
    leaves = modules[modules["kind"] == "leaf"].set_index("module_id")
    assert (per_leaf.reindex(leaves.index, fill_value=0) == leaves["measured_flops"]).all()
    root = modules[modules["module_id"] == "dit"].iloc[0]
    dit_nodes = nodes[nodes["stage"] == "dit"]
    assert root["measured_flops"] == dit_nodes["measured_flops"].sum() == root["tensor_flops"]
    assert set(modules["stage"]) == set(nodes["stage"]) == {"text_encoder", "dit", "vae_decode"}


def test_graph_file_reloads_into_networkx(traced: Path) -> None:
    data = json.loads((traced / "graph.json").read_text())
    g = nx.node_link_graph(data, directed=True, multigraph=False, edges="edges")
    modules = pd.read_parquet(traced / "modules.parquet")
    nodes = pd.read_parquet(traced / "nodes.parquet")
    assert g.number_of_nodes() == len(modules) + len(nodes)
    report = json.loads((traced / "report.json").read_text())
    assert report["compare"]["graph"]["nodes"] == g.number_of_nodes()
    assert report["compare"]["graph"]["edges"] == g.number_of_edges()
    kinds = {d["kind"] for _, _, d in g.edges(data=True)}
    assert kinds == {"contains", "data"}
    data_only = nx.DiGraph((u, v) for u, v, d in g.edges(data=True) if d["kind"] == "data")
    assert nx.is_directed_acyclic_graph(data_only)
    assert g.nodes["module:dit"]["measured_flops"] == g.nodes["module:dit"]["analytic_flops"] > 0
    # the hierarchy is one tree per stage: every node but a stage root has one container
    contains = nx.DiGraph((u, v) for u, v, d in g.edges(data=True) if d["kind"] == "contains")
    assert nx.is_branching(contains)
    roots = {n for n in contains if contains.in_degree(n) == 0}
    assert roots == {"module:dit", "module:text_encoder", "module:vae_decode"}


def test_compare_rereads_the_newest_traced_run(traced: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = traced.parents[2]
    assert main(["compare", f"output_root={root}"]) == 0
    out = capsys.readouterr().out
    assert "gate: PASS" in out and "unmatched" in out and "vae_decode.decoder" in out and "  dit  " in out
    assert "peak live activations of one dit run" in out  # the memory gate is re-read too
    # a stricter tolerance still passes: the agreement is exact
    assert main(["compare", f"output_root={root}", "compare.tolerance=0"]) == 0


def test_a_wrong_rule_fails_the_gate_and_names_the_module(
    out_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An FFN up-projection costed with 4·dim instead of ffn_dim: 31% off, over 5%."""
    from ditmeter.analytic import registry
    from ditmeter.analytic.rules import dense

    def wrong_ffn(**dims: object) -> object:
        if dims["out_features"] == 8960:  # 1.3B ffn_dim
            dims = {**dims, "out_features": 4 * 1536}
        return dense.linear(**dims)  # type: ignore[arg-type]

    monkeypatch.setitem(registry.RULES, "linear", wrong_ffn)
    argv = ["trace", "model=wan2.1-t2v-1.3b", "workload=w001-tiny", f"output_root={out_root}"]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "gate: FAIL" in out and "blocks.0.ffn.0" in out
    assert "capture one run (fx graph, per-node FLOPs) [dit]" in out  # progress of the long steps, per stage
    # the run is still published, and compare reaches the same verdict from the tables
    assert main(["compare", f"output_root={out_root}"]) == 1
    assert "blocks.0.ffn.0" in capsys.readouterr().out


def test_one_row_off_passes_at_5_percent_but_fails_at_zero_tolerance(
    out_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Off by one of 256 rows is 0.39%: inside the default 5%, caught when exactness is asked for."""
    from ditmeter.analytic import registry
    from ditmeter.analytic.rules import dense

    def off_by_one_row(**dims: object) -> object:
        if dims["out_features"] == 8960:
            dims = {**dims, "tokens": int(dims["tokens"]) + 1}  # type: ignore[call-overload]
        return dense.linear(**dims)  # type: ignore[arg-type]

    monkeypatch.setitem(registry.RULES, "linear", off_by_one_row)
    argv = ["trace", "model=wan2.1-t2v-1.3b", "workload=w001-tiny", f"output_root={out_root}"]
    assert main([*argv, "compare.tolerance=0"]) == 1
    out = capsys.readouterr().out
    assert "blocks.0.ffn.0" in out and "0.39%" in out
    assert main(["compare", f"output_root={out_root}"]) == 0  # 5%: within tolerance, error still shown
    assert "0.39%" in capsys.readouterr().out


def test_an_unmatched_flop_node_fails_the_gate(
    out_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import attrs

    from ditmeter.models.wan21.references import REFERENCES

    ref = REFERENCES["dit"]
    monkeypatch.setitem(REFERENCES, "dit", attrs.evolve(ref, rules=ref.rules.without("cross_attn.core")))
    argv = ["trace", "model=wan2.1-t2v-1.3b", "workload=w001-tiny", f"output_root={out_root}"]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "unmatched node with FLOPs" in out and "aten.bmm.default in 'blocks.0.attn2'" in out
    nodes = pd.read_parquet(_analysis_dir(out_root) / "nodes.parquet")
    unmatched = nodes[nodes["status"] == "unmatched"]
    assert set(unmatched["module_path"].str.replace(r"blocks\.\d+", "blocks.N", regex=True)) == {
        "blocks.N.attn2"
    }
    assert unmatched["leaf_id"].isna().all() and (unmatched["measured_flops"] > 0).any()


def test_a_full_disk_is_a_clean_exit_2_that_leaves_nothing(
    out_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """ENOSPC while writing: one line naming output_root, no run, no staging, not even the folder."""
    import errno

    from ditmeter.commands import trace as run

    def full(_g: object) -> str:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(run, "graph_json", full)
    assert main(["trace", "model=wan2.1-t2v-1.3b", "workload=w001-tiny", f"output_root={out_root}"]) == 2
    err = capsys.readouterr().err
    assert err == f"ditmeter: error: output_root: cannot write under {out_root}: No space left on device\n"
    assert not out_root.exists()


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["run_id=no-such-run"], "run_id"),
        (["model=wan2.1-t2v-14b"], "model"),
        (["workload.num_frames=33"], "workload.num_frames"),
        (["compare.tolerance=-0.1"], "compare.tolerance"),
        (["compare.show=0"], "compare.show"),
    ],
)
def test_compare_bad_input_exits_2_naming_the_field(
    traced: Path, args: list[str], field: str, capsys: pytest.CaptureFixture[str]
) -> None:
    root = traced.parents[2]
    assert main(["compare", f"output_root={root}", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ditmeter: error: {field}:") and err.count("\n") == 1


def test_compare_refuses_runs_without_traced_tables(
    out_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["compare", f"output_root={out_root}"]) == 2  # nothing at all
    assert "no traced run" in capsys.readouterr().err
    assert main(["report", "model=wan2.1-t2v-1.3b", "workload=w001-tiny", f"output_root={out_root}"]) == 0
    run_id = next(out_root.iterdir()).name
    assert main(["compare", f"output_root={out_root}", f"run_id={run_id}"]) == 2
    assert "nodes.parquet" in capsys.readouterr().err


def test_compare_refuses_a_corrupt_table(
    traced: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    run = traced.parents[1]
    copy = tmp_path / "runs" / run.name
    shutil.copytree(run, copy)
    (copy / "static_analysis" / "wan2_1" / "nodes.parquet").write_bytes(b"not parquet")
    assert main(["compare", f"output_root={copy.parent}", f"run_id={run.name}"]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_every_column_is_documented() -> None:
    repo = Path(__file__).resolve().parents[1]
    docs = (repo / "docs" / "artifacts.md").read_text()
    readme = (repo / "README.md").read_text()
    for schema in (MODULES_SCHEMA, NODES_SCHEMA):
        for name in schema.names:
            assert f"`{name}`" in docs, name
            assert f"`{name}`" in readme, name


@pytest.mark.parametrize(
    "overrides",
    [
        ["workload.batch_size=2"],
        ["workload.dtype=fp32"],
        ["workload.context_len=226"],
        [
            "pipeline=diffusers",
            "workload.num_frames=17",
            "workload.height=480",
            "workload.width=832",
        ],
    ],
)
def test_gate_is_exact_off_the_presets(overrides: list[str], out_root: Path) -> None:
    """Batch, dtype (fp32 has no casts), context length and pipeline change the graph, not the agreement."""
    cfg = load(["model=wan2.1-t2v-1.3b", "workload=w001-tiny", f"output_root={out_root}", *overrides])
    v = trace(cfg).verdict
    assert v.passed and v.max_error == 0.0 and v.coverage.nodes["unmatched"] == 0


def test_trace_refuses_an_existing_run_id_before_tracing(
    traced: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from ditmeter.tracer import capture

    def never(*_a: object) -> None:
        raise AssertionError("traced although the run id was taken")

    monkeypatch.setattr(capture, "capture_forward", never)
    root, run_id = traced.parents[2], traced.parents[1].name
    argv = ["trace", "model=wan2.1-t2v-1.3b", "workload=w001-tiny", f"output_root={root}", f"run_id={run_id}"]
    assert main(argv) == 2
    assert "run_id:" in capsys.readouterr().err


def test_unfused_bytes_bound_the_fused_ideal_and_equal_it_for_single_op_leaves(traced: Path) -> None:
    """Every op reading and writing DRAM is an upper bound; a Linear is one addmm, so the two agree."""
    modules = pd.read_parquet(traced / "modules.parquet")
    leaves = modules[(modules["kind"] == "leaf") & (modules["stage"] == "dit")]
    fused = leaves["bytes_read"] + leaves["bytes_written"]
    assert (leaves["unfused_bytes"] >= fused).all()
    # q, k, v, o are one addmm each (plus views): the op's I/O is exactly the fused ideal
    projections = leaves[(leaves["category"] == "attn_proj") & (leaves["stage"] == "dit")]
    assert len(projections) == 8 * 30
    assert (projections["unfused_bytes"] == projections["bytes_read"] + projections["bytes_written"]).all()
    core = leaves[leaves["module_id"] == "dit.blocks.0.self_attn.attn_core"].iloc[0]
    assert core["unfused_bytes"] > 20 * (core["bytes_read"] + core["bytes_written"])  # the math path's L×L
