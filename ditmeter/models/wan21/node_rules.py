"""Wan2.1's node rules: the ops each reference's containers run inline, and the leaf that costs them.

Everything inside a leaf module (a Linear, a norm, the RoPE table builder) is
assigned by the name tables (:mod:`ditmeter.models.wan21.names`). What is left
are the ops a container's ``forward`` runs between its children; each rule
names the child that ran before it (``after``). Read beside the reference code:

**diffusers ``WanTransformer3DModel``** (``DIT_RULES``, ``transformer_wan.py``)

- model: ``patch_embedding`` → flatten/transpose (patch embedding layout);
  ``condition_embedder`` → ``timestep_proj.unflatten`` (time projection) and,
  for I2V/FLF2V, the concat of image and text context; inside ``condition_embedder``, per-token
  timesteps' unflatten after ``timesteps_proj`` → the sinusoid, as is context parallelism's split
  of those timesteps at the input; ``blocks`` →
  ``scale_shift_table + temb`` (head modulation); ``norm_out`` →
  ``* (1 + scale) + shift`` (head modulate); ``proj_out`` → reshape/permute/
  flatten (unpatchify).
- block: start → ``scale_shift_table + temb`` (modulation); ``norm1`` →
  modulate; ``attn1`` → gated residual; ``attn2`` → residual add; ``norm3`` →
  modulate; ``ffn`` → gated residual.
- attention: RoPE's element-wise ops (self-attention only) → ``rope``; every
  other op of the processor (head split views, the SDPA kernel or its math
  decomposition, the head merge; for I2V the image attention and the add of
  the two outputs too) → ``attn_core``.
- FLF2V image embedding: the add of the learned position table, before ``norm1``.

**transformers ``UMT5EncoderModel``** (``UMT5_RULES``)

- ``UMT5Attention``: after ``v``, the relative-position bucketing of
  ``compute_bias`` → ``pos_embedding``; after ``relative_attention_bias``, the
  bias added to the scores → ``attn.bias_add`` and the rest of the attention
  (head split and merge views, SDPA or its math decomposition) → ``attn_core``.
- ``UMT5LayerSelfAttention`` / ``UMT5LayerFF``: the residual adds.
- ``UMT5DenseGatedActDense``: the gate multiply after ``wi_1``.

**transformers ``CLIPVisionModel``** (``CLIP_RULES``)

- ``CLIPVisionEmbeddings``: after ``patch_embedding``, flatten and the CLS concat
  → ``cls_embedding``; after ``position_embedding``, the add → ``pos_embedding``.
- ``CLIPAttention``: head split, SDPA (or its math decomposition), head merge → ``attn_core``.
- ``CLIPEncoderLayer``: the residual adds.
- the model: selecting the CLS token for the final norm → ``post_norm``.

**diffusers ``AutoencoderKLWan``** decode (``VAE_DECODE_RULES``) and encode (``VAE_ENCODE_RULES``)

- ``WanResidualBlock``: the causal-cache copies → ``feat_cache``; the residual add → ``add``.
- ``WanAttentionBlock``: layout copies, the single-head SDPA → ``attn_core``; after
  ``proj``, the residual add → ``add``.
- ``WanResample``: cache copies, the time-doubling reshuffle, frame layout → ``reshuffle``.
- ``WanDecoder3d`` / ``WanEncoder3d``: the conv_in/conv_out cache copies → ``feat_cache``.
- the decode loop (outside any module): the per-call output concat, the final
  clamp; the encode loop: the per-call latent concat and the Gaussian
  posterior after ``quant_conv``.
"""

from __future__ import annotations

from ditmeter.compare.mapping import NodeRule, NodeRules

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

DIT_RULES = NodeRules(
    "diffusers-dit",
    (
        NodeRule("model.patch_layout", "", "patch_embedding", after="patch_embedding"),
        NodeRule("model.time_unflatten", "", "time_projection.1", after="condition_embedder"),
        NodeRule(
            "model.context_concat",
            "",
            "context_concat",
            after="condition_embedder",
            ops=("aten.cat.default",),
        ),
        NodeRule(
            "img_emb.emb_pos",
            r"condition_embedder\.image_embedder",
            "img_emb.emb_pos",
            after="",
            classes=("WanImageEmbedding",),
        ),
        NodeRule(  # context parallelism: per-token timesteps split with the latents at the input
            "model.cp_timestep_split", "", "time_embedding.sinusoid", after="", ops=("aten.split.Tensor",)
        ),
        NodeRule(  # per-token timesteps: the sinusoids unflattened to [batch, tokens, freq_dim]
            "embed.time_unflatten",
            "condition_embedder",
            "time_embedding.sinusoid",
            after="timesteps_proj",
            ops=("aten.view.default",),
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
        NodeRule(
            "self_attn.core", _B + r"\.attn1", r"blocks.\1.self_attn.attn_core", classes=("WanAttention",)
        ),
        NodeRule(
            "cross_attn.core", _B + r"\.attn2", r"blocks.\1.cross_attn.attn_core", classes=("WanAttention",)
        ),
    ),
)

_T5 = r"encoder\.block\.(\d+)"
_T5_ATTN = _T5 + r"\.layer\.0\.SelfAttention"

UMT5_RULES = NodeRules(
    "transformers-umt5",
    (
        NodeRule("attn.head_split", _T5_ATTN, r"blocks.\1.attn.attn_core", classes=("UMT5Attention",)),
        NodeRule(
            "attn.bias_buckets", _T5_ATTN, r"blocks.\1.pos_embedding", after="v", classes=("UMT5Attention",)
        ),
        NodeRule(
            "attn.bias_add",
            _T5_ATTN,
            r"blocks.\1.attn.bias_add",
            after="relative_attention_bias",
            ops=("aten.add.Tensor",),
            classes=("UMT5Attention",),
        ),
        NodeRule(
            "block.residual1",
            _T5 + r"\.layer\.0",
            r"blocks.\1.residual1",
            classes=("UMT5LayerSelfAttention",),
        ),
        NodeRule("block.residual2", _T5 + r"\.layer\.1", r"blocks.\1.residual2", classes=("UMT5LayerFF",)),
        NodeRule(
            "ffn.gate_mul",
            _T5 + r"\.layer\.1\.DenseReluDense",
            r"blocks.\1.ffn.mul",
            classes=("UMT5DenseGatedActDense",),
        ),
    ),
)

_V = r"(?:vision_model\.)?"
_L = _V + r"encoder\.layers\.(\d+)"

CLIP_RULES = NodeRules(
    "transformers-clip-vision",
    (
        NodeRule("embeddings.cls", _V + "embeddings", "cls_embedding", after="patch_embedding"),
        NodeRule("embeddings.pos", _V + "embeddings", "pos_embedding", after="position_embedding"),
        NodeRule(
            "attn.core", _L + r"\.self_attn", r"transformer.\1.attn.attn_core", classes=("CLIPAttention",)
        ),
        NodeRule("layer.residual1", _L, r"transformer.\1.residual1", after="self_attn"),
        NodeRule("layer.residual2", _L, r"transformer.\1.residual2", after="mlp"),
        NodeRule("model.cls_select", r"(?:vision_model)?", "post_norm", after="encoder"),
    ),
)

_DEC_BLOCK = r"vae\.(decoder\.(?:mid_block|up_blocks\.\d+)\.resnets\.\d+)"
_DEC_ATTN = r"vae\.(decoder\.mid_block\.attentions\.\d+)"
_UP = r"vae\.(decoder\.up_blocks\.\d+\.upsamplers\.0)"

VAE_DECODE_RULES = NodeRules(
    "diffusers-wan-vae",
    (
        NodeRule("resnet.cache", _DEC_BLOCK, r"\1.feat_cache", classes=("WanResidualBlock",)),
        NodeRule("resnet.add", _DEC_BLOCK, r"\1.add", after="conv2", classes=("WanResidualBlock",)),
        NodeRule("attn.core", _DEC_ATTN, r"\1.attn_core", classes=("WanAttentionBlock",)),
        NodeRule("attn.add", _DEC_ATTN, r"\1.add", after="proj", classes=("WanAttentionBlock",)),
        NodeRule("resample.reshuffle", _UP, r"\1.reshuffle", classes=("WanResample",)),
        NodeRule("decoder.cache", r"vae\.decoder", "decoder.feat_cache", classes=("WanDecoder3d",)),
        NodeRule("decode.concat", "", "output_concat", ops=("aten.cat.default",)),
        NodeRule("decode.clamp", "", "clamp", ops=("aten.clamp.default",)),
        NodeRule("decode.slice", "", "post_quant_conv", ops=("aten.slice.Tensor", "aten.alias.default")),
    ),
)

_ENC_BLOCK = r"vae\.(encoder\.(?:down_blocks\.\d+|mid_block\.resnets\.\d+))"
_ENC_ATTN = r"vae\.(encoder\.mid_block\.attentions\.\d+)"

VAE_ENCODE_RULES = NodeRules(
    "diffusers-wan-vae-encode",
    (
        NodeRule("enc.resnet.cache", _ENC_BLOCK, r"\1.feat_cache", classes=("WanResidualBlock",)),
        NodeRule("enc.resnet.add", _ENC_BLOCK, r"\1.add", after="conv2", classes=("WanResidualBlock",)),
        NodeRule(
            "enc.resample", r"vae\.(encoder\.down_blocks\.\d+)", r"\1.reshuffle", classes=("WanResample",)
        ),
        NodeRule("enc.attn.core", _ENC_ATTN, r"\1.attn_core", classes=("WanAttentionBlock",)),
        NodeRule("enc.attn.add", _ENC_ATTN, r"\1.add", after="proj", classes=("WanAttentionBlock",)),
        NodeRule("encoder.cache", r"vae\.encoder", "encoder.feat_cache", classes=("WanEncoder3d",)),
        NodeRule("encode.concat", "", "latent_concat", ops=("aten.cat.default",)),
        NodeRule("encode.slice", "", "encoder.conv_in", ops=("aten.slice.Tensor", "aten.alias.default")),
        NodeRule(
            "encode.posterior",
            "",
            "posterior",
            ops=("aten.split.Tensor", "aten.clamp.default", "aten.mul.Tensor", "aten.exp.default"),
        ),
    ),
)
