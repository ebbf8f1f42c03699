"""The eager kernel recipes against the kernels the real modules launch (``tracer/kernels.py``).

For a block of the DiT, the launches of the real module on meta (every aten op that moves data,
views and allocations dropped, SDPA as the flash kernel a GPU runs) must equal the recipes'
kernels summed over the block's leaves: the same (op, dtype, bytes) launches, exactly. Per block,
not per leaf: a block's casts sit at module boundaries the two sides may draw differently.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from ditmeter.analytic.eager import EAGER_DTYPE_BYTES, KernelCall, cast, eager_calls
from ditmeter.analytic.tree import walk
from ditmeter.compare.kernels import launched, recipe_launches
from ditmeter.compare.mapping import ZERO_OPS
from ditmeter.config import load
from ditmeter.models.wan21 import eager as wan_eager
from ditmeter.tracer.kernels import eager_launches, under


def _analytic_block(cfg, flavour: str) -> Counter[tuple[str, str, int]]:
    """The recipes summed over a block's leaves, as ``trace``'s gate sums them."""
    analysis = cfg.family.analyze(cfg.model, cfg.workload, ("dit",))
    rows = walk(analysis.forward.tree, expand=False)
    out = Counter(recipe_launches(rows, "blocks.*", flavour, "dit", cfg.workload.dtype))
    missing = [k[0] for k in out if k[0].startswith("<no recipe")]
    assert not missing, f"no eager recipe: {missing}"
    return out


def _captured_block(cfg, block: str = "blocks.1") -> Counter[tuple[str, str, int]]:
    module, inputs = cfg.family.references()["dit"].make(cfg.model, cfg.workload, cfg.geometry, "meta")
    launches = under(eager_launches(lambda: module(**inputs), ZERO_OPS), block)
    return Counter(launched((x.op, x.dtype, x.bytes) for x in launches))


def _diff(want: Counter, got: Counter) -> str:
    return f"missing from the recipes: {dict(got - want)}; extra in the recipes: {dict(want - got)}"


@pytest.mark.parametrize(
    "model, workload, launches",
    [
        ("wan2.1-t2v-1.3b", "w001-tiny", 88),
        ("wan2.1-t2v-1.3b", "w001-tiny workload.dtype=fp16", 88),  # fp16: the kernels in fp16
        ("wan2.1-t2v-14b", "w001-tiny", 88),
        ("wan2.1-i2v-14b-480p", "w001-tiny", 100),  # the image attention: two SDPAs and their sum
        ("wan2.2-ti2v-5b", "w001-tiny", 88),  # per-token modulation (expand_timesteps)
    ],
)
def test_diffusers_block_kernels_equal_the_real_modules(model: str, workload: str, launches: int) -> None:
    keys = [f"model={model}", *f"workload={workload}".split(), "pipeline=diffusers", "model.num_layers=2"]
    cfg = load(keys)
    want, got = _analytic_block(cfg, "diffusers"), _captured_block(cfg)
    assert want == got, _diff(want, got)
    assert sum(got.values()) == launches  # an eager block (the fused model: one kernel per leaf)


def test_a_wrong_recipe_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """RMSNorm without its input cast (a recipe that forgot ``x.float()``) no longer matches."""
    cfg = load(["model=wan2.1-t2v-1.3b", "workload=w001-tiny", "pipeline=diffusers", "model.num_layers=2"])
    from ditmeter.analytic import eager

    right = eager.RECIPES[("diffusers", "dit", "rms_norm")]

    def forgot_the_cast(**dims: int) -> tuple[KernelCall, ...]:
        return right(**dims)[1:]

    monkeypatch.setitem(eager.RECIPES, ("diffusers", "dit", "rms_norm"), forgot_the_cast)
    assert _analytic_block(cfg, "diffusers") != _captured_block(cfg)


def test_cast_and_rope_by_hand() -> None:
    """A cast reads one dtype and writes the other; official RoPE runs in float64 (8-byte values)."""
    assert cast(1000, "fp32", "bf16").bytes == 1000 * 4 + 1000 * 2
    assert EAGER_DTYPE_BYTES["fp64"] == 8
    calls = eager_calls(
        "official",
        "dit",
        "blocks.*.self_attn.rope",
        "rope",
        {"tensors": 2, "rows": 10, "heads": 2, "head_dim": 8, "act_bytes": 2, "table_bytes": 4},
        "bf16",
    )
    assert calls is not None
    # q and k: to float64, table cat, complex product, cat, stack, to float32 = 6 kernels each
    assert sum(c.count for c in calls) == 12
    product = next(c for c in calls if c.op == "mul")
    e = 10 * 2 * 8
    assert product.bytes == e * 8 + 10 * 4 * 16 + e * 8  # x and the product in complex128
    assert wan_eager.FP32_INPUT  # the official linears that cast their fp32 input


def _official_block(cfg, block: str = "blocks.1") -> Counter[tuple[str, str, int]]:
    """The official ``WanModel`` (the installed Wan2.2 code) on CPU tensors under autocast as
    generate.py runs it; ``flash_attention`` (CUDA only) stubbed by an allocation, so its own
    kernels are left out on both sides."""
    import torch

    from ditmeter.models.wan21.builders import build_official_dit
    from ditmeter.models.wan21.official import official_model_module
    from ditmeter.tracer.kernels import cuda_autocast_on_cpu

    m, g = cfg.model, cfg.geometry
    torch.manual_seed(0)
    model = build_official_dit(m, "cpu").requires_grad_(False)
    x = [torch.randn(m.in_dim, *g.latent_shape)]
    context = [torch.randn(g.context_len, m.text_dim, dtype=torch.bfloat16)]  # T5's bf16 output
    t = torch.tensor([500.0])
    module = official_model_module()
    kept = module.flash_attention
    module.flash_attention = lambda q, k, v, **kw: torch.empty_like(q)
    try:
        with cuda_autocast_on_cpu():
            launches = under(eager_launches(lambda: model(x, t, context, g.tokens), ZERO_OPS), block)
    finally:
        module.flash_attention = kept
    return Counter((x.op, x.dtype, x.bytes) for x in launches)


def _official_recipes(cfg) -> Counter[tuple[str, str, int]]:
    """The recipes of a block's leaves but the attention core (see ``_official_block``)."""
    analysis = cfg.family.analyze(cfg.model, cfg.workload, ("dit",))
    out: Counter[tuple[str, str, int]] = Counter()
    for row in walk(analysis.forward.tree, expand=False):
        if row.kind != "leaf" or not row.module_id.startswith("blocks.*.") or row.rule == "attention_core":
            continue
        calls = eager_calls("official", "dit", row.module_id, row.rule, dict(row.dims), cfg.workload.dtype)
        assert calls is not None, f"no eager recipe for {row.rule} ({row.module_id})"
        for c in calls:
            out[(c.op, c.dtype, c.bytes)] += c.count
    return out


def test_official_block_kernels_equal_the_real_modules_under_autocast() -> None:
    """Wan2.2 TI2V-5B's official block (per-token modulation) with fp32 weights under autocast: the
    weight, bias and fp32-input casts of every Linear, fp32 norms whose product with the fp32
    weight promotes, float64 RoPE with its cat/stack copies, fp32 residuals: exactly the recipes'
    (every leaf but the attention core, whose flash_attention runs CUDA only)."""
    cfg = load(["model=wan2.2-ti2v-5b", "workload=w001-tiny", "model.num_layers=2"])
    got = _official_block(cfg)
    want = _official_recipes(cfg)
    assert want == got, _diff(want, got)
    assert sum(got.values()) > 70


def test_a_wrong_official_recipe_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """RoPE without its ``stack`` copy (a recipe read too quickly) no longer matches the official code."""
    from ditmeter.analytic import eager

    cfg = load(["model=wan2.2-ti2v-5b", "workload=w001-tiny", "model.num_layers=2"])
    right = eager.RECIPES[("official", "dit", "rope")]

    def no_stack(**dims: int) -> tuple[KernelCall, ...]:
        return tuple(c for c in right(**dims) if c.op != "stack")

    monkeypatch.setitem(eager.RECIPES, ("official", "dit", "rope"), no_stack)
    assert _official_recipes(cfg) != _official_block(cfg)


def test_trace_gates_the_eager_kernels_and_fails_on_a_wrong_recipe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``trace`` checks one DiT block's recipes against the real block's launches: exact on the
    real recipes (and ``compare`` re-reads the check); a recipe that forgot RMSNorm's input cast
    fails the gate (exit 1) naming the launch that differs."""
    from ditmeter.analytic import eager
    from ditmeter.cli import main

    base = ["trace", "model=wan2.1-t2v-1.3b", "workload=w001-tiny", "model.num_layers=2", "stages=[dit]"]
    assert main([*base, f"output_root={tmp_path}", "run_id=right"]) == 0
    line = "eager kernels of blocks.1 of the traced (diffusers) module: 88 launches, exactly the recipes'"
    assert line in capsys.readouterr().out
    assert main(["compare", f"output_root={tmp_path}", "run_id=right"]) == 0
    right = eager.RECIPES[("diffusers", "dit", "rms_norm")]
    monkeypatch.setitem(eager.RECIPES, ("diffusers", "dit", "rms_norm"), lambda **d: right(**d)[1:])
    assert main([*base, f"output_root={tmp_path}", "run_id=wrong"]) == 1
    out = capsys.readouterr().out
    assert "eager kernel differs: blocks.1: _to_copy fp32" in out
    assert "eager kernels of blocks.1 differ" in out


def test_host_bound_block_at_tiny_shapes_by_hand() -> None:
    """At 4 tokens and an 8-token context the GPU waits on the host: each of a diffusers block's 88
    launches takes its 5 µs launch (Hopper's table: HTA's 5-20 µs), except the two FFN GEMMs, which
    read their 27.5 MB of bf16 weights at 75% of 3.35 TB/s (11 µs each)."""
    from ditmeter.commands.report import analyze

    tiny = ["workload.num_frames=1", "workload.height=32", "workload.width=32", "workload.context_len=8"]
    rest = ["workload.text_len=8", "device=h100-sxm", "pipeline=diffusers", "stages=[dit]"]
    cfg = load(["model=wan2.1-t2v-1.3b", "workload=w001-tiny", *tiny, *rest], "report")
    analysis, view = analyze(cfg)
    assert analysis.geometry.tokens == 4 and view.prediction is not None
    block = view.prediction.modules["dit.blocks.0"]
    bandwidth = 3350e9 * 0.75
    ffn0 = (4 * 1536 + 1536 * 8960 + 8960 + 4 * 8960) * 2 / bandwidth
    ffn2 = (4 * 8960 + 8960 * 1536 + 1536 + 4 * 1536) * 2 / bandwidth
    assert block.predicted_s == pytest.approx(86 * 5e-6 + ffn0 + ffn2, rel=1e-9)
    assert block.overhead_s == pytest.approx(88 * 5e-6) and block.bound == "overhead"
