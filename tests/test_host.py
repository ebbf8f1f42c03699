"""The host CPU (``host=``): where ``offload.t5_cpu=true`` encodes the prompt, by hand."""

from __future__ import annotations

import pytest

from ditmeter.analytic.tree import walk
from ditmeter.commands.report import analyze
from ditmeter.config import load
from ditmeter.errors import ConfigError

BASE = ["model=wan2.1-t2v-1.3b", "workload=480p-81f", "device=h100-sxm", "stages=[text_encoder,dit]"]


def _text(*overrides: str):  # type: ignore[no-untyped-def]
    a, view = analyze(load([*BASE, *overrides], "report"))
    assert view.prediction is not None
    stage = next(s for s in a.stages if s.name == "text_encoder")
    return stage, view.prediction.modules["text_encoder"]


def test_the_text_encoder_on_a_96_core_epyc_by_hand() -> None:
    """Compiled (one op per leaf): compute = tensor FLOPs / (96 × 204.6 GFLOP/s, the measured bf16
    rate of a Zen 4 core) + CUDA-core FLOPs / (96 × 91.3 GFLOP/s); every op adds its 2.84 µs."""
    stage, t = _text("offload.t5_cpu=true", "host=epyc-9654", "time.execution=compiled")
    cost = stage.tree.total
    assert t.compute_s == pytest.approx(cost.tensor_flops / (96 * 204.6e9) + cost.cuda_flops / (96 * 91.3e9))
    leaves = sum(r.copies for r in walk(stage.tree, expand=False) if r.kind == "leaf")
    assert t.overhead_s == pytest.approx(leaves * 2.84e-6)
    assert t.predicted_s >= t.compute_s + t.overhead_s  # a CPU adds its op cost: nothing overlaps


def test_t5_cpu_moves_the_encoder_to_the_host() -> None:
    _, gpu = _text()
    _, desktop = _text("offload.t5_cpu=true", "host=ryzen-7950x")
    _, server = _text("offload.t5_cpu=true", "host=epyc-9654")
    assert desktop.predicted_s > server.predicted_s > gpu.predicted_s
    assert desktop.compute_s == pytest.approx(6 * server.compute_s, rel=1e-9)  # 96 / 16 cores


def test_host_auto_follows_the_board() -> None:
    rtx = load([*BASE[:2], "device=rtx4090"], "report").time.host
    dc = load(BASE, "report").time.host
    assert rtx is not None and rtx.device.name == "ryzen-7950x"
    assert dc is not None and dc.device.name == "epyc-9654"


def test_an_unknown_host_names_the_field() -> None:
    with pytest.raises(ConfigError) as err:
        load([*BASE, "host=pentium-4"], "report")
    assert err.value.field == "host" and "epyc-9654" in str(err.value)


def test_a_host_that_is_no_calibration_file_names_host() -> None:
    with pytest.raises(ConfigError) as err:
        load([*BASE, "host=/dev/null"], "report")
    assert err.value.field == "host"
    with pytest.raises(ConfigError) as err:  # checked without a device too
        load(["model=wan2.1-t2v-1.3b", "host=pentium-4"], "report")
    assert err.value.field == "host"


def test_the_sweep_times_the_text_encoder_where_report_does() -> None:
    """Under offload.t5_cpu the sweep times the encoder on each device's host, as report does, for
    either execution."""
    from ditmeter.commands.sweep import sweep

    keys = ["model=wan2.1-t2v-1.3b", "workload=480p-81f", "offload.t5_cpu=true"]
    result = sweep([*keys, "device=[h100-sxm,rtx4090]", "time.execution=[eager,compiled]"])
    for row in result.frame.to_dict("records"):
        point = [*keys, f"device={row['device']}", f"time.execution={row['time.execution']}"]
        _, view = analyze(load(point, "report"))
        assert row["per_video_s"] == pytest.approx(view.per_video_s, rel=1e-9)
        encode = view.prediction.modules["text_encoder"].predicted_s  # two prompts: two runs
        assert row["text_encoder_per_video_s"] == pytest.approx(2 * encode, rel=1e-9)


def test_a_host_without_the_encoder_on_it_is_refused() -> None:
    """``host=`` times only the text encoder under ``offload.t5_cpu``: without it the key would
    change nothing (the same seconds on every host), so it is refused naming ``host``."""
    with pytest.raises(ConfigError) as err:
        load([*BASE, "host=epyc-9654"], "report")
    assert err.value.field == "host" and "offload.t5_cpu=true" in err.value.message
    assert load([*BASE, "host=auto"], "report").offload.t5_cpu is False  # the default, said again


def test_an_optional_device_number_with_its_source_is_taken_on_any_board() -> None:
    """``device.nvlink_gbps`` with ``device.sources.nvlink_gbps`` on a board whose file has neither."""
    cfg = load(
        [*BASE[:2], "device=rtx4090", "device.nvlink_gbps=100", "device.sources.nvlink_gbps=a bench"],
        "report",
    )
    assert cfg.device is not None and cfg.device.nvlink_gbps == 100
