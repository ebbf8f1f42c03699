"""Tiled VAE decode (``methods.vae_tiling``, models/wan21/vae_tiling.py): the tiles by hand, the
tensor FLOPs against FlopCounterMode on the real diffusers tiled decode, memory and refusals."""

from __future__ import annotations

import warnings

import pytest
import torch

from ditmeter.commands.report import analyze
from ditmeter.config import load
from ditmeter.errors import ConfigError
from ditmeter.models.wan21.builders import build_vae_decode_module, vae_decode_inputs
from ditmeter.models.wan21.vae_tiling import tile_shapes

BASE = ["model=wan2.1-t2v-1.3b", "pipeline=diffusers", "stages=[vae_decode]"]


def test_720p_tiles_by_hand() -> None:
    """720p latents are 90 × 160: rows start at 0, 24, 48, 72 (heights 32, 32, 32, 18), columns
    at 0, 24, …, 144 (widths 32 × 6, then 16): 4 × 7 = 28 tiles."""
    rows = tile_shapes(90, 160)
    assert [r[0][0] for r in rows] == [32, 32, 32, 18]
    assert [w for _, w in rows[0]] == [32] * 6 + [16]
    assert sum(len(r) for r in rows) == 28


@pytest.mark.parametrize(("frames", "height", "width"), [(5, 320, 320), (1, 256, 400)])
def test_tiled_decode_flops_are_the_real_tiled_decode(frames: int, height: int, width: int) -> None:
    """diffusers' ``AutoencoderKLWan`` with ``enable_tiling()`` on the meta device under
    FlopCounterMode: its tensor FLOPs equal the tiled tree's exactly (and differ from the untiled
    decode's: the tiles overlap)."""
    from torch.utils.flop_counter import FlopCounterMode

    over = [f"workload.num_frames={frames}", f"workload.height={height}", f"workload.width={width}"]
    cfg = load([*BASE, "workload=w001-tiny", *over, "methods.vae_tiling=true"], "report")
    analysis, _ = analyze(cfg)
    plain, _ = analyze(load([*BASE, "workload=w001-tiny", *over], "report"))
    (stage,) = analysis.stages
    module = build_vae_decode_module(cfg.model.vae)
    module.vae.enable_tiling()  # type: ignore[operator]
    inputs = vae_decode_inputs(cfg.model.vae, cfg.workload.batch_size, cfg.geometry.latent_shape)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module(**inputs)
    assert stage.tree.total.tensor_flops == counter.get_total_flops()
    assert stage.tree.total.tensor_flops > plain.stages[0].tree.total.tensor_flops


def test_the_tiled_peak_by_hand() -> None:
    """14B VAE (fp32) at 720p, 81 frames, 21 × 90 × 160 latents: the tiles' pixels are (32·3 + 18)
    × (32·6 + 16) × 64 = 1,517,568, all held: × 3 channels × 81 frames × 4 B = 1,475,076,096 B; the
    video is 3 × 81 × 720 × 1280 × 4 = 895,795,200 B, three of them live at the clamp
    (2,687,385,600 B) against 1,341,596,672 B for a 32 × 32 tile's decode: 4,162,461,696 B."""
    from ditmeter.models.wan21.vae_tiling import tiled_decode_bytes

    vae = load(["model=wan2.1-t2v-14b", "workload=720p-81f", "pipeline=diffusers"], "report").model.vae
    assert tiled_decode_bytes(vae, 1, 21, 90, 160) == 1_475_076_096 + 3 * 895_795_200


def test_tiling_lowers_the_decode_peak_at_720p() -> None:
    """The 14B's VAE at 720p, 81 frames: the untiled decode's live activations against the tiled
    estimate (every tile's output held plus one tile's decode or the joined video)."""
    args = ["model=wan2.1-t2v-14b", "pipeline=diffusers", "workload=720p-81f", "stages=[vae_decode]"]
    tiled_a, _ = analyze(load([*args, "methods.vae_tiling=true"], "report"))
    plain_a, _ = analyze(load(args, "report"))

    def live(a):  # type: ignore[no-untyped-def]
        return max(ph.activation_bytes or 0 for ph in a.memory.phases if ph.stage == "vae_decode")

    assert live(tiled_a) < live(plain_a) / 2


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        (["pipeline=official"], "official VAE has no tiled decode"),
        (["pipeline=official", "stages=[dit]"], "official VAE has no tiled decode"),
        (["model=wan2.2-ti2v-5b", "workload=ti2v-720p-121f"], "Wan2.1 VAE"),
    ],
)
def test_tiling_is_refused_where_there_is_none(extra: list[str], why: str) -> None:
    args = ["model=wan2.1-t2v-1.3b", "workload=480p-81f", "pipeline=diffusers", *extra]
    with pytest.raises(ConfigError) as exc:
        analyze(load([*args, "methods.vae_tiling=true"], "report"))
    assert exc.value.field == "methods.vae_tiling" and why in exc.value.message


def test_whatif_names_the_fastest_that_fits() -> None:
    """The 1.3B at 720p on a 24 GB RTX 4090 with diffusers: the untiled decode does not fit, the
    tiled one does; the what-if names both the fastest (baseline) and the fastest that fits."""
    from ditmeter.commands.whatif import whatif
    from ditmeter.reports.whatif_table import whatif_lines

    args = ["model=wan2.1-t2v-1.3b", "workload=720p-81f", "device=rtx4090", "pipeline=diffusers"]
    lines = whatif_lines(whatif(("vae_tiling",), args))
    assert lines[0].startswith("fastest: baseline")
    assert lines[1].startswith("fastest that fits: vae_tiling")
