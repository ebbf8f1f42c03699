"""Node rules of the Wan2.2 family's VAEs: the Wan2.1 VAE's rules
(:mod:`ditmeter.models.wan21.node_rules`: resnets, the mid-block attention, the loops), which
also serve the Wan2.2 VAE's mid block and up-block resnets, plus the Wan2.2 VAE's own:

- ``WanResidualDownBlock`` / ``WanResidualUpBlock``: the input's ``clone()`` → ``copy``; the
  shortcut add → ``add`` (by op: the last child seen may be the previous call's);
- the down blocks' resnets (``down_blocks.N.resnets.M``): cache copies → ``feat_cache``, the
  residual add → ``add``;
- ``WanResample`` (``downsampler`` / ``upsampler``): cache copies, reshuffles → ``reshuffle``;
- the loops: ``patchify`` before the encoder calls, ``unpatchify`` after the decoder calls.
"""

from __future__ import annotations

from ditmeter.compare.mapping import NodeRule, NodeRules
from ditmeter.models.wan21.node_rules import VAE_DECODE_RULES, VAE_ENCODE_RULES

_LAYOUT = ("aten.view.default", "aten.permute.default", "aten.clone.default", "aten._unsafe_view.default")


def _block_rules(coder: str, kind: str, cls: str) -> tuple[NodeRule, ...]:
    block = rf"vae\.({coder}\.{kind}_blocks\.\d+)"
    sampler = rf"vae\.({coder}\.{kind}_blocks\.\d+\.{kind}sampler)"
    return (
        NodeRule(f"{kind}.copy", block, r"\1.copy", ops=("aten.clone.default",), classes=(cls,)),
        NodeRule(f"{kind}.add", block, r"\1.add", ops=("aten.add.Tensor",), classes=(cls,)),
        NodeRule(f"{kind}.resample", sampler, r"\1.reshuffle", classes=("WanResample",)),
    )


_DOWN_RESNET = r"vae\.(encoder\.down_blocks\.\d+\.resnets\.\d+)"

VAE22_DECODE_RULES = NodeRules(
    VAE_DECODE_RULES.reference,
    (
        *VAE_DECODE_RULES.rules,
        *_block_rules("decoder", "up", "WanResidualUpBlock"),
        NodeRule("decode.unpatchify", "", "unpatchify", ops=_LAYOUT),
    ),
)

VAE22_ENCODE_RULES = NodeRules(
    VAE_ENCODE_RULES.reference,
    (
        *VAE_ENCODE_RULES.rules,
        *_block_rules("encoder", "down", "WanResidualDownBlock"),
        NodeRule("down.resnet.cache", _DOWN_RESNET, r"\1.feat_cache", classes=("WanResidualBlock",)),
        NodeRule("down.resnet.add", _DOWN_RESNET, r"\1.add", after="conv2", classes=("WanResidualBlock",)),
        NodeRule("encode.patchify", "", "patchify", ops=_LAYOUT),
    ),
)
