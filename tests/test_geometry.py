"""Sizes the official code cannot run: a latent side the (1, 2, 2) patch does not divide.

The official T2V code (Wan2.1 ``text2video.py``, Wan2.2 ``text2video.py`` and
``textimage2video.py``) makes the noise at ``H // stride × W // stride`` and pads the tokens to
``seq_len = ceil(lat_h·lat_w/4·lat_f)``; the patch conv floors an odd side, so the DiT output is
one latent row short of the noise (the scheduler step's shape mismatch), and TI2V's per-token
timesteps ``mask[:, ::2, ::2]`` are longer than ``seq_len`` (a negative ``new_ones``). The
image-to-video code sizes the latent itself, floored to whole patches, so it is never odd.
"""

from __future__ import annotations

import pytest

from ditmeter.cli import main
from ditmeter.config import load
from ditmeter.errors import ConfigError


@pytest.mark.parametrize(
    ("model", "workload", "key", "value", "nearest"),
    [
        ("wan2.1-t2v-14b", "480p-81f", "height", 490, "480 or 496"),  # 490 // 8 = 61
        ("wan2.1-t2v-14b", "480p-81f", "width", 840, "832 or 848"),  # 840 // 8 = 105
        ("wan2.1-t2v-1.3b", "480p-81f", "height", 488, "480 or 496"),  # 61 again: 1.3B runs text2video.py too
        ("wan2.2-t2v-a14b", "480p-81f", "height", 490, "480 or 496"),
        ("wan2.2-ti2v-5b", "ti2v-720p-121f", "height", 720, "704 or 736"),  # 720 // 16 = 45
    ],
)
def test_an_odd_latent_side_is_refused_under_the_official_code(
    model: str, workload: str, key: str, value: int, nearest: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load([f"model={model}", f"workload={workload}", f"workload.{key}={value}"])
    assert err.value.field == f"workload.{key}"
    assert "odd" in err.value.message and nearest in err.value.message


def test_the_refusal_is_one_line_on_the_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "workload=480p-81f", "workload.height=490", "output_root=/nonexistent"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ditmeter: error: workload.height: 490") and err.count("\n") == 1
    assert "480 or 496" in err


@pytest.mark.parametrize(
    ("height", "effective", "latent"),
    [
        (480, 480, 60),
        (487, 480, 60),  # 487 // 8 = 60: the VAE floors the pixels, the latent is even
        (500, 496, 62),  # 62 latent rows, 31 patches: decoded as 496 rows
    ],
)
def test_an_even_latent_side_runs_floored(height: int, effective: int, latent: int) -> None:
    g = load(["workload=480p-81f", f"workload.height={height}"]).geometry
    assert (g.effective_height, g.latent_height, g.patch_height) == (effective, latent, latent // 2)


@pytest.mark.parametrize("model", ["wan2.1-i2v-14b-480p", "wan2.2-i2v-a14b"])
def test_image_to_video_sizes_itself_to_even_latents(model: str) -> None:
    """image2video.py: lat_h = round(sqrt(max_area·aspect) // 8 // 2 · 2), even by construction:
    490×840 (max_area 411,600, aspect 490:840) gives sqrt = 490 and 840 exactly, so 60×104 latents."""
    g = load([f"model={model}", "workload=480p-81f", "workload.height=490", "workload.width=840"]).geometry
    assert (g.latent_height, g.latent_width) == (60, 104)
    assert (g.effective_height, g.effective_width) == (480, 832)


def test_diffusers_floors_ti2v_to_whole_patches_instead() -> None:
    """WanPipeline floors a multiple of 16 to VAE stride × patch (32) with a warning, so its
    latent is never odd: 720 runs as 704 there, where the official code refuses it."""
    g = load(["model=wan2.2-ti2v-5b", "workload=ti2v-720p-121f", "pipeline=diffusers"]).geometry
    assert g.effective_height == 704
    g = load(
        ["model=wan2.2-ti2v-5b", "workload=ti2v-720p-121f", "workload.height=720", "pipeline=diffusers"]
    ).geometry
    assert (g.effective_height, g.latent_height) == (704, 44)
