"""The CLI: bad input of each kind → one-line error naming the field, exit 2, nothing written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ditmeter.cli import main

BAD_INPUTS = [
    (
        ["model=wan2.1-t2v-99b"],
        "model: unknown 'wan2.1-t2v-99b'; allowed: wan2.1-flf2v-14b-720p, wan2.1-i2v-14b-480p",
    ),
    (["workload=w999"], "workload: unknown 'w999'; allowed:"),
    (["workload.num_frames=0"], "workload.num_frames: must be a positive integer, got 0"),
    (["workload.num_frames=-3"], "workload.num_frames: must be a positive integer"),
    (["workload.height=12.5"], "workload.height: must be a positive integer, got 12.5"),
    (["workload.batch_size=two"], "workload.batch_size: must be a positive integer, got 'two'"),
    (["workload.width=8"], "workload.width: 8 is below one patch (16 pixels)"),
    (["workload.dtype=int4"], "workload.dtype: 'int4' not allowed; allowed: bf16, fp16, fp32"),
    (["pipeline=nearest"], "pipeline: 'nearest' not allowed; allowed: official, diffusers"),
    (["workload.rounding=diffusers"], "workload.rounding: not a known key"),
    (["+workload.rounding=diffusers"], "workload.rounding: replaced by the top-level key pipeline"),
    (["offload.model=maybe"], "offload.model: 'maybe' not allowed; allowed: true, false"),
    (
        ["model=wan2.1-i2v-14b-480p", "+model.image_encoder.dtype=fp32"],
        "model.image_encoder.dtype: is set by the pipeline",
    ),
    (
        ["model=wan2.1-flf2v-14b-720p", "workload.num_frames=33"],
        "workload.num_frames: 33 not allowed: the official FLF2V code",
    ),
    (["workload.guidance_scale=-1"], "workload.guidance_scale: must be a finite number >= 0"),
    (["workload.context_len=1024"], "workload.context_len: 1024 exceeds the model's text_len 512"),
    (["workload.colour=red"], "workload.colour: not a known key"),
    (["~workload.height"], "workload.height: missing (required key)"),
    (["pipeline=diffusers", "workload.height=730"], "workload.height: 730 is not a multiple of 16"),
    (["not-an-override"], "overrides:"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD_INPUTS)
def test_bad_input_is_refused(
    overrides: list[str], message: str, out_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["report", *overrides, f"output_root={out_root}"])
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert not out_root.exists() or not any(out_root.iterdir())


def test_report_writes_a_complete_run(out_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(
        [
            "report",
            "model=wan2.1-t2v-1.3b",
            "workload=w001-tiny",
            "workload.batch_size=2",
            f"output_root={out_root}",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    (run,) = list(out_root.iterdir())
    folder = run / "static_analysis" / "wan2_1"
    assert sorted(p.name for p in folder.iterdir()) == ["modules.parquet", "report.json", "summary.md"]
    assert "adjusted workload.num_frames: 4 → 1" in out
    assert "wan2.1-t2v-1.3b × w001-tiny[batch_size=2]" in out
    assert "nan" not in out.lower() and "inf " not in out.lower()


def test_run_ids_never_collide(out_root: Path) -> None:
    args = ["report", "workload=w001-tiny", f"output_root={out_root}"]
    assert main(args) == 0 and main(args) == 0
    assert len(list(out_root.iterdir())) == 2
    assert main([*args, "run_id=mine"]) == 0
    assert main([*args, "run_id=mine"]) == 2  # an explicit id that exists is refused
    assert len(list(out_root.iterdir())) == 3


def test_a_crash_mid_write_is_exit_3_with_a_log_and_publishes_nothing(
    out_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import ditmeter.reports.run_files as rep

    def boom(*_: object, **__: object) -> str:
        raise RuntimeError("the summary broke")

    monkeypatch.setattr(rep, "render_summary", boom)
    assert main(["report", "workload=w001-tiny", f"output_root={out_root}"]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(
        "ditmeter: internal error: RuntimeError: the summary broke"
    )
    (log,) = out_root.iterdir()  # the traceback's log, and no run folder, no staging folder
    assert log.name.startswith("ditmeter-error-") and str(log) in err
    assert "Traceback" in log.read_text() and "render_summary" not in err


def test_module_entry_point_and_help() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "ditmeter", "report", "--help"], capture_output=True, text=True, check=True
    )
    assert "workload=720p-81f" in res.stdout and "wan2.1-t2v-14b" in res.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "ditmeter", "report", "workload.height=0"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and bad.stderr.startswith("ditmeter: error: workload.height")
