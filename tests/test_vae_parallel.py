"""The VAE decode spread over a plan's GPUs (``methods.vae_parallel``, models/wan21/vae_parallel.py):
rank 0's tile FLOPs against FlopCounterMode on the real decoder at the tile LightX2V's slicing
gives, the gather's bytes and the rank's memory by hand, the plan's time, and the refusals."""

from __future__ import annotations

import warnings

import pytest
import torch

from ditmeter.commands.report import analyze
from ditmeter.config import load
from ditmeter.errors import ConfigError
from ditmeter.models.wan21.builders import build_vae_decode_module, vae_decode_inputs
from ditmeter.models.wan21.vae_memory import decode_activation_bytes
from ditmeter.models.wan21.vae_parallel import grid

BIG = ["model=wan2.1-t2v-14b", "workload=720p-81f", "device=h100-sxm", "parallel.ulysses=8"]
SMALL = ["model=wan2.1-t2v-1.3b", "workload=w001-tiny", "device=h100-sxm"]
ON = "methods.vae_parallel=true"


def _decode(analysis):  # type: ignore[no-untyped-def]
    return next(s for s in analysis.stages if s.name == "vae_decode")


def test_the_grid_is_lightx2vs() -> None:
    """``calculate_2d_grid``: its table at 720p latents (90 × 160) for 2, 4 and 8 GPUs; off the
    table, the divisor pair closest to square: 32 × 48 on 4 GPUs is 2 × 2 (|16 − 24| = 8 against
    |32 − 12| = 20 and |8 − 48| = 40); nothing divides 18 × 22 eight ways: (1, 8)."""
    assert [grid(90, 160, n) for n in (2, 4, 8)] == [(1, 2), (2, 2), (2, 4)]
    assert grid(160, 90, 8) == (4, 2)
    assert grid(32, 48, 4) == (2, 2)
    assert grid(32, 48, 2) == (1, 2)  # |32 − 24| = 8 against |16 − 48| = 32
    assert grid(18, 22, 8) == (1, 8)


@pytest.mark.parametrize(("gpus", "rows", "cols"), [(2, 1, 2), (4, 2, 2)])
def test_rank_tile_flops_are_the_real_decoder_on_lightx2vs_slice(gpus: int, rows: int, cols: int) -> None:
    """5 frames at 256 × 384 (2 × 32 × 48 latents) under Ulysses ``gpus``: rank 0's slice as
    ``decode_dist_2d`` takes it (``[0, chunk + 2·padding)`` along a split side, padding 2; the whole
    side along an unsplit one) decoded by the real diffusers decoder on the meta device under
    FlopCounterMode: its tensor FLOPs equal the rank's vae_decode stage, and fall below the whole
    decode's."""
    from torch.utils.flop_counter import FlopCounterMode

    args = [*SMALL, "workload.num_frames=5", "workload.height=256", "workload.width=384"]
    args.append(f"parallel.ulysses={gpus}")
    cfg = load([*args, ON], "report")
    spread, _ = analyze(cfg)
    whole, _ = analyze(load(args, "report"))
    vae, frames = cfg.model.vae, cfg.geometry.latent_shape[0]
    z = vae_decode_inputs(vae, 1, cfg.geometry.latent_shape)["z"]
    padding, chunk_h, chunk_w = 2, 32 // rows, 48 // cols
    tile = z[:, :, :, 0 : chunk_h + 2 * padding, 0 : chunk_w + 2 * padding]  # rank 0's slice, as the code
    assert tile.shape[-2:] == ((32 if rows == 1 else 20), 28)
    module = build_vae_decode_module(vae)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module(z=tile)
    assert frames == 2
    assert _decode(spread).tree.total.tensor_flops == counter.get_total_flops()
    assert _decode(spread).tree.total.tensor_flops < _decode(whole).tree.total.tensor_flops


def test_the_gather_and_the_memory_by_hand() -> None:
    """The 14B at 720p, 81 frames on 8 H100s: LightX2V's table splits the 90 × 160 latents 2 × 4,
    45 × 40 latents each (360 × 320 pixels): a piece is 3 × 81 × 360 × 320 × 4 B (fp32) =
    111,974,400 B, all-gathered over 8 GPUs into the 895,795,200 B video, each rank sending 7 pieces
    (783,820,800 B) once per video. Rank 0 decodes 49 × 44 latents (2 rows and columns of halo on
    each side); its decode peak is the larger of that tile's and three videos beside its piece."""
    analysis, view = analyze(load([*BIG, ON], "report"))
    assert view.plan is not None
    (gather,) = [t for t in view.plan.estimate.comms if t.comm.per == "video"]
    spec = gather.comm.spec
    assert (spec.op, spec.group_size, spec.count) == ("all_gather_into_tensor", 8, 1)
    assert spec.input_bytes == 111_974_400
    assert spec.output_bytes == 895_795_200 == 3 * 81 * 720 * 1280 * 4
    assert gather.sent_bytes == 783_820_800
    live = max(ph.activation_bytes or 0 for ph in analysis.memory.phases if ph.stage == "vae_decode")
    vae = analysis.model.vae
    assert live == max(decode_activation_bytes(vae, 1, 21, 49, 44), 3 * 895_795_200 + 111_974_400)


def test_the_plan_time_changes_by_the_decode_and_the_gather_only() -> None:
    """Under the same plan, the video's time per GPU moves by rank 0's decode (its tile instead of
    the whole) plus the gather, every other stage and collective unchanged; the one-GPU video it is
    set against is the same (the whole decode)."""
    _, plain = analyze(load(BIG, "report"))
    _, spread = analyze(load([*BIG, ON], "report"))
    assert plain.plan is not None and spread.plan is not None
    a, b = plain.plan.estimate, spread.plan.estimate
    gather = sum(t.exposed_s for t in b.comms if t.comm.per == "video")
    assert gather > 0
    decode = b.stage_video_s["vae_decode"] - a.stage_video_s["vae_decode"]
    assert decode < 0
    assert b.per_video_s - a.per_video_s == pytest.approx(decode + gather, rel=1e-9)
    assert b.single_video_s == a.single_video_s
    assert {k: v for k, v in b.stage_video_s.items() if k != "vae_decode"} == {
        k: v for k, v in a.stage_video_s.items() if k != "vae_decode"
    }


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["model=wan2.1-t2v-14b", "workload=720p-81f", "device=h100-sxm"], "parallel.* plan"),
        (
            ["model=wan2.2-ti2v-5b", "workload=ti2v-720p-121f", "device=h100-sxm", "parallel.ulysses=2"],
            "Wan2_2_VAE",
        ),
        ([*BIG, "pipeline=diffusers", "methods.vae_tiling=true"], "methods.vae_tiling"),
        (
            [*SMALL, "workload.height=144", "workload.width=176", "parallel.ulysses=4", "parallel.ring=2"],
            "drops",
        ),
    ],
)
def test_refused_naming_the_key(args: list[str], why: str) -> None:
    """One GPU, TI2V-5B's VAE, with diffusers' tiling, and latents (18 × 22) that LightX2V's grid
    for 8 GPUs (1 × 8) does not split: exit 2 naming methods.vae_parallel."""
    with pytest.raises(ConfigError) as exc:
        analyze(load([*args, ON], "report"))
    assert exc.value.field == "methods.vae_parallel" and why in exc.value.message


def test_the_sweep_costs_each_plan_as_report() -> None:
    """A sweep over plans with the decode spread: each point's time and peak equal report's."""
    from ditmeter.commands.sweep import sweep

    frame = sweep([*BIG[:3], "parallel.ulysses=[2,8]", ON]).frame
    for gpus, row in zip((2, 8), frame.itertuples(), strict=True):
        _, view = analyze(load([*BIG[:3], f"parallel.ulysses={gpus}", ON], "report"))
        assert view.plan is not None
        assert row.per_video_s == pytest.approx(view.plan.estimate.per_video_s, rel=1e-9)
        assert row.peak_per_gpu_bytes == view.plan.estimate.peak_per_gpu_bytes


def test_the_scalings_one_gpu_point_decodes_whole() -> None:
    """The scaling table's 1-GPU point is the plain video (no all-gather of one rank, no slices): its
    seconds equal the one-GPU report's and its speedup is exactly 1."""
    from ditmeter.commands.report import analyze
    from ditmeter.config import load

    base = ["model=wan2.1-t2v-14b", "workload=720p-81f", "device=h100-sxm"]
    _, one = analyze(load(base, "report"))
    _, v = analyze(load([*base, "parallel.ulysses=8", "methods.vae_parallel=true"], "report"))
    assert v.plan is not None
    first = v.plan.scaling.iloc[0]
    assert first["gpus"] == 1 and first["speedup"] == 1.0
    assert first["per_video_s"] == pytest.approx(one.per_video_s, rel=1e-12)


def test_whatif_row_is_reports_plan_and_one_gpu_says_why() -> None:
    """``whatif=[vae_parallel]`` under the plan: its row is report's plan with the key set; on one
    GPU the row cannot run and names the key (the plan it needs)."""
    from ditmeter.commands.whatif import whatif

    _, spread = analyze(load([*BIG, ON], "report"))
    assert spread.plan is not None
    rows = whatif(("vae_parallel",), BIG).frame.set_index("whatif")
    assert rows.loc["vae_parallel", "per_video_s"] == pytest.approx(
        spread.plan.estimate.per_video_s, rel=1e-9
    )
    assert rows.loc["vae_parallel", "per_video_s"] < rows.loc["baseline", "per_video_s"]
    alone = whatif(("vae_parallel",), BIG[:3]).frame.set_index("whatif")
    assert not alone.loc["vae_parallel", "runs"]
    assert "methods.vae_parallel" in alone.loc["vae_parallel", "reason"]
