"""Invariants of the analytic model: scaling laws that any correct rule set obeys."""

from __future__ import annotations

import attrs
from conftest import analyze, spec_and_workload
from hypothesis import given, settings
from hypothesis import strategies as st

from ditmeter.analytic.cost import COST_FIELDS, total
from ditmeter.analytic.geometry import geometry as _geometry
from ditmeter.analytic.tree import walk


def geometry(spec: object, workload: object) -> object:
    return _geometry(workload, spec.vae_stride, spec.patch_size)  # type: ignore[arg-type, attr-defined]


SPEC, BASE = spec_and_workload("wan2.1-t2v-1.3b", "w001-tiny")
SPEC14, _ = spec_and_workload("wan2.1-t2v-14b", "w001-tiny")

frames = st.integers(min_value=1, max_value=121)
sizes = st.integers(min_value=16, max_value=1280)


def _at(**changes: object) -> object:
    return analyze(SPEC, attrs.evolve(BASE, **changes))


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(min_value=2, max_value=8), f=frames, h=sizes, w=sizes)
def test_flops_are_linear_in_batch(batch: int, f: int, h: int, w: int) -> None:
    one = _at(num_frames=f, height=h, width=w).per_forward  # type: ignore[attr-defined]
    many = _at(num_frames=f, height=h, width=w, batch_size=batch).per_forward  # type: ignore[attr-defined]
    assert many.tensor_flops == batch * one.tensor_flops
    assert many.cuda_flops == batch * one.cuda_flops
    assert many.params == one.params


@settings(max_examples=25, deadline=None)
@given(steps=st.integers(min_value=1, max_value=200), guidance=st.sampled_from([1.0, 5.0]))
def test_video_is_linear_in_steps_and_guidance(steps: int, guidance: float) -> None:
    a = _at(num_inference_steps=steps, guidance_scale=guidance)
    fwd = 2 if guidance > 1 else 1
    for f in ("tensor_flops", "cuda_flops", "bytes_read", "bytes_written"):
        assert getattr(a.per_video, f) == steps * fwd * getattr(a.per_forward, f)  # type: ignore[attr-defined]
    assert a.per_video.params == a.per_forward.params  # type: ignore[attr-defined]


@settings(max_examples=40, deadline=None)
@given(f=frames, h=sizes, w=sizes, df=st.integers(0, 40), dh=st.integers(0, 400), dw=st.integers(0, 400))
def test_monotonic_in_frames_and_resolution(f: int, h: int, w: int, df: int, dh: int, dw: int) -> None:
    small = _at(num_frames=f, height=h, width=w)
    big = _at(num_frames=f + df, height=h + dh, width=w + dw)
    for field in ("tensor_flops", "cuda_flops", "bytes_read", "bytes_written"):
        assert getattr(big.per_forward, field) >= getattr(small.per_forward, field)  # type: ignore[attr-defined]
    if big.geometry.tokens > small.geometry.tokens:  # type: ignore[attr-defined]
        assert big.per_forward.tensor_flops > small.per_forward.tensor_flops  # type: ignore[attr-defined]


def _self_attn_core(tokens_frames: int) -> int:
    a = analyze(SPEC14, attrs.evolve(BASE, num_frames=tokens_frames, height=480, width=832))
    rows = {r.module_id: r for r in walk(a.forward.tree)}
    return rows["blocks.0.self_attn.attn_core"].cost.tensor_flops


def test_attention_core_is_quadratic_in_tokens() -> None:
    # 5 frames → 2 latent frames, 13 frames → 4: twice the tokens, four times the work.
    two, four = _self_attn_core(5), _self_attn_core(13)
    assert four == 4 * two
    # and the cross-attention core is linear in tokens
    a2 = analyze(SPEC14, attrs.evolve(BASE, num_frames=5, height=480, width=832))
    a4 = analyze(SPEC14, attrs.evolve(BASE, num_frames=13, height=480, width=832))
    c2 = {r.module_id: r.cost for r in walk(a2.forward.tree)}["blocks.3.cross_attn.attn_core"]
    c4 = {r.module_id: r.cost for r in walk(a4.forward.tree)}["blocks.3.cross_attn.attn_core"]
    assert c4.tensor_flops == 2 * c2.tensor_flops


def test_totals_equal_the_sum_of_leaves_in_the_expanded_tree() -> None:
    a = analyze(SPEC14, attrs.evolve(BASE, num_frames=81, height=720, width=1280))
    rows = list(walk(a.forward.tree))
    leaves = [r.cost for r in rows if r.kind == "leaf"]
    assert len([r for r in rows if r.module_id.startswith("blocks.") and r.module_id.count(".") == 1]) == 40
    assert total(leaves) == a.per_forward
    # every composite equals the sum of its direct children
    children: dict[str, list] = {}
    for r in rows:
        if r.parent_id is not None:
            children.setdefault(r.parent_id, []).append(r.cost)
    for r in rows:
        if r.kind != "leaf":
            assert total(children[r.module_id]) == r.cost, r.module_id
    by_cat = a.by_category()
    for f in COST_FIELDS:
        assert sum(getattr(c, f) for c in by_cat.values()) == getattr(a.per_forward, f)


def test_geometry_matches_wan_facts() -> None:
    g480 = geometry(SPEC14, attrs.evolve(BASE, num_frames=81, height=480, width=832))
    g720 = geometry(SPEC14, attrs.evolve(BASE, num_frames=81, height=720, width=1280))
    assert (g480.latent_frames, g480.patch_height, g480.patch_width, g480.tokens) == (21, 30, 52, 32_760)
    assert g720.tokens == 21 * 45 * 80 == 75_600
    assert not g480.adjustments and not g720.adjustments


def test_frame_rounding_rules_disagree_as_documented() -> None:
    official = geometry(SPEC14, attrs.evolve(BASE, num_frames=16, rounding="official"))
    diffusers = geometry(SPEC14, attrs.evolve(BASE, num_frames=16, rounding="diffusers"))
    assert official.latent_frames == 4 and diffusers.latent_frames == 5
    assert [(a.field, a.requested, a.effective) for a in official.adjustments] == [("num_frames", 16, 13)]
    assert [(a.field, a.requested, a.effective) for a in diffusers.adjustments] == [("num_frames", 16, 17)]


def test_official_rule_floors_sizes_and_says_so() -> None:
    g = geometry(SPEC14, attrs.evolve(BASE, num_frames=81, height=490, width=840))
    assert (g.patch_height, g.patch_width) == (30, 52)
    assert {(a.field, a.requested, a.effective) for a in g.adjustments} == {
        ("height", 490, 480),
        ("width", 840, 832),
    }
