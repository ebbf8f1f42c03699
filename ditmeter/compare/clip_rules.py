"""Node rules for transformers' ``CLIPVisionModel``: ops its containers run inline.

- ``CLIPVisionEmbeddings``: after ``patch_embedding``, flatten and the CLS concat
  → ``cls_embedding``; after ``position_embedding``, the add → ``pos_embedding``.
- ``CLIPAttention``: head split, SDPA (or its math decomposition), head merge → ``attn_core``.
- ``CLIPEncoderLayer``: the residual adds.
- the model: selecting the CLS token for the final norm → ``post_norm``.
"""

from __future__ import annotations

from ditmeter.compare.mapping import NodeRule, register_node_rule

REFERENCE = "transformers-clip-vision"

_V = r"(?:vision_model\.)?"
_L = _V + r"encoder\.layers\.(\d+)"

for _rule in (
    NodeRule("embeddings.cls", _V + "embeddings", "cls_embedding", after="patch_embedding"),
    NodeRule("embeddings.pos", _V + "embeddings", "pos_embedding", after="position_embedding"),
    NodeRule("attn.core", _L + r"\.self_attn", r"transformer.\1.attn.attn_core", classes=("CLIPAttention",)),
    NodeRule("layer.residual1", _L, r"transformer.\1.residual1", after="self_attn"),
    NodeRule("layer.residual2", _L, r"transformer.\1.residual2", after="mlp"),
    NodeRule("model.cls_select", r"(?:vision_model)?", "post_norm", after="encoder"),
):
    register_node_rule(REFERENCE, _rule)
