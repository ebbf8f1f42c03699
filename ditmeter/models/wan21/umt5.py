"""The UMT5-XXL text encoder as a tree of costed modules (one encode of ``tokens`` tokens).

Module ids follow the official Wan code's T5 (``wan/modules/t5.py``):
``token_embedding``, ``blocks.N.{norm1, attn.{q, k, v, o, bias_add, attn_core},
pos_embedding, residual1, norm2, ffn.{gate.0, gate.1, fc1, mul, fc2}, residual2}``
and ``norm``; ``UMT5_NAMES`` in :mod:`ditmeter.models.wan21.names` maps the transformers
``UMT5EncoderModel`` paths (the reference we trace) onto them.

UMT5 differs from T5 in one cost-relevant way: every block has its own
relative position bias (``pos_embedding``), computed once per forward and
shared by the batch. Attention is unscaled; the bias is added to the scores.
Both pipelines encode the prompt padded to ``text_len`` (512) tokens.

NB: traced without the padding mask (its construction is data-dependent, so it
cannot run on meta); the mask adds one element-wise add per score and no
tensor FLOPs.
"""

from __future__ import annotations

from ditmeter.analytic import rules as _rules  # noqa: F401  (registers the rules)
from ditmeter.analytic.cost import DTYPE_BYTES
from ditmeter.analytic.tree import Composite, Leaf, Repeated, rule_leaf
from ditmeter.models.wan21.spec import UMT5Spec


def build_umt5(spec: UMT5Spec, batch: int, tokens: int) -> Composite:
    """The cost tree of one encode of ``batch`` prompts of ``tokens`` tokens (root name "")."""
    a = DTYPE_BYTES[spec.dtype]
    rows, dim, inner = batch * tokens, spec.d_model, spec.num_heads * spec.d_kv

    def linear(name: str, category: str, fan_in: int, fan_out: int) -> Leaf:
        return rule_leaf(
            name,
            category,
            "linear",
            tokens=rows,
            in_features=fan_in,
            out_features=fan_out,
            bias=False,
            act_bytes=a,
            weight_el_bytes=a,
        )

    def norm(name: str) -> Leaf:
        return rule_leaf(name, "norm_mod", "rms_norm", rows=rows, dim=dim, act_bytes=a, weight_el_bytes=a)

    scores = batch * spec.num_heads * tokens * tokens
    attn = Composite(
        "attn",
        (
            linear("q", "attn_proj", dim, inner),
            linear("k", "attn_proj", dim, inner),
            linear("v", "attn_proj", dim, inner),
            rule_leaf("bias_add", "attn_core", "residual_add", elements=scores, act_bytes=4),
            rule_leaf(
                "attn_core",
                "attn_core",
                "attention_core",
                batch=batch,
                heads=spec.num_heads,
                q_tokens=tokens,
                kv_tokens=tokens,
                head_dim=spec.d_kv,
                act_bytes=a,
            ),
            linear("o", "attn_proj", inner, dim),
        ),
    )
    ffn = Composite(
        "ffn",
        (
            Composite(
                "gate",
                (
                    linear("0", "ffn", dim, spec.d_ff),
                    rule_leaf("1", "ffn", "gelu_tanh", elements=rows * spec.d_ff, act_bytes=a),
                ),
            ),
            linear("fc1", "ffn", dim, spec.d_ff),
            rule_leaf("mul", "ffn", "elementwise_mul", elements=rows * spec.d_ff, act_bytes=a),
            linear("fc2", "ffn", spec.d_ff, dim),
        ),
    )
    block = Composite(
        "block",
        (
            norm("norm1"),
            rule_leaf(
                "pos_embedding",
                "rope",
                "relative_position_bias",
                heads=spec.num_heads,
                q_tokens=tokens,
                kv_tokens=tokens,
                buckets=spec.relative_attention_num_buckets,
                act_bytes=a,
                weight_el_bytes=a,
            ),
            attn,
            rule_leaf("residual1", "norm_mod", "residual_add", elements=rows * dim, act_bytes=a),
            norm("norm2"),
            ffn,
            rule_leaf("residual2", "norm_mod", "residual_add", elements=rows * dim, act_bytes=a),
        ),
    )
    return Composite(
        "",
        (
            rule_leaf(
                "token_embedding",
                "embedding",
                "embedding_lookup",
                tokens=rows,
                vocab=spec.vocab_size,
                dim=dim,
                act_bytes=a,
                weight_el_bytes=a,
            ),
            Repeated("blocks", spec.num_layers, block),
            norm("norm"),
        ),
    )
