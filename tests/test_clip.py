"""The CLIP ViT-H/14 image encoder: analytic counts equal transformers' CLIPVisionModel, per module."""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

import attrs
import pytest

from ditmeter.compare.check import check_graph
from ditmeter.compare.gate import Verdict
from ditmeter.config import load
from ditmeter.errors import ConfigError
from ditmeter.models.wan21 import WAN21
from ditmeter.models.wan21.builders import build_clip_vision, clip_inputs
from ditmeter.models.wan21.clip import build_clip
from ditmeter.models.wan21.names import CLIP_NAMES
from ditmeter.models.wan21.node_rules import CLIP_RULES
from ditmeter.models.wan21.official import official_folder
from ditmeter.models.wan21.spec import ClipSpec
from ditmeter.tracer.capture import capture_forward
from ditmeter.validate import parse


def graph_flops(graph: object) -> int:
    return sum(n.meta.get("flops", 0) for n in graph.nodes)  # type: ignore[attr-defined]


#: The official pipeline runs 31 blocks in fp16 (use_31_block); diffusers all 32 in fp32.
SPECS = {
    p: load(["model=wan2.1-i2v-14b-480p", f"pipeline={p}"]).model.image_encoder
    for p in ("official", "diffusers")
}
SPEC = SPECS["diffusers"]


@pytest.fixture(scope="module")
def encoder() -> object:
    return build_clip_vision(SPEC)


def _gate(encoder: object, images: int, tolerance: float = 0.0) -> Verdict:
    graph = capture_forward(encoder, clip_inputs(SPEC, images))  # type: ignore[arg-type]
    return check_graph(graph, build_clip(SPEC, images), CLIP_NAMES, CLIP_RULES, tolerance, "image_encoder")[1]


def test_parameters_equal_the_real_module(encoder: object) -> None:
    real = sum(p.numel() for p in encoder.parameters())  # type: ignore[attr-defined]
    assert build_clip(SPEC, 1).total.params == real == 630_766_080


@pytest.mark.parametrize("images", [1, 2])  # I2V encodes one image, FLF2V two
def test_every_module_agrees_exactly_with_flop_counter(encoder: object, images: int) -> None:
    v = _gate(encoder, images)
    assert v.passed and v.max_error == 0.0 and v.coverage.nodes["unmatched"] == 0
    assert sum(c.module_id.endswith("attn.to_qkv") for c in v.checks) == 32


def test_the_total_by_hand() -> None:
    """Patch conv + 32 × (qkv, proj, QKᵀ and PV over 257 tokens, MLP) for one 224² image under
    diffusers; the official code stops after block 31."""
    per_layer = 4 * 2 * 257 * 1280 * 1280 + 4 * 16 * 257 * 257 * 80 + 2 * 2 * 257 * 1280 * 5120
    conv = 2 * 256 * 1280 * (3 * 14 * 14)
    assert build_clip(SPEC, 1).total.tensor_flops == conv + 32 * per_layer == 334_587_658_240
    assert build_clip(SPECS["official"], 1).total.tensor_flops == conv + 31 * per_layer == 324_143_836_160
    assert (SPECS["official"].layers_run, SPECS["official"].dtype) == (31, "fp16")
    assert (SPEC.layers_run, SPEC.dtype) == (32, "fp32")


def test_the_official_depth_is_traced_on_the_real_module() -> None:
    """The module the tracer builds for pipeline=official has 31 blocks, and the gate is exact."""
    official = SPECS["official"]
    real = build_clip_vision(official)
    assert sum(type(m).__name__ == "CLIPEncoderLayer" for m in real.modules()) == 31
    graph = capture_forward(real, clip_inputs(official, 1))
    tree = build_clip(official, 1)
    v = check_graph(graph, tree, CLIP_NAMES, CLIP_RULES, 0.0, "image_encoder")[1]
    assert v.passed and v.max_error == 0.0 and v.coverage.nodes["unmatched"] == 0
    assert sum(c.module_id.endswith("attn.to_qkv") for c in v.checks) == 31
    assert graph_flops(graph) == 324_143_836_160


def test_layers_run_cannot_exceed_the_model() -> None:
    with pytest.raises(ConfigError) as err:
        parse(ClipSpec, {**attrs.asdict(SPEC), "layers_run": 33}, "model.image_encoder")
    assert err.value.field == "model.image_encoder.layers_run"


def test_a_wrong_rule_fails_the_gate(encoder: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """The MLP's up-projection costed at 2·hidden instead of 4·hidden: every layer's mlp.0 fails."""
    from ditmeter.analytic import registry
    from ditmeter.analytic.rules import dense

    def narrow_mlp(**dims: object) -> object:
        if dims["out_features"] == 5120:
            dims = {**dims, "out_features": 2560}
        return dense.linear(**dims)  # type: ignore[arg-type]

    monkeypatch.setitem(registry.RULES, "linear", narrow_mlp)
    v = _gate(encoder, 1, tolerance=0.05)
    assert not v.passed
    failed = {c.module_id for c in v.failures}
    assert {
        "image_encoder.transformer.0.mlp.0",
        "image_encoder.transformer.31.mlp.0",
        "image_encoder",
    } <= failed
    assert "image_encoder.transformer.0.attn.to_qkv" not in failed


# ---- what the official CLIPModel holds on the GPU ----------------------------------------------


def _official_clip_module() -> Any:
    """The official ``wan/modules/clip.py`` (shipped in wan22 as ``modules/animate/clip.py``, the
    same file), loaded alone. Its torchvision transforms and tokenizer are not needed to build
    the model and are stubbed; everything else is the release code."""
    folder = official_folder()
    if folder is None or not (folder / "modules" / "animate" / "clip.py").is_file():
        pytest.skip("the official wan package (wan22) is not installed")
    package = "_ditmeter_test_official_clip"
    stubs = {
        package: folder,
        f"{package}.modules": folder / "modules",
        f"{package}.modules.animate": folder / "modules" / "animate",
    }
    with pytest.MonkeyPatch.context() as mp:
        for name, path in stubs.items():
            module = types.ModuleType(name)
            module.__path__ = [str(path)]
            mp.setitem(sys.modules, name, module)
        vision = types.ModuleType("torchvision")
        vision.transforms = types.ModuleType("torchvision.transforms")  # type: ignore[attr-defined]
        mp.setitem(sys.modules, "torchvision", vision)
        mp.setitem(sys.modules, "torchvision.transforms", vision.transforms)  # type: ignore[attr-defined]
        tokenizers = types.ModuleType(f"{package}.modules.tokenizers")
        tokenizers.HuggingfaceTokenizer = None  # type: ignore[attr-defined]
        mp.setitem(sys.modules, tokenizers.__name__, tokenizers)
        return importlib.import_module(f"{package}.modules.animate.clip")


def test_the_official_pipeline_holds_the_whole_official_clip() -> None:
    """``CLIPModel`` builds ``clip_xlm_roberta_vit_h_14`` (the vision tower, its projection head, the
    XLM-RoBERTa text tower and its head) in fp16 on the GPU, and ``image2video.py`` moves
    ``self.clip.model`` whole: the resident bytes are the real module's parameters × 2, while the
    FLOPs stay the 31 vision blocks it runs."""
    import torch

    real = _official_clip_module().clip_xlm_roberta_vit_h_14(dtype=torch.float16, device="meta")
    params = sum(p.numel() for p in real.parameters())
    official = load(["model=wan2.1-i2v-14b-480p"]).model
    assert WAN21.component_weights(official)["image_encoder"] == {"fp16": 2 * params}
    vision = sum(p.numel() for p in real.visual.parameters()) - real.visual.head.numel()
    assert build_clip(SPEC, 1).total.params == vision  # the tree: the vision tower, every block
    diffusers = load(["model=wan2.1-i2v-14b-480p", "pipeline=diffusers"]).model
    assert WAN21.component_weights(diffusers)["image_encoder"] == {"fp32": 4 * vision}  # CLIPVisionModel


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("model.image_encoder.text_tower.text_dim=0", "model.image_encoder.text_tower.text_dim"),
        ("~model.image_encoder.text_tower", "model.image_encoder.text_tower"),
    ],
)
def test_the_official_text_tower_is_checked_and_diffusers_never_holds_it(override: str, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(["model=wan2.1-i2v-14b-480p", override])
    assert err.value.field == field
    diffusers = load(["model=wan2.1-i2v-14b-480p", override, "pipeline=diffusers"]).model
    assert diffusers.image_encoder.text_tower is None  # type: ignore[attr-defined]
