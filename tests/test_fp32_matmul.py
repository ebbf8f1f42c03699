"""``time.fp32_matmul``: what an fp32 matmul computes in. ``ieee`` (PyTorch's default
``matmul.allow_tf32=False``: CUDA-core SGEMM) or ``tf32`` (the TF32 tensor cores, as NVIDIA's NGC
containers run them through ``TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1``). The one Wan matmul this moves
much is Wan2.2's per-token time projection, fp32 over the whole sequence on every rank
(``wan/distributed/sequence_parallel.py``); hand arithmetic against the kernel tables' published rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ditmeter.cli import main
from ditmeter.commands.report import analyze
from ditmeter.config import load
from ditmeter.errors import ConfigError

A14B_8 = [
    "model=wan2.2-t2v-a14b",
    "pipeline=official",
    "device=a800",
    "workload=480p-81f",
    "workload.num_inference_steps=40",
    "parallel.gpus=8",
    "parallel.ulysses=8",
    "parallel.dit_fsdp=true",
    "parallel.t5_fsdp=true",
]
PROJECTION = "dit.time_projection.1"


def _projection_s(extra: list[str]) -> float:
    """One forward's time projection, eager (the fused model costs the leaf in the stage's bf16)."""
    _, view = analyze(load([*A14B_8, *extra], "report"))
    assert view.prediction is not None
    return view.prediction.modules[PROJECTION].predicted_s


def test_the_wan22_time_projection_on_tf32_by_hand() -> None:
    """Linear(5120 → 6 × 5120) over all 32,760 tokens: 2 × 32,760 × 5120 × 30,720 FLOPs a call, past
    the A100 TF32 sweep's last point (8192³: 97.32 of 156 TFLOP/s, zzc0721 issue #108) on TF32;
    on the CUDA cores at the SGEMM plateau (18.88 of 19.49 on an A100, YHs_Sample issue #4). Under
    FSDP its weight and bias are gathered in bf16 and cast up to fp32 every call: two memory-bound
    casts reading 2 and writing 4 bytes an element at 87% of the A800's 2,039 GB/s."""
    flops = 2 * 32_760 * 5120 * 30_720
    cast = (5120 * 30_720 + 30_720) * (2 + 4) / (2039e9 * 0.87)
    tf32 = _projection_s(["time.fp32_matmul=tf32"])
    assert tf32 == pytest.approx(flops / (156e12 * 97.32 / 156) + cast, rel=2e-3)
    ieee = _projection_s([])
    assert ieee == pytest.approx(flops / (19.5e12 * 0.969) + cast, rel=2e-3)
    assert 5 < ieee / tf32 < 6  # the two peaks are 8x apart, the two plateaus 5.4x


def test_tf32_moves_only_fp32_matmuls() -> None:
    """The DiT's bf16 matmuls and attention keep their time; the fp32 convolutions were TF32 already."""
    _, a = analyze(load([*A14B_8], "report"))
    _, b = analyze(load([*A14B_8, "time.fp32_matmul=tf32"], "report"))
    assert a.prediction is not None and b.prediction is not None
    for leaf in ("dit.blocks.0.ffn.0", "dit.blocks.0.self_attn.attn_core", "dit.patch_embedding"):
        assert a.prediction.modules[leaf].predicted_s == b.prediction.modules[leaf].predicted_s
    assert b.prediction.per_video_s < a.prediction.per_video_s


def test_a_device_without_a_tf32_curve_refuses_it(tmp_path: Path) -> None:
    """The B200 has no published TF32 sweep: exit 2, one line naming the key and what it takes."""
    args = ["model=wan2.1-t2v-1.3b", "device=b200", "time.fp32_matmul=tf32"]
    with pytest.raises(ConfigError) as err:
        load(args, "report")
    assert err.value.field == "time.fp32_matmul" and "allowed here: ieee" in str(err.value)
    assert main(["report", *args, f"output_root={tmp_path}"]) == 2
    assert not list(tmp_path.iterdir())
    with pytest.raises(ConfigError) as bad:
        load(["model=wan2.1-t2v-1.3b", "device=h100-sxm", "time.fp32_matmul=fp16"], "report")
    assert bad.value.field == "time.fp32_matmul"
    with pytest.raises(ConfigError) as untimed:  # nothing is timed without a device
        load(["model=wan2.1-t2v-1.3b", "time.fp32_matmul=tf32"], "report")
    assert untimed.value.field == "time.fp32_matmul"


def test_report_json_and_the_plan_line_say_which(tmp_path: Path) -> None:
    args = [
        "report",
        "model=wan2.1-t2v-1.3b",
        "workload=w001-tiny",
        "device=h100-sxm",
        f"output_root={tmp_path}",
    ]
    assert main([*args, "time.fp32_matmul=tf32", "run_id=t"]) == 0
    assert main([*args, "run_id=i"]) == 0
    for rid, want in (("t", "tf32"), ("i", "ieee")):
        report = json.loads((tmp_path / rid / "static_analysis" / "wan2_1" / "report.json").read_text())
        assert report["time"]["fp32_matmul"] == want


def test_the_host_cpu_keeps_fp32() -> None:
    """Under offload.t5_cpu the text encoder runs on the host CPU, which has no TF32."""
    cfg = load(
        ["model=wan2.1-t2v-1.3b", "device=a800", "offload.t5_cpu=true", "time.fp32_matmul=tf32"], "report"
    )
    a, _ = analyze(cfg)
    assert cfg.device is not None
    text = next(s for s in a.stages if s.name == "text_encoder")
    on, plan = a.runs_on(text, cfg.device, cfg.time)
    assert on is not cfg.device and plan.fp32_matmul == "ieee"
    dit_on, dit_plan = a.runs_on(a.forward, cfg.device, cfg.time)
    assert dit_on is cfg.device and dit_plan.fp32_matmul == "tf32"


def test_a_sweep_over_it_agrees_with_report(tmp_path: Path) -> None:
    import pandas as pd

    base = [
        "model=wan2.2-t2v-a14b",
        "pipeline=official",
        "workload=480p-81f",
        "workload.num_inference_steps=40",
    ]
    sweep = ["sweep", *base, "device=[a800,h100-sxm]", "time.fp32_matmul=[ieee,tf32]"]
    assert main([*sweep, f"output_root={tmp_path}", "run_id=s"]) == 0
    df = pd.read_parquet(tmp_path / "s" / "static_analysis" / "sweep" / "sweep.parquet")
    assert len(df) == 4 and set(df["time.fp32_matmul"]) == {"ieee", "tf32"}
    for _, row in df.iterrows():
        point = [*base, f"device={row['device']}", f"time.fp32_matmul={row['time.fp32_matmul']}"]
        _, v = analyze(load(point, "report"))
        assert v.prediction is not None
        assert row["per_video_s"] == pytest.approx(v.prediction.per_video_s, rel=1e-9)


def test_validate_can_assume_tf32_where_no_point_states_it(tmp_path: Path) -> None:
    """``ditmeter validate time.fp32_matmul=tf32`` predicts every point as if its run had TF32
    matmuls, ``=ieee`` as PyTorch's default; the A800 8-GPU Wan2.2 cell moves by its time
    projection only, and without the key it takes its source's inferred TF32."""
    import pyarrow.parquet as pq
    import yaml

    from ditmeter.commands.validate import validate

    src = yaml.safe_load((Path("data/measurements/wan2.2-readme.yaml")).read_text())
    src["points"] = [p for p in src["points"] if p["id"] == "wan22-readme-a100-a800-t2v-a14b-480p-8gpu"]
    data = tmp_path / "data"
    data.mkdir()
    (data / "one.yaml").write_text(yaml.safe_dump(src))
    ieee = validate(tmp_path / "out", data, run_id="ieee", fp32_matmul="ieee").frame
    tf32 = validate(tmp_path / "out", data, run_id="tf32", fp32_matmul="tf32")
    own = validate(tmp_path / "out", data, run_id="default").frame  # the source's inferred TF32
    assert (
        own["fp32_matmul"].iloc[0] == "tf32"
        and own["predicted_s"].iloc[0] == tf32.frame["predicted_s"].iloc[0]
    )
    assert tf32.fp32_matmul == "tf32" and "time.fp32_matmul=tf32" in tf32.settings
    # per video: 80 forwards of the projection (2 × 32,760 × 5120 × 30,720 FLOPs) at the SGEMM
    # plateau (0.969 of 19.5) against TF32's last sweep point (97.32 of 156)
    flops = 2 * 32_760 * 5120 * 30_720
    saved = 80 * (flops / (19.5e12 * 0.969) - flops / 97.32e12)
    moved = float(ieee["predicted_s"].iloc[0] - tf32.frame["predicted_s"].iloc[0])
    assert moved > saved  # the time embedding's two fp32 matmuls move too
    assert moved == pytest.approx(saved, rel=0.2)
    table = pq.read_table(tmp_path / "out" / "tf32" / "static_analysis" / "validate" / "validate.parquet")
    assert table.num_rows == 1 and table.schema.metadata[b"ditmeter.fp32_matmul"] == b'"tf32"'


def test_the_validate_command_takes_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """From the command line, as the README shows it; a bad value exits 2 naming the key."""
    assert main(["validate", "time.fp32_matmul=bf16", f"output_root={tmp_path}"]) == 2
    assert "time.fp32_matmul" in capsys.readouterr().err
    assert main(["validate", "time.fp32_matmul=tf32", f"output_root={tmp_path}", "run_id=v"]) == 0
    assert "time.fp32_matmul=tf32); error" in capsys.readouterr().out
