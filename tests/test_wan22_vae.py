"""The Wan2.2 VAE (TI2V-5B): analytic counts and peak live bytes equal the diffusers
AutoencoderKLWan(is_residual=True, patch_size=2) built on meta, call by call."""

from __future__ import annotations

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
from ditmeter.models.wan21.spec import VaeSpec
from ditmeter.models.wan22.names import VAE22_NAMES
from ditmeter.models.wan22.node_rules import VAE22_DECODE_RULES, VAE22_ENCODE_RULES
from ditmeter.models.wan22.vae import build_vae_decode, build_vae_encode
from ditmeter.models.wan22.vae_memory import decode_activation_bytes, encode_activation_bytes
from ditmeter.tracer.capture import capture_forward
from ditmeter.tracer.memory import peak_live_bytes
from ditmeter.validate import parse

SPEC = load(["model=wan2.2-ti2v-5b", "workload=ti2v-720p-121f"]).model.vae


@pytest.fixture(scope="module")
def decoder() -> object:
    return build_vae_decode_module(SPEC)


@pytest.fixture(scope="module")
def encoder() -> object:
    return build_vae_encode_module(SPEC)


def test_parameters_equal_the_real_module(decoder: object) -> None:
    """704,688,668 in all (WAN_FACTS): decoder + post_quant_conv, encoder + quant_conv."""
    vae = decoder.vae  # type: ignore[attr-defined]
    assert sum(p.numel() for p in vae.parameters()) == 704_688_668
    dec = sum(p.numel() for m in (vae.decoder, vae.post_quant_conv) for p in m.parameters())
    enc = sum(p.numel() for m in (vae.encoder, vae.quant_conv) for p in m.parameters())
    assert build_vae_decode(SPEC, 1, 1, 2, 2).total.params == dec == 555_051_580
    assert build_vae_encode(SPEC, 1, 1, 32, 32).total.params == enc == 149_637_088


@pytest.mark.parametrize("latent", [(1, 2, 2), (3, 2, 3)])  # the first call only; first + later calls
def test_every_decoder_module_agrees_exactly_with_flop_counter(
    decoder: object, latent: tuple[int, int, int]
) -> None:
    tree = build_vae_decode(SPEC, 1, *latent)
    graph = capture_forward(decoder, vae_decode_inputs(SPEC, 1, latent))  # type: ignore[arg-type]
    _, v = check_graph(graph, tree, VAE22_NAMES, VAE22_DECODE_RULES, 0.0, "vae_decode")
    assert v.passed and v.max_error == 0.0 and v.coverage.nodes["unmatched"] == 0
    time_convs = [c for c in v.checks if c.module_id.endswith("upsampler.time_conv")]
    assert len(time_convs) == (2 if latent[0] > 1 else 0)  # the first call skips them


@pytest.mark.parametrize("video", [(1, 64, 64), (9, 64, 96)])  # the image alone; 3 calls
def test_every_encoder_module_agrees_exactly_with_flop_counter(
    encoder: object, video: tuple[int, int, int]
) -> None:
    tree = build_vae_encode(SPEC, 1, *video)
    graph = capture_forward(encoder, vae_encode_inputs(SPEC, 1, video))  # type: ignore[arg-type]
    _, v = check_graph(graph, tree, VAE22_NAMES, VAE22_ENCODE_RULES, 0.0, "vae_encode")
    assert v.passed and v.max_error == 0.0 and v.coverage.nodes["unmatched"] == 0


def test_the_patches_and_widths_by_hand() -> None:
    """At 704×1280, 121 frames: 31 latent frames of 44×80; conv_out maps 256 → 12 channels (2×2
    RGB patches) at half the pixel size; the upsampler's 3×3 conv keeps the width (Wan2.1 halves
    it); the encoder's conv_in reads 12 channels at 352×640."""
    t, h, w = 31, 44, 80
    rows = {r.module_id: r.cost for r in walk(build_vae_decode(SPEC, 1, t, h, w))}
    frames = 1 + 4 * (t - 1)
    assert rows["decoder.conv_out"].tensor_flops == 2 * frames * 352 * 640 * 12 * 256 * 27
    later = 4 * 352 * 640  # the last upsampler runs on the 4 frames of each later call at 176×320 → 352×640
    first = 1 * 352 * 640
    assert (
        rows["decoder.up_blocks.2.upsampler.resample.1"].tensor_flops
        == 2 * (first + 30 * later) * 512 * 512 * 9
    )
    enc = {r.module_id: r.cost for r in walk(build_vae_encode(SPEC, 1, 1, 704, 1280))}
    assert enc["encoder.conv_in"].tensor_flops == 2 * 352 * 640 * 160 * 12 * 27
    assert enc["quant_conv"].tensor_flops == 2 * 44 * 80 * 96 * 96


@pytest.mark.parametrize("latent", [(1, 2, 2), (2, 2, 2), (4, 2, 2), (3, 2, 6)])
def test_decode_peak_equals_the_real_modules_tensor_lifetimes(
    decoder: object, latent: tuple[int, int, int]
) -> None:
    """The first call (one frame), the second (caches of one frame), later ones (the outputs so far
    and the previous chunk): the rule equals the live bytes of the real module's run."""
    measured = peak_live_bytes(decoder, vae_decode_inputs(SPEC, 1, latent))  # type: ignore[arg-type]
    assert decode_activation_bytes(SPEC, 1, *latent) == measured


@pytest.mark.parametrize("video", [(1, 64, 64), (5, 64, 64), (13, 64, 64), (9, 128, 64)])
def test_encode_peak_equals_the_real_modules_tensor_lifetimes(
    encoder: object, video: tuple[int, int, int]
) -> None:
    measured = peak_live_bytes(encoder, vae_encode_inputs(SPEC, 1, video))  # type: ignore[arg-type]
    assert encode_activation_bytes(SPEC, 1, *video) == measured


def test_a_wrong_rule_fails_the_decode_gate(decoder: object) -> None:
    """The Wan2.1 decoder's rules on the Wan2.2 VAE (halved upsampler widths, no residual blocks):
    the gate fails, naming the upsamplers, and the residual blocks' nodes stay unmatched."""
    from ditmeter.models.wan21.names import VAE_NAMES
    from ditmeter.models.wan21.node_rules import VAE_DECODE_RULES
    from ditmeter.models.wan21.vae import build_vae_decode as wan21_decode

    latent = (2, 2, 2)
    graph = capture_forward(decoder, vae_decode_inputs(SPEC, 1, latent))  # type: ignore[arg-type]
    _, v = check_graph(graph, wan21_decode(SPEC, 1, *latent), VAE_NAMES, VAE_DECODE_RULES, 0.05, "vae_decode")
    assert not v.passed and v.coverage.nodes["unmatched"] > 0
    assert "vae_decode.decoder.up_blocks.0.upsamplers.0.resample.1" in {c.module_id for c in v.failures}


def test_a_wrong_width_fails_the_decode_gate(decoder: object) -> None:
    """The decoder costed at the encoder's base width (160, not decoder_base_dim 256)."""
    import attrs

    latent = (2, 2, 2)
    graph = capture_forward(decoder, vae_decode_inputs(SPEC, 1, latent))  # type: ignore[arg-type]
    narrow = build_vae_decode(attrs.evolve(SPEC, decoder_base_dim=None), 1, *latent)
    _, v = check_graph(graph, narrow, VAE22_NAMES, VAE22_DECODE_RULES, 0.05, "vae_decode")
    assert not v.passed and "vae_decode.decoder.mid_block.attentions.0.to_qkv" in {
        c.module_id for c in v.failures
    }


@pytest.mark.parametrize(
    ("key", "value"), [("in_channels", 3), ("out_channels", 48), ("patch_size", 8), ("is_residual", "yes")]
)
def test_a_bad_vae_key_names_the_field(key: str, value: object) -> None:
    import attrs

    raw = {k: v for k, v in attrs.asdict(SPEC).items() if k != "dtype"}
    with pytest.raises(ConfigError) as err:
        parse(VaeSpec, {**raw, key: value}, "model.vae", dtype="fp32")
    assert err.value.field == f"model.vae.{key}"
