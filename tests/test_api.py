"""The Python API (``import ditmeter``): the same numbers as the CLI's files, nothing written
unless asked, errors naming the key, and every example of docs/api.md runs."""

from __future__ import annotations

import contextlib
import doctest
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import ditmeter
from ditmeter.cli import main
from ditmeter.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_import_ditmeter_does_not_import_torch() -> None:
    code = "import sys, ditmeter; print('torch' in sys.modules, callable(ditmeter.analyze))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]


def test_analyze_equals_the_cli_report_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    keys = {"device": "h100-sxm", "workload.num_frames": 17}
    r = ditmeter.analyze("wan2.1-t2v-1.3b", "w002-512p", keys)
    assert list(tmp_path.iterdir()) == [] and r.analysis_dir is None
    argv = [
        "report",
        "model=wan2.1-t2v-1.3b",
        "workload=w002-512p",
        "device=h100-sxm",
        "workload.num_frames=17",
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main([*argv, "output_root=out", "run_id=cli"]) == 0
    (folder,) = (tmp_path / "out" / "cli" / "static_analysis").glob("*")
    cli = json.loads((folder / "report.json").read_text())
    assert (
        r.report["totals"] == cli["totals"] and r.report["time"]["per_video_s"] == cli["time"]["per_video_s"]
    )
    assert r.report["memory"]["peak_per_gpu_bytes"] == cli["memory"]["peak_per_gpu_bytes"]
    modules = pd.read_parquet(folder / "modules.parquet")
    pd.testing.assert_frame_equal(r.modules.reset_index(drop=True), modules, check_dtype=False)
    assert r.per_forward_tensor_flops == cli["totals"]["per_forward"]["tensor_flops"]
    assert list(r.stages["stage"]) == [s["stage"] for s in cli["stages"]]


def test_output_root_publishes_the_run_folder(tmp_path: Path) -> None:
    r = ditmeter.analyze("wan2.1-t2v-1.3b", "w001-tiny", ["run_id=x"], output_root=tmp_path)
    assert r.analysis_dir == tmp_path / "x" / "static_analysis" / "wan2_1"
    assert (r.analysis_dir / "report.json").is_file() and (r.analysis_dir / "modules.parquet").is_file()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"workload.num_frames": 0}, "workload.num_frames"),
        ({"parallel.ulysses": 5, "device": "h100-sxm"}, "parallel.ulysses"),
        (["nokey=1"], "nokey"),
        (["workload.num_frames=5", "workload.num_frames=9"], "workload.num_frames"),  # given twice
    ],
)
def test_a_bad_key_raises_config_error_naming_it(overrides: object, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        ditmeter.analyze("wan2.1-t2v-1.3b", "w001-tiny", overrides)  # type: ignore[arg-type]
    assert err.value.field == field


def test_trace_gates_and_leaves_no_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    t = ditmeter.trace("wan2.1-t2v-1.3b", "w001-tiny", {"stages": ["dit"]})
    assert t.passed and t.max_rel_error == 0 and t.analysis_dir is None
    assert (t.nodes["status"] != "unmatched").all() and t.modules["measured_flops"].notna().all()
    assert list(tmp_path.iterdir()) == []


def test_sweep_returns_the_points() -> None:
    frame = ditmeter.sweep(
        {"model": "wan2.1-t2v-1.3b", "workload": "w001-tiny", "device": ["h100-sxm", "a100-sxm-80gb"]}
    )
    assert list(frame["device"]) == ["h100-sxm", "a100-sxm-80gb"]
    assert (frame["per_video_s"] > 0).all()


def test_sweep_refuses_an_output_root_it_cannot_publish_under_before_the_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``output_root`` a file: refused naming it before any point is loaded, as ``ditmeter sweep``."""
    root = tmp_path / "file"
    root.write_text("x\n")

    def loaded(*_: object) -> object:
        raise AssertionError("the points were loaded before output_root was checked")

    monkeypatch.setattr("ditmeter.commands.sweep.configs", loaded)
    grid = {"model": "wan2.1-t2v-1.3b", "workload": "w001-tiny", "device": ["h100-sxm", "l40s"]}
    with pytest.raises(ConfigError, match=r"^output_root: .* is not a folder"):
        ditmeter.sweep(grid, output_root=root)


def test_the_modules_doctest_passes() -> None:
    from ditmeter import api

    assert doctest.testmod(api).failed == 0


def test_every_example_in_docs_api_md_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    text = (ROOT / "docs" / "api.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 4
    scope: dict[str, object] = {}
    with contextlib.redirect_stdout(io.StringIO()) as out:
        for block in blocks:
            exec(compile(block, "docs/api.md", "exec"), scope)
    assert "dit.blocks.*.self_attn.attn_core" in out.getvalue() and "True 0.0" in out.getvalue()
    assert "2 1.0 FLOPs differ on []" in out.getvalue()  # the ingested run: one step, every leaf exact
    assert list(tmp_path.iterdir()) == []  # the examples write only into their own temporary folders


def test_predict_is_analyze_on_a_device() -> None:
    p = ditmeter.predict("wan2.1-t2v-1.3b", "w001-tiny", "a100-sxm-80gb", {"workload.num_frames": 9})
    a = ditmeter.analyze(
        "wan2.1-t2v-1.3b", "w001-tiny", {"device": "a100-sxm-80gb", "workload.num_frames": 9}
    )
    assert p.time is not None and a.time is not None and p.time["device"] == "a100-sxm-80gb"
    assert p.time["per_video_s"] == a.time["per_video_s"] and p.report["totals"] == a.report["totals"]


def test_ingest_equals_the_cli_and_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ingest_runs import CUDA_ARGS, hand_cuda_trace

    trace = hand_cuda_trace(tmp_path / "cuda.json")
    monkeypatch.chdir(tmp_path)
    keys = dict(a.split("=", 1) for a in CUDA_ARGS[2:]) | {"device": "h100-sxm"}
    r = ditmeter.ingest(trace, "wan2.1-t2v-1.3b", "w001-tiny", keys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cuda.json"] and r.analysis_dir is None
    with contextlib.redirect_stdout(io.StringIO()):
        argv = ["ingest", f"trace={trace}", *CUDA_ARGS, "device=h100-sxm", "output_root=out", "run_id=cli"]
        assert main(argv) == 0
    (folder,) = (tmp_path / "out" / "cli" / "static_analysis").glob("*")
    cli = json.loads((folder / "report.json").read_text())["ingest"]
    assert {k: v for k, v in r.summary.items() if k != "trace"} == {
        k: v for k, v in cli.items() if k != "trace"
    }
    pd.testing.assert_frame_equal(r.ops, pd.read_parquet(folder / "ops.parquet"))
    assert r.by_category.set_index("category").loc["attn_core", "measured_time_s"] == pytest.approx(100e-6)
    with pytest.raises(ConfigError) as bad:
        ditmeter.ingest(tmp_path / "nope.json", "wan2.1-t2v-1.3b", "w001-tiny", keys)
    assert bad.value.field == "trace"


@pytest.mark.parametrize(
    ("model", "workload", "field"),
    [
        (None, "w001-tiny", "model"),
        ("", "w001-tiny", "model"),
        ("wan2.1-t2v-1.3b", None, "workload"),
        ("wan2.1-t2v-1.3b", " ", "workload"),
    ],
)
@pytest.mark.parametrize("function", ["analyze", "predict", "trace"])
def test_a_missing_model_or_workload_is_refused_not_defaulted(
    function: str, model: str | None, workload: str | None, field: str
) -> None:
    with pytest.raises(ConfigError) as err:
        getattr(ditmeter, function)(model, workload)
    assert err.value.field == field and "wan2.1-t2v-1.3b" in err.value.message + repr(model)
    assert "allowed:" in err.value.message


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: ditmeter.analyze("wan2.1-t2v-1.3b", "w001-tiny", {"model": "wan2.1-t2v-14b"}), "model"),
        (lambda: ditmeter.analyze("wan2.1-t2v-1.3b", "w001-tiny", ["workload=w002-512p"]), "workload"),
        (lambda: ditmeter.analyze("wan2.1-t2v-1.3b", "w001-tiny", {"output_root": "x"}), "output_root"),
        (lambda: ditmeter.predict("wan2.1-t2v-1.3b", "w001-tiny", "h100-sxm", {"device": "h20"}), "device"),
        (lambda: ditmeter.predict("wan2.1-t2v-1.3b", "w001-tiny", "h100-sxm", ["+device=h20"]), "device"),
        (lambda: ditmeter.trace("wan2.1-t2v-1.3b", "w001-tiny", {"model": "wan2.1-t2v-14b"}), "model"),
        (lambda: ditmeter.ingest("t.json", "wan2.1-t2v-1.3b", "w001-tiny", {"trace": "u.json"}), "trace"),
        (lambda: ditmeter.sweep({"device": "h100-sxm", "output_root": "x"}), "output_root"),
    ],
)
def test_overrides_may_not_set_an_argument_again(call: object, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        call()  # type: ignore[operator]
    assert err.value.field == field and "argument" in err.value.message


def test_overrides_may_edit_the_argument_they_do_not_replace() -> None:
    p = ditmeter.predict("wan2.1-t2v-1.3b", "w001-tiny", "h100-sxm", {"device.efficiency": 0.5})
    assert p.time is not None and (p.time["device"], p.time["efficiency"]) == ("h100-sxm", 0.5)


@pytest.mark.parametrize("overrides", [5, "device=h100-sxm", b"x", {5: 1}, {"": 1}, ["=1"], [5], {"+": 1}])
def test_overrides_of_the_wrong_shape_are_refused_naming_them(overrides: object) -> None:
    with pytest.raises(ConfigError) as err:
        ditmeter.analyze("wan2.1-t2v-1.3b", "w001-tiny", overrides)  # type: ignore[arg-type]
    assert err.value.field == "overrides" and repr(overrides) in err.value.message + repr(overrides)


@pytest.mark.parametrize(
    ("output_root", "field"), [(None, "output_root"), (5, "output_root"), ("", "output_root")]
)
def test_diff_refuses_an_output_root_that_is_no_path(output_root: object, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        ditmeter.diff("a", "b", output_root=output_root)  # type: ignore[arg-type]
    assert err.value.field == field and "path" in err.value.message


def test_diff_names_what_a_run_is_and_hints_only_runs_it_reads(tmp_path: Path) -> None:
    ditmeter.analyze("wan2.1-t2v-1.3b", "w001-tiny", ["run_id=a"], output_root=tmp_path)
    ditmeter.analyze("wan2.1-t2v-1.3b", "w001-tiny", ["run_id=b"], output_root=tmp_path)
    ditmeter.diff("a", "b", output_root=tmp_path, write=True)  # a diff run
    ditmeter.sweep(
        {"model": "wan2.1-t2v-1.3b", "workload": "w001-tiny", "device": "h100-sxm", "run_id": "s"},
        output_root=tmp_path,
    )
    (tmp_path / "junk").mkdir()  # not a run
    (diff_run,) = [p.name for p in tmp_path.iterdir() if p.name not in ("a", "b", "s", "junk")]
    for ref, command in (("s", "sweep"), (diff_run, "diff")):
        with pytest.raises(ConfigError) as err:
            ditmeter.diff(ref, "a", output_root=tmp_path)
        assert err.value.field == "RUN_A" and "no run" not in err.value.message
        assert f"a {command} run" in err.value.message and "report.json" in err.value.message
    with pytest.raises(ConfigError) as err:
        ditmeter.diff("a", "nope", output_root=tmp_path)
    assert err.value.field == "RUN_B" and err.value.message.endswith(": a, b")
    from ditmeter.commands.compare import find_run

    ditmeter.trace("wan2.1-t2v-1.3b", "w001-tiny", {"stages": ["dit"], "run_id": "t"}, output_root=tmp_path)
    with pytest.raises(ConfigError) as err:
        find_run(tmp_path, "nope")  # compare's hint: the traced runs only
    assert err.value.field == "run_id" and err.value.message.endswith("newest traced runs: t")
