"""Artifacts load in pandas/json with the documented columns, and agree with each other."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from ditmeter.cli import main
from ditmeter.reports.tables import MODULES_SCHEMA

MODULE_COLUMNS = [
    "stage",
    "module_id",
    "parent_id",
    "depth",
    "kind",
    "category",
    "rule",
    "tensor_flops",
    "cuda_flops",
    "params",
    "weight_bytes",
    "activation_bytes",
    "bytes_read",
    "bytes_written",
    "kv_cache_bytes",
    "arithmetic_intensity",
    "activation_bytes_read",
    "measured_flops",
    "rel_error",
    "unfused_bytes",
    "unfused_arithmetic_intensity",
    "kernel",
    "compute_s",
    "memory_s",
    "overhead_s",
    "predicted_s",
    "roofline_s",
    "peak_fraction",
    "predicted_flop_per_s",
    "bound",
    "measured_time_s",
    "achieved_flop_per_s",
    "achieved_bytes_per_s",
    "roofline_fraction",
    "predicted_ratio",
]


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    assert main(["report", "model=wan2.1-t2v-14b", "workload=720p-81f", f"output_root={root}"]) == 0
    (run,) = list(root.iterdir())
    return run / "static_analysis" / "wan2_1"


def test_modules_parquet_round_trips(run_folder: Path) -> None:
    df = pd.read_parquet(run_folder / "modules.parquet")
    assert list(df.columns) == MODULE_COLUMNS
    assert pq.read_schema(run_folder / "modules.parquet").remove_metadata().equals(MODULES_SCHEMA)
    for col in [*MODULE_COLUMNS[7:15], "activation_bytes_read"]:
        assert df[col].dtype == "int64", col
    assert df["arithmetic_intensity"].notna().all()
    assert (df["activation_bytes_read"] >= 0).all()
    linears = df[df["rule"] == "linear"]  # weights read whole, once
    assert (linears["bytes_read"] == linears["weight_bytes"] + linears["activation_bytes_read"]).all()
    # an analytic-only run without a device has nothing measured or timed: null, never 0
    for col in MODULE_COLUMNS[17:]:
        if col != "kernel":  # the leaf's kernel class is known without a device
            assert df[col].isna().all(), col
    assert df["kernel"].isna().eq(df["kind"] != "leaf").all()
    assert df["module_id"].is_unique
    root = df[df["module_id"] == "dit"].iloc[0]
    leaves = df[(df["kind"] == "leaf") & (df["stage"] == "dit")]
    assert root["tensor_flops"] == leaves["tensor_flops"].sum() == 6_523_436_592_005_120
    assert root["params"] == 14_288_491_584
    assert set(df.loc[df["parent_id"].notna(), "parent_id"]) <= set(df["module_id"])
    assert set(leaves["category"]) == {
        "attn_proj",
        "attn_core",
        "ffn",
        "norm_mod",
        "rope",
        "embedding",
        "head",
    }


def test_parquet_metadata_names_model_workload_versions_convention(run_folder: Path) -> None:
    meta = {
        k.decode(): v.decode() for k, v in pq.read_schema(run_folder / "modules.parquet").metadata.items()
    }
    assert json.loads(meta["ditmeter.model"])["name"] == "wan2.1-t2v-14b"
    assert json.loads(meta["ditmeter.workload"])["name"] == "720p-81f"
    versions = json.loads(meta["ditmeter.versions"])
    assert {"torch", "diffusers", "pyarrow", "ditmeter"} <= set(versions)
    assert "2 per multiply-add" in meta["ditmeter.convention"]


def test_report_json_totals(run_folder: Path) -> None:
    report = json.loads((run_folder / "report.json").read_text())
    per_forward, per_video = report["totals"]["per_forward"], report["totals"]["per_video"]
    assert per_forward["tensor_flops"] == 6_523_436_592_005_120
    assert per_video["tensor_flops"] == 100 * per_forward["tensor_flops"]
    assert per_video["params"] == per_forward["params"] == 14_288_491_584
    assert per_forward["kv_cache_bytes"] == 0
    assert report["workload"]["forwards_per_video"] == 100
    assert report["workload"]["geometry"]["tokens"] == 75_600
    assert (
        sum(m["tensor_flops"] for m in report["modules"] if m["kind"] == "leaf" and m["stage"] == "dit")
        == per_forward["tensor_flops"]
    )
    # the whole video: UMT5 twice (prompt, negative prompt), 100 DiT forwards, one VAE decode
    stages = {s["stage"]: s for s in report["stages"]}
    assert list(stages) == ["text_encoder", "dit", "vae_decode"]
    assert stages["text_encoder"]["runs_per_video"] == 2 and stages["vae_decode"]["runs_per_video"] == 1
    assert stages["text_encoder"]["per_run"]["tensor_flops"] == 4_844_723_109_888  # by hand in test_umt5
    whole = report["totals"]["whole_video"]["tensor_flops"]
    assert whole == sum(s["per_video"]["tensor_flops"] for s in stages.values())
    assert (
        whole
        == per_video["tensor_flops"] + 2 * 4_844_723_109_888 + stages["vae_decode"]["per_run"]["tensor_flops"]
    )
    assert sum(c["tensor_flops"] for c in report["categories"]) == per_forward["tensor_flops"]
    assert any("KV cache" in n for n in report["notes"])
    assert any("not modeled" in n for n in report["notes"])


def test_summary_is_readable(run_folder: Path) -> None:
    text = (run_folder / "summary.md").read_text()
    for heading in (
        "## Stages of one video",
        "## Totals",
        "## Top 10 layers",
        "## Top 5 categories",
        "Attention core:",
    ):
        assert heading in text
    assert "`dit.blocks.*.self_attn.attn_core` | 40 | attn_core" in text
    assert "6,523,436,592,005,120" in text
    assert "nan" not in text.lower()
