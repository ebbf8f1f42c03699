"""Node rules for transformers' ``UMT5EncoderModel``: ops its containers run inline.

- ``UMT5Attention``: after ``v``, the relative-position bucketing of
  ``compute_bias`` → ``pos_embedding``; after ``relative_attention_bias``, the
  bias added to the scores → ``attn.bias_add`` and the rest of the attention
  (head split and merge views, SDPA or its math decomposition) → ``attn_core``.
- ``UMT5LayerSelfAttention`` / ``UMT5LayerFF``: the residual adds.
- ``UMT5DenseGatedActDense``: the gate multiply after ``wi_1``.
"""

from __future__ import annotations

from ditmeter.compare.mapping import NodeRule, register_node_rule

REFERENCE = "transformers-umt5"

_B = r"encoder\.block\.(\d+)"
_ATTN = _B + r"\.layer\.0\.SelfAttention"

for _rule in (
    NodeRule("attn.head_split", _ATTN, r"blocks.\1.attn.attn_core", classes=("UMT5Attention",)),
    NodeRule("attn.bias_buckets", _ATTN, r"blocks.\1.pos_embedding", after="v", classes=("UMT5Attention",)),
    NodeRule(
        "attn.bias_add",
        _ATTN,
        r"blocks.\1.attn.bias_add",
        after="relative_attention_bias",
        ops=("aten.add.Tensor",),
        classes=("UMT5Attention",),
    ),
    NodeRule(
        "block.residual1", _B + r"\.layer\.0", r"blocks.\1.residual1", classes=("UMT5LayerSelfAttention",)
    ),
    NodeRule("block.residual2", _B + r"\.layer\.1", r"blocks.\1.residual2", classes=("UMT5LayerFF",)),
    NodeRule(
        "ffn.gate_mul",
        _B + r"\.layer\.1\.DenseReluDense",
        r"blocks.\1.ffn.mul",
        classes=("UMT5DenseGatedActDense",),
    ),
):
    register_node_rule(REFERENCE, _rule)
