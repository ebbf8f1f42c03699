"""Official Wan T5 ids ⇄ transformers ``UMT5EncoderModel`` module paths.

transformers nests each block as ``layer.0`` (self-attention with its norm and
residual) and ``layer.1`` (feed-forward with its norm and residual); the
official code flattens both into the block. The gated FFN's ``wi_0``/``act``
are the official ``gate.0``/``gate.1``, ``wi_1`` is ``fc1``, ``wo`` is ``fc2``.
"""

from __future__ import annotations

import re

_B = r"encoder\.block\.(\d+)"

#: (transformers path pattern, official id template), first match wins.
UMT5_TO_OFFICIAL: tuple[tuple[str, str], ...] = (
    (r"", ""),
    (r"encoder", ""),
    (r"shared|encoder\.embed_tokens", "token_embedding"),
    (r"encoder\.dropout", ""),
    (r"encoder\.block", "blocks"),
    (_B, r"blocks.\1"),
    (_B + r"\.layer\.[01]", r"blocks.\1"),
    (_B + r"\.layer\.[01]\.dropout", r"blocks.\1"),
    (_B + r"\.layer\.0\.layer_norm", r"blocks.\1.norm1"),
    (_B + r"\.layer\.0\.SelfAttention", r"blocks.\1.attn"),
    (_B + r"\.layer\.0\.SelfAttention\.([qkvo])", r"blocks.\1.attn.\2"),
    (_B + r"\.layer\.0\.SelfAttention\.relative_attention_bias", r"blocks.\1.pos_embedding"),
    (_B + r"\.layer\.1\.layer_norm", r"blocks.\1.norm2"),
    (_B + r"\.layer\.1\.DenseReluDense", r"blocks.\1.ffn"),
    (_B + r"\.layer\.1\.DenseReluDense\.wi_0", r"blocks.\1.ffn.gate.0"),
    (_B + r"\.layer\.1\.DenseReluDense\.act", r"blocks.\1.ffn.gate.1"),
    (_B + r"\.layer\.1\.DenseReluDense\.wi_1", r"blocks.\1.ffn.fc1"),
    (_B + r"\.layer\.1\.DenseReluDense\.wo", r"blocks.\1.ffn.fc2"),
    (_B + r"\.layer\.1\.DenseReluDense\.dropout", r"blocks.\1.ffn"),
    (r"encoder\.final_layer_norm", "norm"),
)

_COMPILED = tuple((re.compile(p + r"\Z"), t) for p, t in UMT5_TO_OFFICIAL)


def umt5_canonical_id(path: str) -> str | None:
    """Official id of a transformers UMT5 path (``encoder.block.3.layer.0.SelfAttention.q`` →
    ``blocks.3.attn.q``), or None if unknown."""
    for pattern, template in _COMPILED:
        m = pattern.match(path)
        if m:
            return m.expand(template) if m.groups() else template
    return None
