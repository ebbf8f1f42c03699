"""Node rules for the diffusers ``WanTransformer3DModel``: ops its containers run inline.

Everything inside a leaf module (a Linear, a norm, the RoPE table builder) is
assigned by the alias table in :mod:`ditmeter.analytic.wan_names`. What is
left are the ops ``WanTransformerBlock.forward``, ``WanAttnProcessor`` and the
model's own ``forward`` run between their children; each is listed here by the
child that ran before it. Reading ``transformer_wan.py`` beside this file:

- model: ``patch_embedding`` → flatten/transpose (patch embedding layout);
  ``condition_embedder`` → ``timestep_proj.unflatten`` (time projection) and,
  for I2V/FLF2V, the concat of image and text context;
  ``blocks`` → ``scale_shift_table + temb`` (head modulation);
  ``norm_out`` → ``* (1 + scale) + shift`` (head modulate);
  ``proj_out`` → reshape/permute/flatten (unpatchify).
- block: start → ``scale_shift_table + temb`` (modulation); ``norm1`` →
  modulate; ``attn1`` → gated residual; ``attn2`` → residual add; ``norm3`` →
  modulate; ``ffn`` → gated residual.
- attention: RoPE's element-wise ops (self-attention only) → ``rope``; every
  other op of the processor (head split views, the SDPA kernel or its math
  decomposition, the head merge; for I2V the image attention and the add of
  the two outputs too) → ``attn_core``.
- FLF2V image embedding: the add of the learned position table, before ``norm1``.
"""

from __future__ import annotations

from ditmeter.compare.mapping import NodeRule, register_node_rule

REFERENCE = "diffusers-dit"

#: The element-wise ops of ``apply_rotary_emb`` in ``WanAttnProcessor``.
ROPE_OPS = (
    "aten.mul.Tensor",
    "aten.sub.Tensor",
    "aten.add.Tensor",
    "aten.copy_.default",
    "aten.empty_like.default",
    "aten.unbind.int",
    "aten.slice.Tensor",
    "aten.detach.default",
)

_B = r"blocks\.(\d+)"

for _rule in (
    NodeRule("model.patch_layout", "", "patch_embedding", after="patch_embedding"),
    NodeRule("model.time_unflatten", "", "time_projection.1", after="condition_embedder"),
    NodeRule(
        "model.context_concat", "", "context_concat", after="condition_embedder", ops=("aten.cat.default",)
    ),
    NodeRule(
        "img_emb.emb_pos",
        r"condition_embedder\.image_embedder",
        "img_emb.emb_pos",
        after="",
        classes=("WanImageEmbedding",),
    ),
    NodeRule("model.head_modulation", "", "head.modulation", after="blocks"),
    NodeRule("model.head_modulate", "", "head.modulate", after="norm_out"),
    NodeRule("model.unpatchify", "", "unpatchify", after="proj_out"),
    NodeRule("block.modulation", _B, r"blocks.\1.modulation", after=""),
    NodeRule("block.modulate1", _B, r"blocks.\1.modulate1", after="norm1"),
    NodeRule("block.residual1", _B, r"blocks.\1.residual1", after="attn1"),
    NodeRule("block.residual3", _B, r"blocks.\1.residual3", after="attn2"),
    NodeRule("block.modulate2", _B, r"blocks.\1.modulate2", after="norm3"),
    NodeRule("block.residual2", _B, r"blocks.\1.residual2", after="ffn"),
    NodeRule(
        "self_attn.rope",
        _B + r"\.attn1",
        r"blocks.\1.self_attn.rope",
        ops=ROPE_OPS,
        classes=("WanAttention",),
    ),
    NodeRule("self_attn.core", _B + r"\.attn1", r"blocks.\1.self_attn.attn_core", classes=("WanAttention",)),
    NodeRule(
        "cross_attn.core", _B + r"\.attn2", r"blocks.\1.cross_attn.attn_core", classes=("WanAttention",)
    ),
):
    register_node_rule(REFERENCE, _rule)
