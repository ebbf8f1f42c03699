"""The eager recipes of UMT5, CLIP and the Wan-VAE against the kernels the real modules launch.

Per repeated unit (a UMT5 block, a CLIP layer, the VAE decoder's mid block and first up block),
and for the whole VAE decode and encode over three calls each (every call's kernels):
the launches of the real module (``tracer/kernels.py``: views and allocations dropped) equal the
recipes summed over the unit's analytic leaves, as a Counter of (op, dtype, bytes), exactly.

Two documented adjustments of the capture, never of the recipes:

* an attention kernel is keyed ``attention``; SDPA with a float mask (UMT5) or in fp32 (CLIP) runs
  the memory-efficient kernel on a GPU, which writes no log-sum-exp without grad; the CPU kernel the
  capture records writes one ([batch, heads, q] fp32): its bytes are taken off.
* the VAE's fp32 SDPA runs as that kernel on meta (meta picks the math path otherwise); its RNG
  seed and offset (two int64 scalars) are taken off.

The UMT5 blocks run on small CPU tensors with a padded prompt's mask (the pipelines pass one; its
construction reads the mask's values). Not compared: transformers' mask construction before the
blocks (some fifteen tiny int/bool kernels and a host sync per encode) and what lies outside the
units (CLIP's stem, whose ``pos_embedding`` leaf has no dims).
"""

from __future__ import annotations

import importlib
import sys
import types
from collections import Counter
from typing import Any

import pytest
import torch
from torch.overrides import TorchFunctionMode

import ditmeter.models.wan21.eager_encoders
import ditmeter.models.wan21.eager_vae  # noqa: F401
from ditmeter.analytic import eager
from ditmeter.analytic.eager import KernelCall
from ditmeter.analytic.kernel_time import per_call_kernels
from ditmeter.analytic.tree import walk
from ditmeter.compare.mapping import ZERO_OPS
from ditmeter.config import load
from ditmeter.models.wan21.spec import WanModelSpec
from ditmeter.tracer.kernels import Launch, eager_launches, under

Key = tuple[str, str, int]
T5 = [
    "model=wan2.1-t2v-1.3b",
    "workload=w001-tiny",
    "model.text_encoder.num_layers=2",
    "model.text_encoder.d_model=64",
    "model.text_encoder.d_kv=16",
    "model.text_encoder.num_heads=4",
    "model.text_encoder.d_ff=96",
    "model.text_encoder.vocab_size=1000",
]
CLIP = [
    "model=wan2.1-i2v-14b-480p",
    "workload=w001-tiny",
    "pipeline=diffusers",
    "model.image_encoder.num_hidden_layers=2",
    "model.image_encoder.hidden_size=64",
    "model.image_encoder.intermediate_size=128",
    "model.image_encoder.num_attention_heads=4",
    "model.image_encoder.image_size=56",
]
VAE = ["model=wan2.1-i2v-14b-480p", "workload=w001-tiny", "workload.num_frames=1"]  # one decoder call
#: Three decoder calls (3 latent frames) and three encoder calls (9 frames): the first, the second
#: (each causal cache holds the first call's one frame, the upsamplers' time convs first run) and a
#: later one (two cached frames), each with its own kernels.
VAE_CALLS = ["model=wan2.1-i2v-14b-480p", "workload=w001-tiny", "workload.num_frames=9"]


def _recipes(cfg: Any, stage: str, flavour: str, prefix: str) -> Counter[Key]:
    analysis = cfg.family.analyze(cfg.model, cfg.workload, (stage,))
    tree = next(s for s in analysis.every_stage if s.name == stage).tree
    out: Counter[Key] = Counter()
    act = "fp16" if flavour == "official" and stage == "image_encoder" else "bf16"
    for row in walk(tree, expand=False):
        if row.kind != "leaf" or not row.module_id.startswith(prefix):
            continue
        calls = per_call_kernels(flavour, stage, row.module_id, row, act)  # each call's (the VAE)
        assert calls is not None, f"no eager recipe for {row.rule} ({row.module_id})"
        for c in calls:
            out[("attention" if c.kind == "attention" else c.op, c.dtype, c.bytes)] += c.count
    return out


def _keyed(launches: list[Launch], not_data: int = 0) -> Counter[Key]:
    return Counter(
        ("attention", x.dtype, x.bytes - not_data) if "attention" in x.op else (x.op, x.dtype, x.bytes)
        for x in launches
    )


def _diff(want: Counter[Key], got: Counter[Key]) -> str:
    return f"missing from the recipes: {dict(got - want)}; extra in the recipes: {dict(want - got)}"


def _prompt() -> tuple[torch.Tensor, torch.Tensor]:
    """512 token ids of a 64-token prompt and its padding mask (as both pipelines pad it)."""
    torch.manual_seed(0)
    mask = torch.zeros(1, 512, dtype=torch.long)
    mask[:, :64] = 1
    return torch.randint(0, 1000, (1, 512)), mask


def _t5_diffusers(cfg: Any) -> Counter[Key]:
    module, _ = cfg.family.references()["text_encoder"].make(cfg.model, cfg.workload, cfg.geometry, "cpu")
    ids, mask = _prompt()
    launches = under(eager_launches(lambda: module(ids, mask), ZERO_OPS), "encoder.block.1")
    t5 = cfg.model.text_encoder
    return _keyed(launches, not_data=t5.num_heads * 512 * 4)


def _official_t5_module() -> Any:
    """``wan/modules/t5.py`` alone: its tokenizer module stubbed (ftfy), and the CUDA device its
    ``T5EncoderModel`` takes as a default argument at import answered with 0."""
    from ditmeter.models.wan21.official import _PACKAGE, official_model_module

    official_model_module()  # registers the stub package
    tokenizers = types.ModuleType(f"{_PACKAGE}.modules.tokenizers")
    tokenizers.HuggingfaceTokenizer = None  # type: ignore[attr-defined]
    sys.modules.setdefault(tokenizers.__name__, tokenizers)
    real = torch.cuda.current_device
    torch.cuda.current_device = lambda: 0
    try:
        return importlib.import_module(f"{_PACKAGE}.modules.t5")
    finally:
        torch.cuda.current_device = real


def _t5_official(cfg: Any) -> Counter[Key]:
    t5, spec = _official_t5_module(), cfg.model.text_encoder
    torch.manual_seed(0)
    model = t5.T5Encoder(
        vocab=spec.vocab_size,
        dim=spec.d_model,
        dim_attn=spec.num_heads * spec.d_kv,
        dim_ffn=spec.d_ff,
        num_heads=spec.num_heads,
        num_layers=spec.num_layers,
        num_buckets=spec.relative_attention_num_buckets,
        shared_pos=False,  # umt5_xxl
    )
    model = model.to(torch.bfloat16).eval().requires_grad_(False)
    ids, mask = _prompt()
    return _keyed(under(eager_launches(lambda: model(ids, mask), ZERO_OPS), "blocks.1"))


def test_umt5_block_kernels_equal_transformers() -> None:
    """A transformers UMT5 block with the padding mask: 8-kernel RMSNorms, 20 bucket kernels, the
    mask folded into the bias, SDPA's memory-efficient kernel, 8-kernel tanh GELU."""
    cfg = load([*T5, "pipeline=diffusers"])
    want, got = _recipes(cfg, "text_encoder", "diffusers", "blocks.*."), _t5_diffusers(cfg)
    assert want == got, _diff(want, got)
    assert sum(got.values()) > 50


def test_umt5_block_kernels_equal_the_official_code() -> None:
    """The official ``T5Encoder`` block (the installed Wan2.2 ``t5.py``) in bf16, as generate.py
    runs it outside autocast: its bias by new_zeros/add_/masked_fill_, einsum scores, fp32 softmax."""
    cfg = load([*T5, "pipeline=official"])
    want, got = _recipes(cfg, "text_encoder", "official", "blocks.*."), _t5_official(cfg)
    assert want == got, _diff(want, got)
    assert sum(got.values()) > 60


def test_a_wrong_umt5_recipe_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """An official attention that forgot the fp32 softmax's casts no longer matches."""
    cfg = load([*T5, "pipeline=official"])
    key = ("official", "text_encoder", "attention_core")
    right = eager.RECIPES[key]

    def no_casts(**dims: Any) -> tuple[KernelCall, ...]:
        return tuple(c for c in right(**dims) if c.op != "_to_copy")

    monkeypatch.setitem(eager.RECIPES, key, no_casts)
    assert _recipes(cfg, "text_encoder", "official", "blocks.*.") != _t5_official(cfg)


def test_clip_layer_kernels_equal_transformers() -> None:
    """A transformers CLIP layer in fp32 (diffusers' pipeline): 3 q/k/v GEMMs, one attention."""
    cfg = load(CLIP)
    module, inputs = cfg.family.references()["image_encoder"].make(
        cfg.model, cfg.workload, cfg.geometry, "cpu"
    )
    launches = under(eager_launches(lambda: module(**inputs), ZERO_OPS), "encoder.layers.1")
    assert isinstance(cfg.model, WanModelSpec) and cfg.model.image_encoder is not None
    spec = cfg.model.image_encoder
    got = _keyed(launches, not_data=spec.num_attention_heads * spec.tokens * 4)
    want = _recipes(cfg, "image_encoder", "diffusers", "transformer.*.")
    assert want == got, _diff(want, got)
    assert sum(got.values()) == 12


def test_official_clip_layer_by_hand() -> None:
    """Read, not captured: an fp16 layer is 2 LayerNorms of 5 kernels, 4 GEMMs, 8 varlen-offset
    kernels and FlashAttention-2, 2 adds, a GELU; ``post_norm`` runs nothing."""
    cfg = load([*CLIP[:2], "pipeline=official", *CLIP[3:]])
    calls = _recipes(cfg, "image_encoder", "official", "transformer.*.")
    assert sum(calls.values()) == 10 + 4 + 9 + 2 + 1
    assert {dtype for _, dtype, _ in calls} >= {"fp16", "fp32"}
    assert not _recipes(cfg, "image_encoder", "official", "post_norm")


#: The memory-efficient kernel's RNG seed and offset (two int64 scalars): not data.
RNG = 2 * 8


class _EfficientSDPA(TorchFunctionMode):
    """fp32 SDPA without a mask as a GPU runs it: the memory-efficient kernel (meta has one)."""

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func is torch.nn.functional.scaled_dot_product_attention and args[0].dtype == torch.float32:
            q, k, v = args[:3]
            return torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, None, False)[0]
        return func(*args, **kwargs)


def _vae_decode_diffusers(cfg: Any) -> list[Launch]:
    module, inputs = cfg.family.references()["vae_decode"].make(cfg.model, cfg.workload, cfg.geometry, "meta")

    def run() -> None:
        with _EfficientSDPA():
            module(**inputs)

    return eager_launches(run, ZERO_OPS)


@pytest.mark.parametrize("unit", ["mid_block", "up_blocks.0"])
def test_vae_decoder_unit_kernels_equal_diffusers(unit: str) -> None:
    """diffusers' decoder (one latent frame: one decoder call) on meta: the mid block (two resnets
    and the attention) and the first up block (three resnets and the spatial upsampler)."""
    cfg = load([*VAE, "pipeline=diffusers"])
    got = _keyed(under(_vae_decode_diffusers(cfg), f"vae.decoder.{unit}"), not_data=RNG)
    want = _recipes(cfg, "vae_decode", "diffusers", f"decoder.{unit}.")
    assert want == got, _diff(want, got)
    assert sum(got.values()) > 30


def test_a_wrong_vae_recipe_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """A causal conv without its ``F.pad`` copy no longer matches."""
    cfg = load([*VAE, "pipeline=diffusers"])
    key = ("diffusers", "vae_decode", "conv")
    right = eager.RECIPES[key]

    def no_pad(**dims: Any) -> tuple[KernelCall, ...]:
        return tuple(c for c in right(**dims) if c.op != "constant_pad_nd")

    monkeypatch.setitem(eager.RECIPES, key, no_pad)
    got = _keyed(under(_vae_decode_diffusers(cfg), "vae.decoder.mid_block"), not_data=RNG)
    assert _recipes(cfg, "vae_decode", "diffusers", "decoder.mid_block.") != got


def _rearrange(x: torch.Tensor, pattern: str, t: int = 1) -> torch.Tensor:
    """The two ``einops.rearrange`` patterns of ``vae2_1.py`` as einops runs them (a permute and a
    reshape; einops is not installed here)."""
    if pattern.startswith("b c t h w"):
        b, c, frames, h, w = x.shape
        return x.permute(0, 2, 1, 3, 4).reshape(b * frames, c, h, w)
    bt, c, h, w = x.shape
    return x.reshape(bt // t, t, c, h, w).permute(0, 2, 1, 3, 4)


def _official_vae_decode(cfg: Any) -> list[Launch]:
    """The official ``WanVAE_.decode`` (the installed ``vae2_1.py``) on meta, in fp32."""
    from ditmeter.models.wan21.official import _PACKAGE, official_model_module

    official_model_module()
    shim = types.ModuleType("einops")
    shim.rearrange = _rearrange  # type: ignore[attr-defined]
    kept = sys.modules.get("einops")
    sys.modules["einops"] = kept or shim
    try:  # vae2_1 binds ``rearrange`` at import: the shim is needed only then
        vae2_1 = importlib.import_module(f"{_PACKAGE}.modules.vae2_1")
    finally:
        if kept is None:
            del sys.modules["einops"]
    spec = cfg.model.vae
    with torch.device("meta"):
        model = vae2_1.WanVAE_(
            dim=spec.base_dim,
            z_dim=spec.z_dim,
            dim_mult=list(spec.dim_mult),
            num_res_blocks=spec.num_res_blocks,
            temperal_downsample=list(spec.temperal_downsample),
        ).eval()
        z = torch.empty(1, spec.z_dim, *cfg.geometry.latent_shape)
        scale = [torch.empty(spec.z_dim), torch.empty(spec.z_dim)]

    def run() -> None:
        with _EfficientSDPA():
            model.decode(z, scale)

    return eager_launches(run, ZERO_OPS)


@pytest.mark.parametrize(
    "unit, official",
    [("mid_block", ("middle",)), ("up_blocks.0", tuple(f"upsamples.{i}" for i in range(4)))],
)
def test_vae_decoder_unit_kernels_equal_the_official_code(unit: str, official: tuple[str, ...]) -> None:
    """The official decoder's ``middle`` and its first four ``upsamples`` (three resnets and the
    resampler: diffusers' ``up_blocks.0``; paths as the tracker names them inside ``Decoder3d``)
    launch what the official recipes say."""
    cfg = load([*VAE, "pipeline=official"])
    launches = _official_vae_decode(cfg)
    got = _keyed([x for prefix in official for x in under(launches, prefix)], not_data=RNG)
    want = _recipes(cfg, "vae_decode", "official", f"decoder.{unit}.")
    assert want == got, _diff(want, got)


def test_vae_decode_over_three_calls_equals_diffusers() -> None:
    """diffusers' whole decode of 3 latent frames on meta: every decoder call's kernels (the second
    call's caches of one frame joined to two, the upsamplers' ``Rep`` zeros and first time convs, a
    later call's cache ``cat`` before each pad and the ``stack`` of the time halves), the output
    ``cat`` per call and the clamp: 1,086 launches, each (op, dtype, bytes) as the recipes say."""
    cfg = load([*VAE_CALLS, "pipeline=diffusers"])
    got = _keyed(_vae_decode_diffusers(cfg), not_data=RNG)
    want = _recipes(cfg, "vae_decode", "diffusers", "")
    assert want == got, _diff(want, got)
    assert sum(got.values()) == 1086
    assert ("zeros_like", "fp32", 2 * 384 * 32 * 32 * 4) in got  # the Rep marker's zero frame


def test_vae_decode_calls_take_the_second_calls_own_kernels() -> None:
    """The wrong rule: later calls costed as the first (no cache ``cat``, the full time pad) no
    longer match the three calls."""
    from ditmeter.models.wan21 import vae

    cfg = load([*VAE_CALLS, "pipeline=diffusers"])
    got = _keyed(under(_vae_decode_diffusers(cfg), "vae.decoder.mid_block"), not_data=RNG)
    real = vae._Decode.cached
    try:
        vae._Decode.cached = lambda self: 0  # type: ignore[method-assign]
        wrong = _recipes(cfg, "vae_decode", "diffusers", "decoder.mid_block.")
    finally:
        vae._Decode.cached = real  # type: ignore[method-assign]
    assert wrong != got
    assert _recipes(cfg, "vae_decode", "diffusers", "decoder.mid_block.") == got


def test_vae_encode_over_three_calls_equals_diffusers() -> None:
    """diffusers' whole encode of 9 frames (calls of 1, 4 and 4 frames) on meta: the stride-2
    downsamples (``ZeroPad2d`` then the conv over the padded frames), the time convs over the
    cached last frame, the latents' ``cat`` per call and the posterior."""
    cfg = load([*VAE_CALLS, "pipeline=diffusers"])
    module, inputs = cfg.family.references()["vae_encode"].make(cfg.model, cfg.workload, cfg.geometry, "meta")

    def run() -> None:
        with _EfficientSDPA():
            module(**inputs)

    got = _keyed(eager_launches(run, ZERO_OPS), not_data=RNG)
    want = _recipes(cfg, "vae_encode", "diffusers", "")
    assert want == got, _diff(want, got)
    assert sum(got.values()) == 820


@pytest.mark.parametrize(
    "unit, official",
    [
        ("mid_block", ("middle",)),
        ("up_blocks.0", tuple(f"upsamples.{i}" for i in range(4))),
        ("up_blocks.1", tuple(f"upsamples.{i}" for i in range(4, 8))),
    ],
)
def test_official_vae_decoder_units_over_three_calls(unit: str, official: tuple[str, ...]) -> None:
    """The official ``vae2_1.py`` decoder over 3 latent frames: its middle, and its first two up
    stages (the second changes channels: each of a resnet's two SiLUs and cache updates is its own
    kernel at its own channels) launch what the recipes say for every call."""
    cfg = load([*VAE_CALLS, "pipeline=official"])
    launches = _official_vae_decode(cfg)
    got = _keyed([x for prefix in official for x in under(launches, prefix)], not_data=RNG)
    want = _recipes(cfg, "vae_decode", "official", f"decoder.{unit}.")
    assert want == got, _diff(want, got)


@pytest.mark.parametrize(
    ("stage", "model", "launches"),
    [("vae_decode", "wan2.2-ti2v-5b", 1132), ("vae_encode", "wan2.2-ti2v-5b-i2v", 272)],
)
def test_wan22_vae_equals_diffusers(stage: str, model: str, launches: int) -> None:
    """TI2V-5B's residual VAE (diffusers' ``AutoencoderKLWan`` with ``is_residual``) on meta: the
    decode of 3 latent frames over its three calls (each up block's input ``clone``, DupUp3D's
    repeat and permute copies, the unpatchify copy) and the encode of the conditioning image
    (the patchify copy, AvgDown3D's pad, permuted copy and mean; the last block's factor 1
    permutes nothing)."""
    cfg = load([f"model={model}", "workload=w001-tiny", "workload.num_frames=9", "pipeline=diffusers"])
    module, inputs = cfg.family.references()[stage].make(cfg.model, cfg.workload, cfg.geometry, "meta")

    def run() -> None:
        with _EfficientSDPA():
            module(**inputs)

    got = _keyed(eager_launches(run, ZERO_OPS), not_data=RNG)
    want = _recipes(cfg, stage, "diffusers", "")
    assert want == got, _diff(want, got)
    assert sum(got.values()) == launches
