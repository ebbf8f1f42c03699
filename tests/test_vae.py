"""The Wan-VAE decode: analytic counts equal the diffusers AutoencoderKLWan, chunk by chunk."""

from __future__ import annotations

import attrs
import pytest

from ditmeter.analytic.tree import walk
from ditmeter.compare.check import check_graph
from ditmeter.config import load
from ditmeter.errors import ConfigError
from ditmeter.models.wan21.builders import (
    build_vae_decode_module,
    build_vae_encode_module,
    vae_decode_inputs,
    vae_encode_inputs,
)
from ditmeter.models.wan21.names import VAE_NAMES
from ditmeter.models.wan21.node_rules import VAE_DECODE_RULES, VAE_ENCODE_RULES
from ditmeter.models.wan21.vae import build_vae_decode, build_vae_encode
from ditmeter.models.wan21.vae_spec import VaeSpec
from ditmeter.tracer.capture import capture_forward
from ditmeter.validate import parse

SPEC = load([]).model.vae


@pytest.fixture(scope="module")
def decoder() -> object:
    return build_vae_decode_module(SPEC)


def test_parameters_equal_the_real_decoder(decoder: object) -> None:
    vae = decoder.vae  # type: ignore[attr-defined]
    real = sum(p.numel() for m in (vae.decoder, vae.post_quant_conv) for p in m.parameters())
    assert build_vae_decode(SPEC, 1, 1, 4, 4).total.params == real == 73_295_603


@pytest.mark.parametrize(
    "latent",
    [(1, 16, 16), (2, 4, 4), (3, 4, 6), (21, 60, 104)],  # w001-tiny; first + later calls; 480p-81f
)
def test_every_module_agrees_exactly_with_flop_counter(decoder: object, latent: tuple[int, int, int]) -> None:
    tree = build_vae_decode(SPEC, 1, *latent)
    graph = capture_forward(decoder, vae_decode_inputs(SPEC, 1, latent))  # type: ignore[arg-type]
    _, v = check_graph(graph, tree, VAE_NAMES, VAE_DECODE_RULES, 0.0, "vae_decode")
    assert v.passed and v.max_error == 0.0 and v.coverage.nodes["unmatched"] == 0
    time_convs = [c for c in v.checks if c.module_id.endswith("time_conv")]
    assert len(time_convs) == (2 if latent[0] > 1 else 0)  # the first call skips them


def test_frames_and_the_output_conv_by_hand() -> None:
    """T latent frames decode to 1 + 4·(T−1) frames at 8× the latent size; conv_out maps 96 → 3."""
    t, h, w = 21, 60, 104
    rows = {r.module_id: r.cost for r in walk(build_vae_decode(SPEC, 1, t, h, w))}
    frames = 1 + 4 * (t - 1)
    assert rows["decoder.conv_out"].tensor_flops == 2 * frames * (8 * h) * (8 * w) * 3 * 96 * 27
    assert rows["clamp"].activation_bytes == frames * 3 * 8 * h * 8 * w * 4  # fp32 output
    # the first call runs the decoder's up-blocks at 1 frame; later ones at 1, 2, 4, 4 frames
    up0 = rows["decoder.up_blocks.0.resnets.0.conv1"].tensor_flops
    up3 = rows["decoder.up_blocks.3.resnets.1.conv1"].tensor_flops
    assert up0 == 2 * t * h * w * 384 * 384 * 27
    assert up3 == 2 * frames * (8 * h) * (8 * w) * 96 * 96 * 27


def test_a_bad_vae_config_names_the_field() -> None:
    with pytest.raises(ConfigError) as err:
        parse(VaeSpec, {**attrs.asdict(SPEC), "temperal_downsample": [True]}, "model.vae")
    assert err.value.field == "model.vae.temperal_downsample"


@pytest.fixture(scope="module")
def encoder() -> object:
    return build_vae_encode_module(SPEC)


def test_encoder_parameters_equal_the_real_module(encoder: object) -> None:
    vae = encoder.vae  # type: ignore[attr-defined]
    real = sum(p.numel() for m in (vae.encoder, vae.quant_conv) for p in m.parameters())
    assert build_vae_encode(SPEC, 1, 1, 16, 16).total.params == real == 53_596_928


@pytest.mark.parametrize("video", [(1, 16, 16), (9, 32, 32), (81, 480, 832)])  # image only; 2 calls; I2V 480p
def test_the_encode_agrees_exactly_with_flop_counter(encoder: object, video: tuple[int, int, int]) -> None:
    tree = build_vae_encode(SPEC, 1, *video)
    graph = capture_forward(encoder, vae_encode_inputs(SPEC, 1, video))  # type: ignore[arg-type]
    _, v = check_graph(graph, tree, VAE_NAMES, VAE_ENCODE_RULES, 0.0, "vae_encode")
    assert v.passed and v.max_error == 0.0 and v.coverage.nodes["unmatched"] == 0
    frames = 1 + (video[0] - 1) // 4  # one latent frame per call
    quant = {r.module_id: r.cost for r in walk(tree)}["quant_conv"]
    assert quant.tensor_flops == 2 * frames * (video[1] // 8) * (video[2] // 8) * 32 * 32


def test_a_wrong_rule_fails_the_decode_gate(decoder: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """A causal conv costed as 3×3 instead of 3×3×3: every such conv of the decoder fails, by name."""
    from ditmeter.analytic import registry
    from ditmeter.analytic.rules import dense

    def flat_kernel(**dims: object) -> object:
        if dims["kernel_volume"] == 27:
            dims = {**dims, "kernel_volume": 9}
        return dense.conv(**dims)  # type: ignore[arg-type]

    monkeypatch.setitem(registry.RULES, "conv", flat_kernel)
    latent = (2, 4, 4)
    graph = capture_forward(decoder, vae_decode_inputs(SPEC, 1, latent))  # type: ignore[arg-type]
    _, v = check_graph(
        graph, build_vae_decode(SPEC, 1, *latent), VAE_NAMES, VAE_DECODE_RULES, 0.05, "vae_decode"
    )
    failed = {c.module_id for c in v.failures}
    assert not v.passed
    assert {
        "vae_decode.decoder.conv_in",
        "vae_decode.decoder.mid_block.resnets.0.conv1",
        "vae_decode",
    } <= failed
    assert not any(
        m.endswith(("to_qkv", "proj", "time_conv")) for m in failed
    )  # 1×1 and 3×1×1 convs stay right
