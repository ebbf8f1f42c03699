"""A calibration serves any report (stand-ins for what it did not measure, or a refusal with
advice), and ``calibrate`` flags points no machine reaches."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
import yaml
from test_kernels import calibration  # the README's flow: a fast CPU calibration of the DiT alone

from ditmeter.catalog import kernel_table
from ditmeter.cli import main
from ditmeter.config import load

__all__ = ["calibration"]

MODEL = ["model=wan2.1-t2v-1.3b", "workload=w001-tiny"]


def _edited(calibration: Path, tmp_path: Path, edit: dict[str, object]) -> Path:
    raw = yaml.safe_load(calibration.read_text())
    raw.update(edit)
    path = tmp_path / "edited.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_dit_calibration_serves_a_report_of_every_stage(
    calibration: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The VAE's fp32 convolutions were not measured: the calibration's own bf16 convolution curve
    stands in (on a CPU there is no catalog table), and the report says so."""
    raw = yaml.safe_load(calibration.read_text())
    assert set(raw["kernels"]["conv"]) == {"bf16"} and set(raw["kernels"]["gemm"]) == {"bf16"}
    assert main(["report", *MODEL, f"calibration={calibration}", f"output_root={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "not calibrated: fp32 gemm from bf16, fp32 conv from bf16" in out
    kernels = load([*MODEL, f"calibration={calibration}"], "report").time.kernels
    assert kernels is not None
    assert list(kernels.conv["fp32"].fraction) == raw["kernels"]["conv"]["bf16"]["fraction"]
    assert list(kernels.gemm["fp32"].fraction) == raw["kernels"]["gemm"]["bf16"]["fraction"]


def test_a_gpu_calibration_falls_back_to_its_devices_table(calibration: Path, tmp_path: Path) -> None:
    """A calibration of a catalog GPU takes what it did not measure from that GPU's kernel table."""
    h100 = load(["device=h100-sxm"], "report").device
    assert h100 is not None and h100.kernels is not None
    record = {k: v for k, v in attrs.asdict(h100).items() if v is not None}
    path = _edited(calibration, tmp_path, {"device": record})
    kernels = load([*MODEL, f"calibration={path}"], "report").time.kernels
    catalog = kernel_table(h100.kernels)
    assert kernels is not None and kernels.conv["fp32"] == catalog.conv["fp32"]
    assert kernels.gemm["fp32"] == catalog.gemm["fp32"]
    assert kernels.notes == (f"not calibrated: fp32 gemm from {catalog.name}, fp32 conv from {catalog.name}",)


def test_a_calibration_nothing_can_stand_in_for_is_refused(
    calibration: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = yaml.safe_load(calibration.read_text())
    path = _edited(calibration, tmp_path, {"kernels": {**raw["kernels"], "gemm": {}}})
    assert main(["report", *MODEL, f"calibration={path}", f"output_root={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ditmeter: error: calibration: ") and "ditmeter calibrate" in err
    assert len(err.strip().splitlines()) == 1


def _point(
    kind: str, shape: str, seconds: float, *, flops: int = 0, size: int = 0, spread: float = 0.01
) -> dict[str, object]:
    return {
        "kind": kind,
        "dtype": "bf16",
        "shape": shape,
        "x": flops or size,
        "seconds": seconds,
        "flops": flops,
        "bytes": size,
        "head_dim": 0,
        "spread": spread,
    }


def test_points_no_machine_reaches_are_flagged() -> None:
    """The points a busy machine records (issue 24: 0.197 GB/s, 17,240% of the peak): above the
    device's peak, a copy slower than any memory system, medians with a wide spread."""
    from ditmeter.analytic.calibration import implausible_points

    h100 = load(["device=h100-sxm"], "report").device
    assert h100 is not None
    peak = h100.tensor_flop_per_s("bf16")
    points = [
        _point("gemm", "256x1536x1536", 1.0, flops=int(172.4 * peak)),  # 17,240% of the peak
        _point("copy", "copy 256x1536", 1.0, size=197_000_000),  # 0.197 GB/s
        _point("gemm", "512x1536x1536", 1.0, flops=int(0.5 * peak), spread=0.8),
        _point("gemm", "honest", 1.0, flops=int(0.6 * peak)),
        _point("elementwise", "add 256x1536", 1.0, size=int(0.5 * h100.bytes_per_s)),
    ]
    warnings = implausible_points(points, h100)
    assert any("256x1536x1536" in w and "17,240%" in w for w in warnings), warnings
    assert any("copy 256x1536" in w and "0.197 GB/s" in w for w in warnings), warnings
    assert any("1 of 5" in w and "512x1536x1536" in w and "80%" in w for w in warnings), warnings
    assert not any("honest" in w or "add 256x1536" in w for w in warnings)
    assert implausible_points(points[3:], h100) == []


def test_calibrate_reports_and_records_its_warnings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every call timed with a wide spread (a busy machine): the terminal and the file say so."""
    from ditmeter.tracer import calibrate as bench

    monkeypatch.setattr(bench, "_time", lambda fn, device_kind, min_run_time: (1e-3, 0.9))
    path = tmp_path / "cal.yaml"
    argv = ["calibrate", *MODEL, "stages=[dit]", f"calibrate.output={path}", "calibrate.max_flops=2e6"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "warning: " in out and "spread more than 25%" in out
    raw = yaml.safe_load(path.read_text())
    assert any("spread more than 25%" in w for w in raw["warnings"])
    assert all(p["spread"] == 0.9 for p in raw["points"])


@pytest.mark.parametrize(
    ("drop", "extra", "field"),
    [
        ("kernels", {}, "calibration.kernels"),  # was "is not a calibration file" though its kind is
        ("device", {}, "calibration.device"),
        (None, {"bogus": 1}, "calibration.bogus"),  # a key no calibration has was accepted
    ],
)
def test_a_damaged_calibration_names_what_is_wrong(
    calibration: Path, tmp_path: Path, drop: str | None, extra: dict[str, int], field: str
) -> None:
    from ditmeter.analytic.calibration import read_calibration
    from ditmeter.errors import ConfigError

    raw = yaml.safe_load(calibration.read_text())
    raw.pop(drop, None)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**raw, **extra}))
    with pytest.raises(ConfigError) as exc:
        read_calibration(path)
    assert exc.value.field == field


def test_launch_count_counts_kernels_not_views() -> None:
    """By hand: a view and a transpose alias their input (no kernel); an add allocates and an
    in-place add writes its input (a kernel each)."""
    import torch

    from ditmeter.compare.mapping import ZERO_OPS
    from ditmeter.tracer.calibrate import LaunchCount

    x = torch.ones(8)
    counter = LaunchCount(ZERO_OPS)
    with counter:
        y = x.view(4, 2).t()
        z = y + 1
        z.add_(1)
    assert (counter.ops, counter.views, counter.launched) == (4, 2, 2)


def test_the_diffusers_dit_launches_the_same_kernels_per_block() -> None:
    """The host measurement's forward is the real module: each block adds the same launches, and
    its kernel count is the point's x (a count that did not follow the blocks would fail)."""
    import torch

    from ditmeter.compare.mapping import ZERO_OPS
    from ditmeter.tracer.calibrate import LaunchCount, diffusers_host_forward, measure_module_host

    counts = []
    for blocks in (1, 2, 3):
        forward, counter = diffusers_host_forward("cpu", blocks), LaunchCount(ZERO_OPS)
        with torch.no_grad(), counter:
            forward()
        counts.append(counter.launched)
    per_block = counts[1] - counts[0]
    assert per_block > 20 and counts[2] - counts[1] == per_block
    point = measure_module_host("cpu", 0.05, ZERO_OPS)
    assert point.kind == "module_host" and point.x == counts[0] + 29 * per_block
    assert 0 < point.seconds < 1e-3  # seconds per launched kernel, not per forward
