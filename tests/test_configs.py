"""The shipped Hydra configs hold the standard models and workloads the brief names."""

from __future__ import annotations

from conftest import MODELS, WORKLOADS, spec_and_workload

from ditmeter.config import choices


def test_standard_configs_are_shipped() -> None:
    assert set(MODELS) <= set(choices("model"))
    assert set(WORKLOADS) <= set(choices("workload"))


def test_workload_values_match_the_issue() -> None:
    _, tiny = spec_and_workload("wan2.1-t2v-14b", "w001-tiny")
    assert (tiny.num_inference_steps, tiny.num_frames, tiny.height, tiny.width, tiny.text_len) == (
        1,
        4,
        256,
        256,
        64,
    )
    _, w2 = spec_and_workload("wan2.1-t2v-14b", "w002-512p")
    assert (w2.num_inference_steps, w2.num_frames, w2.height, w2.width, w2.text_len) == (
        50,
        16,
        512,
        512,
        512,
    )
    _, w3 = spec_and_workload("wan2.1-t2v-14b", "w003-720p")
    assert (w3.num_frames, w3.height, w3.width) == (16, 720, 1280)
    for name, hw in (("480p-81f", (480, 832)), ("720p-81f", (720, 1280))):
        _, w = spec_and_workload("wan2.1-t2v-14b", name)
        assert (w.num_frames, (w.height, w.width), w.num_inference_steps) == (81, hw, 50)
    for name in WORKLOADS:
        _, w = spec_and_workload("wan2.1-t2v-14b", name)
        assert (w.guidance_scale, w.batch_size, w.context_len, w.pipeline) == (5.0, 1, 512, "official")


def test_model_configs_match_wan_release() -> None:
    big, _ = spec_and_workload("wan2.1-t2v-14b", "w001-tiny")
    small, _ = spec_and_workload("wan2.1-t2v-1.3b", "w001-tiny")
    assert (big.dim, big.ffn_dim, big.num_heads, big.num_layers) == (5120, 13824, 40, 40)
    assert (small.dim, small.ffn_dim, small.num_heads, small.num_layers) == (1536, 8960, 12, 30)
    assert big.head_dim == small.head_dim == 128


def test_an_edited_preset_is_named_as_edited() -> None:
    _, w = spec_and_workload("wan2.1-t2v-14b", "720p-81f", "workload.num_frames=33")
    assert (w.name, w.num_frames) == ("720p-81f[num_frames=33]", 33)


def test_group_selections_compose_as_hydra_does() -> None:
    """The fast path (the defaults composed once, each group file set in place) gives exactly what
    Hydra's compose gives, for every model, workload and device."""
    from omegaconf import OmegaConf

    from ditmeter.config import _composed, _hydra_composed, choices, config_dir

    root = str(config_dir())
    selections = [
        *((f"model={m}",) for m in choices("model")),
        *((f"workload={w}",) for w in choices("workload")),
        *(("model=wan2.1-t2v-1.3b", f"device={d}") for d in choices("device")),
    ]
    for groups in selections:
        fast = OmegaConf.to_container(_composed(groups, root), resolve=True)
        assert fast == OmegaConf.to_container(_hydra_composed(groups, root), resolve=True), groups
