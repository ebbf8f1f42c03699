"""Node rules for the diffusers ``AutoencoderKLWan`` decode and encode: ops its containers run inline.

The encode (``ENCODE_REFERENCE``) has the same blocks under ``encoder.``, the
per-call latent concat and the Gaussian posterior after ``quant_conv``.


- ``WanResidualBlock``: the causal-cache copies → ``feat_cache``; the residual add → ``add``.
- ``WanAttentionBlock``: layout copies, the single-head SDPA → ``attn_core``; after
  ``proj``, the residual add → ``add``.
- ``WanResample``: cache copies, the time-doubling reshuffle, frame layout → ``reshuffle``.
- ``WanDecoder3d``: the conv_in/conv_out cache copies → ``feat_cache``.
- the decode loop (outside any module): the per-call output concat, the final clamp.
"""

from __future__ import annotations

from ditmeter.compare.mapping import NodeRule, register_node_rule

REFERENCE = "diffusers-wan-vae"

_BLOCK = r"vae\.(decoder\.(?:mid_block|up_blocks\.\d+)\.resnets\.\d+)"
_ATTN = r"vae\.(decoder\.mid_block\.attentions\.\d+)"
_UP = r"vae\.(decoder\.up_blocks\.\d+\.upsamplers\.0)"

for _rule in (
    NodeRule("resnet.cache", _BLOCK, r"\1.feat_cache", classes=("WanResidualBlock",)),
    NodeRule("resnet.add", _BLOCK, r"\1.add", after="conv2", classes=("WanResidualBlock",)),
    NodeRule("attn.core", _ATTN, r"\1.attn_core", classes=("WanAttentionBlock",)),
    NodeRule("attn.add", _ATTN, r"\1.add", after="proj", classes=("WanAttentionBlock",)),
    NodeRule("resample.reshuffle", _UP, r"\1.reshuffle", classes=("WanResample",)),
    NodeRule("decoder.cache", r"vae\.decoder", "decoder.feat_cache", classes=("WanDecoder3d",)),
    NodeRule("decode.concat", "", "output_concat", ops=("aten.cat.default",)),
    NodeRule("decode.clamp", "", "clamp", ops=("aten.clamp.default",)),
    NodeRule("decode.slice", "", "post_quant_conv", ops=("aten.slice.Tensor", "aten.alias.default")),
):
    register_node_rule(REFERENCE, _rule)


ENCODE_REFERENCE = "diffusers-wan-vae-encode"

_ENC_BLOCK = r"vae\.(encoder\.(?:down_blocks\.\d+|mid_block\.resnets\.\d+))"
_ENC_ATTN = r"vae\.(encoder\.mid_block\.attentions\.\d+)"

for _rule in (
    NodeRule("enc.resnet.cache", _ENC_BLOCK, r"\1.feat_cache", classes=("WanResidualBlock",)),
    NodeRule("enc.resnet.add", _ENC_BLOCK, r"\1.add", after="conv2", classes=("WanResidualBlock",)),
    NodeRule("enc.resample", r"vae\.(encoder\.down_blocks\.\d+)", r"\1.reshuffle", classes=("WanResample",)),
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
):
    register_node_rule(ENCODE_REFERENCE, _rule)
