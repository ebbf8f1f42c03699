"""The shipped Hydra configs hold the standard models and workloads the brief names."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import MODELS, WORKLOADS, spec_and_workload

from ditmeter.catalog import choices
from ditmeter.errors import ConfigError


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

    from ditmeter.catalog import choices, config_dir
    from ditmeter.config import _composed, _hydra_composed

    root = str(config_dir())
    selections = [
        *((f"model={m}",) for m in choices("model")),
        *((f"workload={w}",) for w in choices("workload")),
        *(("model=wan2.1-t2v-1.3b", f"device={d}") for d in choices("device")),
    ]
    for groups in selections:
        fast = OmegaConf.to_container(_composed(groups, root), resolve=True)
        assert fast == OmegaConf.to_container(_hydra_composed(groups, root), resolve=True), groups


def test_every_model_runs_without_a_workload_given() -> None:
    """``model=X`` alone must run (a new user's first command): config.yaml's w003-720p where the
    model can run it, else the model file's own release video, said in a note. The explicit choice
    is still refused as before (TI2V-5B's odd latent height at 720p)."""
    from ditmeter.config import load

    own = {
        "wan2.2-ti2v-5b": "ti2v-720p-121f",
        "wan2.2-ti2v-5b-i2v": "ti2v-720p-121f",
        "wan2.1-flf2v-14b-720p": "720p-81f",
    }
    for model in choices("model"):
        cfg = load([f"model={model}"], "report")
        assert cfg.workload.name == own.get(model, "w003-720p"), model
        assert bool(cfg.notes) == (model in own), model
        if model in own:
            assert own[model] in cfg.notes[0] and "w003-720p" in cfg.notes[0], cfg.notes
    # a workload given, or edited, keeps the user's choice and says nothing
    assert load(["model=wan2.2-ti2v-5b", "workload=w001-tiny"], "report").notes == ()
    with pytest.raises(ConfigError) as err:
        load(["model=wan2.2-ti2v-5b", "workload=w003-720p"], "report")
    assert err.value.field == "workload.height"
    edited = load(["model=wan2.1-flf2v-14b-720p", "workload.num_inference_steps=2"], "report")
    assert edited.workload.name == "720p-81f[num_inference_steps=2]"
    assert edited.workload.num_frames == 81


TINY = ("model=wan2.1-t2v-1.3b", "workload=w001-tiny")


def _refused(overrides: list[str], command: str | None = "report") -> ConfigError:
    from ditmeter.config import load

    with pytest.raises(ConfigError) as err:
        load([*TINY, *overrides], command)
    assert "\n" not in str(err.value)
    return err.value


@pytest.mark.parametrize(
    ("override", "allowed"),
    [("time.mode=roofline", "device=NAME"), ("time.execution=compiled", "device=NAME")],
)
def test_a_time_key_without_a_device_is_refused(override: str, allowed: str) -> None:
    """Without a device nothing is timed, so a time key would do nothing (like attention=)."""
    err = _refused([override])
    assert err.field == override.split("=")[0] and allowed in err.message


def test_validate_uses_time_execution_only() -> None:
    from ditmeter.config import load

    assert load(["time.execution=compiled"], "validate").time.execution == "compiled"
    with pytest.raises(ConfigError) as err:
        load(["time.mode=roofline"], "validate")
    assert err.value.field == "time.mode" and "time.execution" in err.value.message


@pytest.mark.parametrize(
    ("override", "allowed"),
    [
        ("time.mode=null", "allowed: predicted, roofline"),
        ("time.execution=null", "allowed: eager, compiled"),
        ("attention=null", "allowed: auto, fa2"),
        ("device.efficiency=null", "[0.001, 1]"),
        ("offload.t5_cpu=null", "allowed: true, false"),
        ("parallel.ulysses=null", "got null"),
        ("pipeline=null", "allowed: official, diffusers"),
        ("host=null", "allowed: auto, epyc-9654, ryzen-7950x or a CPU's calibration file"),
    ],
)
def test_null_is_refused_where_it_means_nothing(override: str, allowed: str) -> None:
    err = _refused(["device=h100-sxm", override])
    assert err.field == override.split("=")[0]
    assert err.message.startswith("null not allowed") or "got null" in err.message
    assert allowed in err.message


@pytest.mark.parametrize("section", ["time", "offload"])
def test_a_null_section_is_refused(section: str) -> None:
    err = _refused(["device=h100-sxm", f"{section}=null"])
    assert err.field == section and err.message.startswith("missing or null; must be a section of keys (")


def test_null_where_it_has_a_meaning_is_kept() -> None:
    from ditmeter.config import load

    cfg = load(
        [
            *TINY,
            "device=h100-sxm",
            "offload.model=null",
            "gemm_dtype=null",
            "run_id=null",
            "parallel.gpus=null",
        ]
    )
    assert (cfg.offload.model, cfg.time.gemm_dtype, cfg.run_id, cfg.parallel.gpus) == (None, None, None, 1)


@pytest.mark.parametrize(
    ("override", "field", "value"),
    [
        ("run_id=123", "run_id", "123"),
        ("run_id=0123", "run_id", "0123"),  # as written, not as the int Hydra reads
        ("run_id=1e3", "run_id", "1e3"),
        ("output_root=2024", "output_root", Path("2024")),
        ("host=7950", "host", None),  # a host name Hydra reads as an int: the message shows it as written
    ],
)
def test_names_and_paths_are_read_as_written(override: str, field: str, value: object) -> None:
    from ditmeter.config import load

    if value is None:
        err = _refused(["device=h100-sxm", override])
        assert err.field == field and "'7950' unknown; allowed: auto" in err.message
        return
    assert getattr(load([*TINY, override]), field) == value


def test_a_run_id_that_is_no_folder_name_shows_it_as_written() -> None:
    err = _refused(["run_id=[1,2]"])
    assert err.field == "run_id" and "got '[1,2]'" in err.message


@pytest.mark.parametrize("override", ["=1", "+=1"])
def test_an_empty_key_is_refused_naming_the_overrides(override: str) -> None:
    err = _refused([override])
    assert err.field == "overrides" and repr(override) in err.message


# ---- offload.t5_cpu under diffusers: the text encoder kept on the CPU by hand ----

#: Hand-made weights (bytes) and one run's activations, so every expected number is a sum by eye.
COMPONENTS = {"text_encoder": {"bf16": 1000}, "dit": {"bf16": 100}, "vae": {"fp32": 10}}
ACTIVATIONS = {"text_encoder": 1, "dit": 2, "vae_decode": 3}
STAGES = ("text_encoder", "dit", "vae_decode")


@pytest.mark.parametrize(
    ("model", "t5_cpu", "resident", "initial", "moves"),
    [
        # pipe.to("cuda"): everything on the GPU, nothing moves
        (
            False,
            False,
            [{"text_encoder": 1000, "dit": 100, "vae": 10}] * 3,
            ["dit", "text_encoder", "vae"],
            [],
        ),
        # the text encoder left on the CPU by hand: never on the GPU
        (False, True, [{"dit": 100, "vae": 10}] * 3, ["dit", "vae"], []),
        # enable_model_cpu_offload(): the running component only
        (
            True,
            False,
            [{"text_encoder": 1000}, {"dit": 100}, {"vae": 10}],
            [],
            [
                ("text_encoder", "h2d", "text_encoder"),
                ("text_encoder", "d2h", "dit"),
                ("dit", "h2d", "dit"),
                ("dit", "d2h", "vae_decode"),
                ("vae", "h2d", "vae_decode"),
            ],
        ),
        # both: the encode runs on the host, the GPU holds nothing then
        (
            True,
            True,
            [{}, {"dit": 100}, {"vae": 10}],
            [],
            [("dit", "h2d", "dit"), ("dit", "d2h", "vae_decode"), ("vae", "h2d", "vae_decode")],
        ),
    ],
)
def test_the_diffusers_timeline_follows_t5_cpu(
    model: bool,
    t5_cpu: bool,
    resident: list[dict[str, int]],
    initial: list[str],
    moves: list[tuple[str, str, str]],
) -> None:
    from ditmeter.analytic.memory import Offload
    from ditmeter.models.wan21.placement import timeline

    t = timeline("diffusers", STAGES, COMPONENTS, ACTIVATIONS, Offload(model=model, t5_cpu=t5_cpu))
    assert [p.resident for p in t.phases] == resident
    live = [sum(r.values()) + a for r, a in zip(resident, (1, 2, 3), strict=True)]
    assert [p.live_bytes for p in t.phases] == live
    assert list(t.initial) == initial and t.t5_cpu is t5_cpu
    assert [(m.component, m.direction, m.before) for m in t.transfers()] == moves


def test_diffusers_with_t5_cpu_encodes_on_the_host_and_never_holds_umt5() -> None:
    """The whole chain under diffusers: memory without UMT5 (5,680,910,336 parameters in bf16:
    a 256,384 x 4,096 embedding, 24 layers of 4 x 4096² attention + 3 x 4096 x 10240 gated FFN +
    two 4096 norms + a 32 x 64 relative bias, and a final 4096 norm) and its encode on the host."""
    import ditmeter

    umt5 = 2 * (256384 * 4096 + 24 * (4 * 4096**2 + 3 * 4096 * 10240 + 2 * 4096 + 32 * 64) + 4096)
    keys = {"pipeline": "diffusers", "device": "h100-sxm"}
    on_gpu = ditmeter.analyze("wan2.1-t2v-1.3b", "w001-tiny", keys)
    on_cpu = ditmeter.analyze("wan2.1-t2v-1.3b", "w001-tiny", {**keys, "offload.t5_cpu": True})
    assert on_gpu.memory["timeline"][0]["resident_bytes"]["text_encoder"] == umt5 == 11361820672
    for before, after in zip(on_gpu.memory["timeline"], on_cpu.memory["timeline"], strict=True):
        assert before["weight_bytes"] - after["weight_bytes"] == umt5
        assert "text_encoder" not in after["resident_bytes"]
    assert on_gpu.time is not None and on_cpu.time is not None
    assert on_gpu.time["host"] is None and on_cpu.time["host"] == "epyc-9654"
    assert on_cpu.memory["offload"] == {"model": False, "t5_cpu": True}


def test_config_files_read_as_omegaconf_reads_them(tmp_path: Path) -> None:
    """The fast reader of ``configs/`` (libyaml) gives what ``OmegaConf.load`` gives for every
    shipped file, reads ``1e-3`` as a number as OmegaConf does (YAML 1.1 alone would keep a string)
    and refuses a key given twice as OmegaConf does."""
    from omegaconf import OmegaConf

    from ditmeter.catalog import config_dir, config_yaml

    files = sorted(config_dir().rglob("*.yaml"))
    assert len(files) > 40
    for path in files:
        assert config_yaml(path) == OmegaConf.to_container(OmegaConf.load(path)), path
    odd = tmp_path / "odd.yaml"
    odd.write_text("small: 1e-3\nday: 2020-01-01\n")
    assert (
        config_yaml(odd)
        == OmegaConf.to_container(OmegaConf.load(odd))
        == {
            "small": 0.001,
            "day": "2020-01-01",
        }
    )
    odd.write_text("")
    assert config_yaml(odd) == OmegaConf.to_container(OmegaConf.load(odd)) == {}
    odd.write_text("a: 1\nb: 2\na: 3\n")
    with pytest.raises(Exception, match="duplicate key a"):
        OmegaConf.load(odd)
    with pytest.raises(Exception, match="duplicate key a"):
        config_yaml(odd)
