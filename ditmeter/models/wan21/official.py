"""The official Wan code's DiT (``wan/modules/model.py``) where a user has it: for ``ingest`` of a
trace of the official ``generate.py``.

The official ``WanModel``'s module paths are the analytic tree's own ids (the
trees use the official names), so its name table is the identity. Its node
rules say where the ops ``WanModel``, ``WanAttentionBlock``, ``Head`` and
``WanSelfAttention`` run inline go, read beside ``wan/modules/model.py``:

- model: the I2V input concat, then the patch layout and the padding after
  ``patch_embedding``, except what runs in ``sinusoidal_embedding_1d`` (the time
  sinusoid); after ``time_projection`` its ``unflatten`` (time projection) and
  the padded context stack (text embedding); after ``img_emb`` the context
  concat; after ``head`` the unpatchify and the fp32 cast.
- block: start → ``modulation + e`` (modulation); ``norm1`` → modulate;
  ``self_attn`` → gated residual; ``cross_attn`` → residual; ``norm2`` →
  modulate; ``ffn`` → gated residual.
- attention: what runs in ``rope_apply`` → ``rope``; everything else (head
  views, ``flash_attention`` with its casts and varlen lengths, the head merge;
  for I2V the image attention and the add) → ``attn_core``.
- head: start → modulation; after ``norm`` → modulate.

The package is found as ``wan`` on the Python path (the official repository's
folder, or a release such as ``pip install --no-deps wan22``) and its
``modules/model.py`` loaded alone, so the repository's heavier imports
(torchvision, the pipelines, flash-attn) are not needed to list its modules.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

from ditmeter.compare.mapping import NodeRule, NodeRules
from ditmeter.compare.names import NameTable
from ditmeter.errors import ConfigError

#: The official paths are the analytic ids.
OFFICIAL_DIT_NAMES = NameTable(((r"(.*)", r"\1"),))

_B = r"blocks\.(\d+)"

OFFICIAL_DIT_RULES = NodeRules(
    "official-dit",
    (
        NodeRule("model.input", "", "patch_embedding", after=""),
        NodeRule("model.patch_layout", "", "patch_embedding", after="patch_embedding"),
        NodeRule(
            "model.sinusoid",
            "",
            "time_embedding.sinusoid",
            after="patch_embedding",
            functions=("sinusoidal_embedding_1d",),
        ),
        NodeRule("model.context_pad", "", "text_embedding.0", after="time_projection"),
        NodeRule(
            "model.time_unflatten",
            "",
            "time_projection.1",
            after="time_projection",
            ops=("aten.unflatten.default",),
        ),
        NodeRule("model.context_concat", "", "context_concat", after="img_emb"),
        NodeRule("model.unpatchify", "", "unpatchify", after="head"),
        NodeRule("img_emb.emb_pos", "img_emb", "img_emb.emb_pos", after=""),
        NodeRule("head.modulation", "head", "head.modulation", after=""),
        NodeRule("head.modulate", "head", "head.modulate", after="norm"),
        NodeRule("block.modulation", _B, r"blocks.\1.modulation", after=""),
        NodeRule("block.modulate1", _B, r"blocks.\1.modulate1", after="norm1"),
        NodeRule("block.residual1", _B, r"blocks.\1.residual1", after="self_attn"),
        NodeRule("block.residual3", _B, r"blocks.\1.residual3", after="cross_attn"),
        NodeRule("block.modulate2", _B, r"blocks.\1.modulate2", after="norm2"),
        NodeRule("block.residual2", _B, r"blocks.\1.residual2", after="ffn"),
        NodeRule(
            "self_attn.rope", _B + r"\.self_attn", r"blocks.\1.self_attn.rope", functions=("rope_apply",)
        ),
        NodeRule("self_attn.core", _B + r"\.self_attn", r"blocks.\1.self_attn.attn_core"),
        NodeRule("cross_attn.core", _B + r"\.cross_attn", r"blocks.\1.cross_attn.attn_core"),
    ),
)

_PACKAGE = "_ditmeter_official_wan"


def official_folder() -> Path | None:
    """The folder of the official ``wan`` package on the Python path, or None."""
    try:
        spec = importlib.util.find_spec("wan")
    except (ImportError, ValueError):
        return None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in map(Path, locations):
        if (folder / "modules" / "model.py").is_file():
            return folder
    return None


def official_model_module() -> Any:
    """``wan/modules/model.py`` of the official code, loaded alone (its package's ``__init__``
    imports every pipeline); refuses, naming ``pipeline``, when the code is not installed."""
    name = f"{_PACKAGE}.modules.model"
    if name in sys.modules:
        return sys.modules[name]
    folder = official_folder()
    if folder is None:
        raise ConfigError(
            "pipeline",
            "official: mapping a trace of the official code needs its WanModel to list its modules; "
            "put the official Wan repository on PYTHONPATH or `pip install --no-deps wan22`, or give "
            "pipeline=diffusers for a diffusers run",
        )
    for package, path in ((_PACKAGE, folder), (f"{_PACKAGE}.modules", folder / "modules")):
        if package not in sys.modules:
            module = types.ModuleType(package)
            module.__path__ = [str(path)]
            sys.modules[package] = module
    return importlib.import_module(name)


def official_model_type(images: int) -> str:
    """The official ``WanModel(model_type=…)`` of a model with ``images`` conditioning images."""
    return {0: "t2v", 1: "i2v", 2: "flf2v"}[images]
