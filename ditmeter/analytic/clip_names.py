"""Official Wan ``VisionTransformer`` ids ⇄ transformers ``CLIPVisionModel`` paths.

transformers' q/k/v projections are three Linears; the official ``to_qkv`` is
one fused Linear: all three map onto it.
"""

from __future__ import annotations

import re

_L = r"encoder\.layers\.(\d+)"

#: (transformers path pattern, official id template), first match wins.
CLIP_TO_OFFICIAL: tuple[tuple[str, str], ...] = (
    (r"(vision_model)?", ""),
    (r"(vision_model\.)?embeddings", ""),
    (r"(vision_model\.)?embeddings\.patch_embedding", "patch_embedding"),
    (r"(vision_model\.)?embeddings\.position_embedding", "pos_embedding"),
    (r"(vision_model\.)?pre_layrnorm", "pre_norm"),
    (r"(vision_model\.)?encoder", ""),
    (r"(vision_model\.)?encoder\.layers", "transformer"),
    (r"(?:vision_model\.)?" + _L, r"transformer.\1"),
    (r"(?:vision_model\.)?" + _L + r"\.layer_norm1", r"transformer.\1.norm1"),
    (r"(?:vision_model\.)?" + _L + r"\.self_attn", r"transformer.\1.attn"),
    (r"(?:vision_model\.)?" + _L + r"\.self_attn\.[qkv]_proj", r"transformer.\1.attn.to_qkv"),
    (r"(?:vision_model\.)?" + _L + r"\.self_attn\.out_proj", r"transformer.\1.attn.proj"),
    (r"(?:vision_model\.)?" + _L + r"\.layer_norm2", r"transformer.\1.norm2"),
    (r"(?:vision_model\.)?" + _L + r"\.mlp", r"transformer.\1.mlp"),
    (r"(?:vision_model\.)?" + _L + r"\.mlp\.fc1", r"transformer.\1.mlp.0"),
    (r"(?:vision_model\.)?" + _L + r"\.mlp\.activation_fn", r"transformer.\1.mlp.1"),
    (r"(?:vision_model\.)?" + _L + r"\.mlp\.fc2", r"transformer.\1.mlp.2"),
    (r"(vision_model\.)?post_layernorm", "post_norm"),
)

_COMPILED = tuple((re.compile(p + r"\Z"), t) for p, t in CLIP_TO_OFFICIAL)


def clip_canonical_id(path: str) -> str | None:
    """Official id of a transformers CLIP vision path, or None if unknown."""
    for pattern, template in _COMPILED:
        m = pattern.match(path)
        if m:
            return m.expand(template) if "\\" in template else template
    return None
