"""Wan2.1's name tables: each reference module's paths → the analytic tree's ids.

The analytic trees use the official Wan code's names; the references we trace
are the diffusers and transformers ports. Each table is data for the shared
matcher :class:`~ditmeter.compare.names.NameTable` (first full match wins).

- ``DIT_NAMES``: diffusers ``WanTransformer3DModel`` → official ``WanModel``
  (``blocks.7.attn1.to_q`` → ``blocks.7.self_attn.q``). NB: diffusers swaps two
  norm names: its ``norm2`` is the affine norm before cross-attention (official
  ``norm3``) and its ``norm3`` the norm before the FFN (official ``norm2``).
  Containers with no official counterpart map to their nearest official
  ancestor (``condition_embedder`` → the root, ``ffn.net.1`` dropout → ``ffn``).
- ``UMT5_NAMES``: transformers ``UMT5EncoderModel`` → the official T5 encoder.
  transformers nests each block as ``layer.0`` (self-attention with its norm and
  residual) and ``layer.1`` (feed-forward); the official code flattens both into
  the block. The gated FFN's ``wi_0``/``act`` are ``gate.0``/``gate.1``, ``wi_1``
  is ``fc1``, ``wo`` is ``fc2``.
- ``CLIP_NAMES``: transformers ``CLIPVisionModel`` → the official
  ``VisionTransformer``; the separate q/k/v projections all map onto the
  official fused ``to_qkv``.
- ``VAE_NAMES``: diffusers ``AutoencoderKLWan`` → the VAE's ids, which are the
  diffusers paths themselves without the tracer wrapper's ``vae.`` (the RMS
  norms and the shared SiLU map onto their leaves as they are; a dropout's
  absent ops belong to its block).
"""

from __future__ import annotations

from ditmeter.compare.names import NameTable

_B = r"blocks\.(\d+)"


def _attention(diffusers: str, official: str) -> tuple[tuple[str, str], ...]:
    a = rf"{_B}\.{diffusers}"
    return (
        (a, rf"blocks.\1.{official}"),
        (rf"{a}\.to_q", rf"blocks.\1.{official}.q"),
        (rf"{a}\.to_k", rf"blocks.\1.{official}.k"),
        (rf"{a}\.to_v", rf"blocks.\1.{official}.v"),
        (rf"{a}\.to_out(\.[01])?", rf"blocks.\1.{official}.o"),
        (rf"{a}\.norm_q", rf"blocks.\1.{official}.norm_q"),
        (rf"{a}\.norm_k", rf"blocks.\1.{official}.norm_k"),
    )


_IMG = r"condition_embedder\.image_embedder"

DIT_NAMES = NameTable(
    (
        (r"", ""),
        (r"patch_embedding", "patch_embedding"),
        (r"rope", "rope"),
        (r"condition_embedder", ""),
        (r"condition_embedder\.timesteps_proj", "time_embedding.sinusoid"),
        (r"condition_embedder\.time_embedder", "time_embedding"),
        (r"condition_embedder\.time_embedder\.linear_1", "time_embedding.0"),
        (r"condition_embedder\.time_embedder\.act", "time_embedding.1"),
        (r"condition_embedder\.time_embedder\.linear_2", "time_embedding.2"),
        (r"condition_embedder\.act_fn", "time_projection.0"),
        (r"condition_embedder\.time_proj", "time_projection.1"),
        (r"condition_embedder\.text_embedder", "text_embedding"),
        (r"condition_embedder\.text_embedder\.linear_1", "text_embedding.0"),
        (r"condition_embedder\.text_embedder\.act_1", "text_embedding.1"),
        (r"condition_embedder\.text_embedder\.linear_2", "text_embedding.2"),
        (_IMG, "img_emb"),
        (rf"{_IMG}\.norm1", "img_emb.proj.0"),
        (rf"{_IMG}\.ff(\.net)?", "img_emb.proj"),
        (rf"{_IMG}\.ff\.net\.0\.proj", "img_emb.proj.1"),
        (rf"{_IMG}\.ff\.net\.0", "img_emb.proj.2"),
        (rf"{_IMG}\.ff\.net\.1", "img_emb.proj"),
        (rf"{_IMG}\.ff\.net\.2", "img_emb.proj.3"),
        (rf"{_IMG}\.norm2", "img_emb.proj.4"),
        (r"blocks", "blocks"),
        (_B, r"blocks.\1"),
        (rf"{_B}\.norm1", r"blocks.\1.norm1"),
        (rf"{_B}\.norm2", r"blocks.\1.norm3"),
        (rf"{_B}\.norm3", r"blocks.\1.norm2"),
        *_attention("attn1", "self_attn"),
        *_attention("attn2", "cross_attn"),
        (rf"{_B}\.attn2\.add_k_proj", r"blocks.\1.cross_attn.k_img"),
        (rf"{_B}\.attn2\.add_v_proj", r"blocks.\1.cross_attn.v_img"),
        (rf"{_B}\.attn2\.norm_added_k", r"blocks.\1.cross_attn.norm_k_img"),
        (rf"{_B}\.ffn(\.net)?", r"blocks.\1.ffn"),
        (rf"{_B}\.ffn\.net\.0\.proj", r"blocks.\1.ffn.0"),
        (rf"{_B}\.ffn\.net\.0", r"blocks.\1.ffn.1"),
        (rf"{_B}\.ffn\.net\.1", r"blocks.\1.ffn"),
        (rf"{_B}\.ffn\.net\.2", r"blocks.\1.ffn.2"),
        (rf"{_B}\.scale_shift_table", r"blocks.\1.modulation"),
        (r"norm_out", "head.norm"),
        (r"proj_out", "head.head"),
        (r"scale_shift_table", "head.modulation"),
    )
)

_T5 = r"encoder\.block\.(\d+)"

UMT5_NAMES = NameTable(
    (
        (r"(encoder)?", ""),
        (r"shared|encoder\.embed_tokens", "token_embedding"),
        (r"encoder\.dropout", ""),
        (r"encoder\.block", "blocks"),
        (_T5, r"blocks.\1"),
        (rf"{_T5}\.layer\.[01](\.dropout)?", r"blocks.\1"),
        (rf"{_T5}\.layer\.0\.layer_norm", r"blocks.\1.norm1"),
        (rf"{_T5}\.layer\.0\.SelfAttention", r"blocks.\1.attn"),
        (rf"{_T5}\.layer\.0\.SelfAttention\.([qkvo])", r"blocks.\1.attn.\2"),
        (rf"{_T5}\.layer\.0\.SelfAttention\.relative_attention_bias", r"blocks.\1.pos_embedding"),
        (rf"{_T5}\.layer\.1\.layer_norm", r"blocks.\1.norm2"),
        (rf"{_T5}\.layer\.1\.DenseReluDense(\.dropout)?", r"blocks.\1.ffn"),
        (rf"{_T5}\.layer\.1\.DenseReluDense\.wi_0", r"blocks.\1.ffn.gate.0"),
        (rf"{_T5}\.layer\.1\.DenseReluDense\.act", r"blocks.\1.ffn.gate.1"),
        (rf"{_T5}\.layer\.1\.DenseReluDense\.wi_1", r"blocks.\1.ffn.fc1"),
        (rf"{_T5}\.layer\.1\.DenseReluDense\.wo", r"blocks.\1.ffn.fc2"),
        (r"encoder\.final_layer_norm", "norm"),
    )
)

_V = r"(?:vision_model\.)?"
_L = _V + r"encoder\.layers\.(\d+)"

CLIP_NAMES = NameTable(
    (
        (r"(?:vision_model)?", ""),
        (rf"{_V}(?:embeddings|encoder)", ""),
        (rf"{_V}embeddings\.patch_embedding", "patch_embedding"),
        (rf"{_V}embeddings\.position_embedding", "pos_embedding"),
        (rf"{_V}pre_layrnorm", "pre_norm"),
        (rf"{_V}encoder\.layers", "transformer"),
        (_L, r"transformer.\1"),
        (rf"{_L}\.layer_norm1", r"transformer.\1.norm1"),
        (rf"{_L}\.self_attn", r"transformer.\1.attn"),
        (rf"{_L}\.self_attn\.[qkv]_proj", r"transformer.\1.attn.to_qkv"),
        (rf"{_L}\.self_attn\.out_proj", r"transformer.\1.attn.proj"),
        (rf"{_L}\.layer_norm2", r"transformer.\1.norm2"),
        (rf"{_L}\.mlp", r"transformer.\1.mlp"),
        (rf"{_L}\.mlp\.fc1", r"transformer.\1.mlp.0"),
        (rf"{_L}\.mlp\.activation_fn", r"transformer.\1.mlp.1"),
        (rf"{_L}\.mlp\.fc2", r"transformer.\1.mlp.2"),
        (rf"{_V}post_layernorm", "post_norm"),
    )
)

#: Every module path of the Wan-VAE's encoder, decoder and (post_)quant convs, below ``vae.``.
_VAE_MODULE = (
    r"(?:post_quant_conv|quant_conv|(?:de|en)coder(?:\.(?:conv_in|conv_out|norm_out|nonlinearity"
    r"|mid_block(?:\.(?:resnets|attentions)(?:\.\d+)?)?"
    r"|up_blocks(?:\.\d+(?:\.(?:resnets|upsamplers)(?:\.\d+)?)?)?|down_blocks(?:\.\d+)?))?)"
)
_VAE_CHILD = (
    r"(?:conv_shortcut|norm1|norm2|conv1|conv2|nonlinearity|norm|to_qkv|proj|time_conv|resample(?:\.[01])?)"
)

VAE_NAMES = NameTable(
    (
        (r"(?:vae)?", ""),
        (rf"vae\.({_VAE_MODULE})\.dropout", r"\1"),
        (rf"vae\.({_VAE_MODULE}(?:\.{_VAE_CHILD})?)", r"\1"),
    )
)
