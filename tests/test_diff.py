"""``ditmeter diff``: two runs side by side, every number read back from what each run wrote."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from ditmeter.cli import main

SMALL = ["model=wan2.1-t2v-1.3b"]
H100 = "device=h100-sxm"


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(argv))
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two workloads of one model (a, b), a run without a device (c) and a profiled run (p)."""
    root = tmp_path_factory.mktemp("diff")
    for rid, extra in (
        ("a", ["workload=w001-tiny", H100]),
        ("b", ["workload=w002-512p", H100]),
        ("c", ["workload=w001-tiny"]),
    ):
        assert _run("report", *SMALL, *extra, f"run_id={rid}", f"output_root={root}")[0] == 0
    argv = [
        "profile",
        *SMALL,
        H100,
        "workload=w001-tiny",
        "profile.num_layers=1",
        "run_id=p",
        f"output_root={root}",
    ]
    assert _run(*argv)[0] == 0
    return root


def _report(root: Path, rid: str) -> dict:  # type: ignore[type-arg]
    (path,) = (root / rid / "static_analysis").glob("*/report.json")
    return json.loads(path.read_text())


def _frame(root: Path, rid: str) -> pd.DataFrame:
    (path,) = (root / rid / "static_analysis" / "diff").glob("diff.parquet")
    return pd.read_parquet(path)


def _value(frame: pd.DataFrame, level: str, key: str, metric: str) -> pd.Series:
    row = frame[(frame["level"] == level) & (frame["key"] == key) & (frame["metric"] == metric)]
    assert len(row) == 1, (level, key, metric)
    return row.iloc[0]


def test_two_workloads_side_by_side_equal_each_runs_report(runs: Path) -> None:
    status, out, _ = _run("diff", "a", "b", f"output_root={runs}", "run_id=ab")
    assert status == 0 and "nan" not in out.lower() and "inf" not in out.lower()
    frame, a, b = _frame(runs, "ab"), _report(runs, "a"), _report(runs, "b")
    flops = _value(frame, "video", "video", "tensor_flops_per_video")
    fa, fb = a["totals"]["whole_video"]["tensor_flops"], b["totals"]["whole_video"]["tensor_flops"]
    assert (flops["a"], flops["b"], flops["delta"]) == (fa, fb, fb - fa)
    assert flops["ratio"] == pytest.approx(fb / fa)
    seconds = _value(frame, "stage", "dit", "per_video_s")
    dit_b = next(s for s in b["time"]["stages"] if s["stage"] == "dit")
    assert seconds["b"] == pytest.approx(dit_b["per_video_s"])
    attn = _value(frame, "category", "attn_core", "tensor_flops_per_forward")
    assert attn["b"] == next(c for c in b["categories"] if c["category"] == "attn_core")["tensor_flops"]
    # a layer sums every block's copy: 30 blocks of the 1.3B
    layer = _value(frame, "layer", "dit.blocks.*.ffn.0", "tensor_flops")
    block = _value(frame, "module", "dit.blocks.0.ffn.0", "tensor_flops")
    assert layer["a"] == 30 * block["a"]
    md = (runs / "ab" / "static_analysis" / "diff" / "diff.md").read_text()
    assert "# diff: a → b" in md and "dit.blocks.*.self_attn.attn_core" in md


def test_a_run_against_itself_has_no_delta(runs: Path) -> None:
    assert _run("diff", "a", "a", f"output_root={runs}", "run_id=aa")[0] == 0
    frame = _frame(runs, "aa")
    assert (frame["delta"].dropna() == 0).all()
    assert set(frame["ratio"].dropna()) == {1.0}


def test_missing_metrics_stay_missing_never_zero(runs: Path) -> None:
    """No device= on A: no predicted time there (—, null), never 0; a profiled run's measured time
    against a report: only on its side."""
    status, out, _ = _run("diff", "c", "p", f"output_root={runs}", "run_id=cp")
    assert status == 0 and "nan" not in out.lower()
    frame = _frame(runs, "cp")
    per_video = _value(frame, "video", "video", "per_video_s")
    assert pd.isna(per_video["a"]) and per_video["b"] > 0 and pd.isna(per_video["delta"])
    measured = frame[(frame["metric"] == "measured_time_s") & frame["b"].notna()]
    assert len(measured) > 0 and measured["a"].isna().all()


def test_paths_work_as_well_as_run_ids_and_the_table_is_documented(runs: Path) -> None:
    (folder,) = (runs / "b" / "static_analysis").glob("*")
    assert _run("diff", str(runs / "a"), str(folder), f"output_root={runs}", "run_id=paths")[0] == 0
    table = pq.read_table(runs / "paths" / "static_analysis" / "diff" / "diff.parquet")
    assert table.schema.names == ["level", "key", "metric", "a", "b", "delta", "ratio"]
    assert table.schema.metadata[b"ditmeter.table"] == b"diff"
    docs = (Path(__file__).parents[1] / "docs" / "artifacts.md").read_text()
    for name in (*table.schema.names, "ditmeter.runs", "diff.md"):
        assert f"`{name}`" in docs, name


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["a"], "arguments"),
        (["a", "b", "c"], "arguments"),
        (["a", "nope"], "RUN_B"),
        (["a", "b", "model=wan2.1-t2v-14b"], "model"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(runs: Path, argv: list[str], field: str) -> None:
    before = sorted(p.name for p in runs.iterdir())
    status, _, err = _run("diff", *argv, f"output_root={runs}")
    assert status == 2 and err.startswith(f"ditmeter: error: {field}") and err.count("\n") == 1
    assert sorted(p.name for p in runs.iterdir()) == before


# ---- a prediction against an ingested run: the measured time beside the predicted -----------------


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prediction (p) and the hand-made CUDA trace of one DiT forward ingested (i): 170 µs of
    kernels in the DiT (60 µs GEMM, 100 µs attention, 10 µs RoPE), no text encoder nor VAE."""
    from ingest_runs import CUDA_ARGS, hand_cuda_trace

    root = tmp_path_factory.mktemp("ingested")
    trace = hand_cuda_trace(root / "cuda.json")
    assert _run("report", *CUDA_ARGS, H100, "run_id=p", f"output_root={root}")[0] == 0
    status, out, err = _run("ingest", f"trace={trace}", *CUDA_ARGS, H100, "run_id=i", f"output_root={root}")
    assert status == 0, err + out
    return root


def test_predicted_against_ingested_shows_the_measured_time_beside_the_predicted(ingested: Path) -> None:
    status, out, _ = _run("diff", "p", "i", f"output_root={ingested}", "run_id=pi")
    assert status == 0
    predicted = _report(ingested, "p")["time"]["per_forward_s"]
    frame = _frame(ingested, "pi")
    dit = _value(frame, "stage", "dit", "measured_s_per_run")
    assert pd.isna(dit["a"]) and dit["b"] == pytest.approx(170e-6)
    assert _value(frame, "stage", "dit", "predicted_s_per_run")["a"] == pytest.approx(predicted)
    attn = _value(frame, "category", "attn_core", "measured_s_per_forward")
    assert attn["b"] == pytest.approx(100e-6)
    md = (ingested / "pi" / "static_analysis" / "diff" / "diff.md").read_text()
    ratio = f"{predicted / 170e-6:.3f}×"  # A's prediction / B's measurement of the DiT forward
    for text in (out, md):
        lines = [x for x in _rows_of(text, "dit") if "0.17 ms" in x]
        assert lines and any(ratio in x for x in lines), text


def _rows_of(text: str, key: str) -> list[str]:
    """The lines of the terminal's or diff.md's tables whose first cell is ``key``."""
    cells = [x.strip(" |").replace("`", "").split() for x in text.splitlines()]
    return [line for line, c in zip(text.splitlines(), cells, strict=True) if c and c[0] == key]


def test_stages_absent_from_an_ingested_trace_are_missing_not_zero(ingested: Path) -> None:
    (folder,) = (ingested / "i" / "static_analysis").glob("*")
    modules = pd.read_parquet(folder / "modules.parquet")
    absent = modules[modules["stage"].isin(["text_encoder", "vae_decode"])]
    assert len(absent) > 0 and absent["measured_time_s"].isna().all()
    dit = modules.set_index("module_id")["measured_time_s"]
    assert dit["dit"] == pytest.approx(170e-6) and dit["dit.blocks.0.ffn.0"] == 0  # in the trace: 0 ops


def test_a_new_diff_folder_is_named_as_the_docs_say(runs: Path) -> None:
    assert _run("diff", "a", "b", f"output_root={runs}")[0] == 0
    (folder,) = [p.name for p in runs.iterdir() if "_vs_" in p.name or "-vs-" in p.name]
    stamp, name, suffix = folder.split("_")
    assert name == "diff-a-vs-b" and len(suffix) == 6 and stamp.endswith("Z")
    docs = (Path(__file__).parents[1] / "docs" / "artifacts.md").read_text()
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    # the README's blocks show run ids as … (scripts/readme_outputs.py); none names the old form
    assert "`<time>_diff-<A>-vs-<B>_<random>`" in docs and "_diff_a_vs_b_" not in readme


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (-880.7, "−880.7 s (−14.7 min)"),
        (880.7, "880.7 s (14.7 min)"),
        (-2.5, "−2.5 s"),
        (-0.0042, "−0.0042 s"),
        (-0.0005, "−0.5 ms"),
    ],
)
def test_a_negative_duration_prints_its_sign_on_every_part(value: float, text: str) -> None:
    from ditmeter.reports.diff import _value
    from ditmeter.reports.format import seconds

    assert seconds(value) == text
    assert _value("per_video_s", value) == text  # the diff's B − A column


def test_a_negative_difference_has_one_minus_sign_in_every_unit() -> None:
    """Counts, bytes and seconds of a ``B − A`` column write the same minus (U+2212), so a reader
    (or grep) sees one sign: by hand."""
    from ditmeter.reports.diff import _value
    from ditmeter.reports.format import si

    assert si(-1.678e15) == "−1.678 P" and si(-12) == "−12" and si(1.678e15) == "1.678 P"
    assert _value("tensor_flops_per_video", -139.537e15) == "−139.537 PFLOP"  # with its unit
    assert _value("peak_bytes", -61.94 * 2**40) == "−61.94 TiB"
    assert _value("predicted_s", -880.7) == "−880.7 s (−14.7 min)"


def test_a_run_label_says_a_plan_share_and_a_profile_of_fewer_blocks() -> None:
    """Two runs whose counts mean different things read differently in ``diff``'s header: a plan's
    are one GPU's share, a profile of 2 of 30 blocks ran 2 (a full one says nothing more)."""
    from ditmeter.reports.diff import RunTables

    def label(**extra: object) -> str:
        report = {"model": {"name": "m"}, "workload": {"requested": {"name": "w"}}, "pipeline": "p", **extra}
        return RunTables("id", report, pd.DataFrame()).label

    assert label() == "m × w, p"
    assert label(parallel={"name": "4 GPUs: ulysses 4"}) == "m × w, p, 4 GPUs: ulysses 4 (one GPU's share)"
    assert label(profile={"num_layers": 2, "model_layers": 30}) == "m × w, p, profiled 2 of 30 blocks"
    assert label(profile={"num_layers": 30, "model_layers": 30}) == "m × w, p"
