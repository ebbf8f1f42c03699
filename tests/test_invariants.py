"""Invariants checked on the real model: its traced FLOPs scale as the maths says, the analytic
model agrees with the trace at arbitrary shapes, and the published tables add up."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import attrs
import pandas as pd
import pytest
from conftest import analyze, spec_and_workload
from hypothesis import given, settings
from hypothesis import strategies as st

from ditmeter.analytic.geometry import geometry as _geometry
from ditmeter.cli import main
from ditmeter.compare.check import check_graph
from ditmeter.config import load
from ditmeter.models.wan21.builders import build_diffusers_dit, diffusers_dit_inputs
from ditmeter.models.wan21.names import DIT_NAMES
from ditmeter.models.wan21.node_rules import DIT_RULES
from ditmeter.tracer.capture import capture_forward


def geometry(spec: object, workload: object) -> object:
    return _geometry(workload, spec.vae_stride, spec.patch_size)  # type: ignore[arg-type, attr-defined]


SPEC, BASE = spec_and_workload("wan2.1-t2v-1.3b", "w001-tiny")
SPEC14, _ = spec_and_workload("wan2.1-t2v-14b", "w001-tiny")
ONE_BLOCK = attrs.evolve(SPEC, num_layers=1)
ONE_BLOCK_DIT = {dtype: build_diffusers_dit(ONE_BLOCK, dtype) for dtype in ("bf16", "fp32")}

frames = st.integers(min_value=1, max_value=121)


def _runs_officially(size: int) -> bool:
    """The official code refuses an odd latent side (size // 8 odd; tests/test_geometry.py)."""
    return size // 8 % 2 == 0


sizes = st.integers(min_value=16, max_value=1280).filter(_runs_officially)
#: size steps that keep the latent side's parity (16 pixels: two latent rows)
steps = st.integers(0, 25).map(lambda n: 16 * n)


def _at(**changes: object) -> object:
    return analyze(SPEC, attrs.evolve(BASE, **changes))


def _traced(**changes: object) -> dict[str, tuple[int, int]]:
    """(analytic, measured) tensor FLOPs of every compared module of the one-block DiT on meta."""
    wl = attrs.evolve(BASE, **changes)
    a = analyze(ONE_BLOCK, wl)
    graph = capture_forward(
        ONE_BLOCK_DIT[wl.dtype], {**diffusers_dit_inputs(ONE_BLOCK, wl, a.geometry), "return_dict": False}
    )
    _, verdict = check_graph(graph, a.forward.tree, DIT_NAMES, DIT_RULES, 0.0, "dit")
    return {c.module_id: (c.analytic, c.measured) for c in verdict.checks}


def test_the_real_model_is_linear_in_batch_and_its_attention_quadratic_in_tokens() -> None:
    """FlopCounterMode on the real module: batch 2 doubles everything; twice the tokens (2 → 4 latent
    frames) is four times the self-attention core and twice the cross-attention core."""
    one, two = (
        _traced(num_frames=5, height=64, width=64),
        _traced(num_frames=5, height=64, width=64, batch_size=2),
    )
    assert {k: 2 * m for k, (_, m) in one.items()} == {k: m for k, (_, m) in two.items()}
    more = _traced(num_frames=13, height=64, width=64)
    assert more["dit.blocks.0.self_attn.attn_core"][1] == 4 * one["dit.blocks.0.self_attn.attn_core"][1]
    assert more["dit.blocks.0.cross_attn.attn_core"][1] == 2 * one["dit.blocks.0.cross_attn.attn_core"][1]


@settings(max_examples=8, deadline=None)
@given(
    batch=st.integers(1, 2),
    f=st.integers(1, 24),
    h=st.integers(16, 200).filter(_runs_officially),
    w=st.integers(16, 200).filter(_runs_officially),
    context=st.integers(1, 512),
    dtype=st.sampled_from(["bf16", "fp32"]),
)
def test_the_rules_agree_with_the_real_model_at_any_shape(
    batch: int, f: int, h: int, w: int, context: int, dtype: str
) -> None:
    """Sizes off the patch grid (floored), any frame count, context length, batch and dtype."""
    changes = {"batch_size": batch, "num_frames": f, "height": h, "width": w, "dtype": dtype}
    checks = _traced(**changes, context_len=context, text_len=min(context, BASE.text_len))
    assert {k: a for k, (a, _) in checks.items()} == {k: m for k, (_, m) in checks.items()}


@settings(max_examples=40, deadline=None)
@given(f=frames, h=sizes, w=sizes, df=st.integers(0, 40), dh=steps, dw=steps)
def test_monotonic_in_frames_and_resolution(f: int, h: int, w: int, df: int, dh: int, dw: int) -> None:
    small = _at(num_frames=f, height=h, width=w)
    big = _at(num_frames=f + df, height=h + dh, width=w + dw)
    for field in ("tensor_flops", "cuda_flops", "bytes_read", "bytes_written"):
        assert getattr(big.per_forward, field) >= getattr(small.per_forward, field)  # type: ignore[attr-defined]
    if big.geometry.tokens > small.geometry.tokens:  # type: ignore[attr-defined]
        assert big.per_forward.tensor_flops > small.per_forward.tensor_flops  # type: ignore[attr-defined]


def test_guidance_runs_a_second_forward_exactly_when_the_diffusers_pipeline_does() -> None:
    """diffusers' WanPipeline decides classifier-free guidance by ``guidance_scale > 1``."""
    from diffusers import WanPipeline

    for scale in (0.0, 1.0, 1.0001, 5.0):
        diffusers_cfg = WanPipeline.do_classifier_free_guidance.fget(SimpleNamespace(_guidance_scale=scale))  # type: ignore[attr-defined]
        w = attrs.evolve(BASE, guidance_scale=scale, pipeline="diffusers")
        assert w.guidance_forwards == (2 if diffusers_cfg else 1)
        # the official generate.py runs the conditional and the unconditional forward every step
        assert attrs.evolve(w, pipeline="official").guidance_forwards == 2


@pytest.mark.parametrize(("pipeline", "forwards"), [("official", 100), ("diffusers", 50)])
def test_forwards_per_video_at_guidance_one(pipeline: str, forwards: int) -> None:
    """T2V's 50 default steps at guidance_scale 1: 100 DiT forwards officially, 50 under diffusers."""
    cfg = load(["workload=480p-81f", "workload.guidance_scale=1", f"pipeline={pipeline}"])
    a = analyze(cfg.model, cfg.workload)
    assert (a.forwards_per_video, a.forward.runs_per_video) == (forwards, forwards)
    text = cfg.family.analyze(cfg.model, cfg.workload, ("text_encoder",)).stages[0]
    assert text.runs_per_video == forwards // 50  # the negative prompt is encoded only with guidance


def test_published_containers_are_the_sum_of_their_children(tmp_path: Path) -> None:
    """In modules.parquet as written (every stage, every block expanded), every container row's
    counts are the sum of its children's rows, and each stage's root the sum of its leaves."""
    assert main(["report", "model=wan2.1-i2v-14b-480p", "workload=w001-tiny", f"output_root={tmp_path}"]) == 0
    (table,) = tmp_path.glob("*/static_analysis/*/modules.parquet")
    modules = pd.read_parquet(table)
    fields = ["tensor_flops", "cuda_flops", "params", "bytes_read", "bytes_written"]
    children = modules.groupby("parent_id")[fields].sum()
    containers = modules[modules["kind"] != "leaf"].set_index("module_id")[fields]
    assert (children.loc[containers.index] == containers).all().all()
    leaves = modules[modules["kind"] == "leaf"].groupby("stage")[fields].sum()
    roots = modules[modules["parent_id"].isna()].set_index("stage")[fields]
    assert (leaves.loc[roots.index] == roots).all().all()
    assert set(roots.index) == {"text_encoder", "image_encoder", "vae_encode", "dit", "vae_decode"}


def test_geometry_matches_wan_facts() -> None:
    g480 = geometry(SPEC14, attrs.evolve(BASE, num_frames=81, height=480, width=832))
    g720 = geometry(SPEC14, attrs.evolve(BASE, num_frames=81, height=720, width=1280))
    assert (g480.latent_frames, g480.patch_height, g480.patch_width, g480.tokens) == (21, 30, 52, 32_760)
    assert g720.tokens == 21 * 45 * 80 == 75_600
    assert not g480.adjustments and not g720.adjustments


def test_frame_rounding_rules_disagree_as_documented() -> None:
    official = geometry(SPEC14, attrs.evolve(BASE, num_frames=16, pipeline="official"))
    diffusers = geometry(SPEC14, attrs.evolve(BASE, num_frames=16, pipeline="diffusers"))
    assert official.latent_frames == 4 and diffusers.latent_frames == 5
    assert [(a.field, a.requested, a.effective) for a in official.adjustments] == [("num_frames", 16, 13)]
    assert [(a.field, a.requested, a.effective) for a in diffusers.adjustments] == [("num_frames", 16, 17)]


def test_official_rule_floors_sizes_and_says_so() -> None:
    g = geometry(SPEC14, attrs.evolve(BASE, num_frames=81, height=500, width=836))
    assert (g.patch_height, g.patch_width) == (31, 52)
    assert {(a.field, a.requested, a.effective) for a in g.adjustments} == {
        ("height", 500, 496),
        ("width", 836, 832),
    }


def test_a_floored_size_reaches_every_stage_as_the_dit_sees_it() -> None:
    """Height 500 → latent 62 rows (31 patches): the VAE decodes 62 rows, 496 pixels."""
    spec, wl = spec_and_workload("wan2.1-t2v-1.3b", "480p-81f", "workload.height=500", "workload.width=836")
    a = analyze(spec, wl, ("dit", "vae_decode"))
    assert a.geometry.latent_shape == (21, 62, 104)
    decode = {r.module_id: r.cost for r in a.stages[-1].rows()}
    frames = 1 + 4 * 20
    assert decode["vae_decode.decoder.conv_out"].tensor_flops == 2 * frames * 496 * 832 * 3 * 96 * 27
