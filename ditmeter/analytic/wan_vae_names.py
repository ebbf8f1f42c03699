"""diffusers ``AutoencoderKLWan`` paths → the VAE encode's and decode's module ids.

The ids are the diffusers paths themselves (see :mod:`ditmeter.analytic.wan_vae`);
the tracer's wrapper adds a ``vae.`` prefix, and the RMS norms' and the shared
SiLU modules map onto their leaves as they are.
"""

from __future__ import annotations

import re

_KNOWN = re.compile(
    r"(post_quant_conv|quant_conv|(de|en)coder(\.(conv_in|conv_out|norm_out|nonlinearity"
    r"|mid_block(\.(resnets|attentions)(\.\d+)?)?"
    r"|up_blocks(\.\d+(\.(resnets|upsamplers)(\.\d+)?)?)?|down_blocks(\.\d+)?))?)"
    r"(\.(conv_shortcut|norm1|norm2|conv1|conv2|nonlinearity|dropout|norm|to_qkv|proj|time_conv|resample(\.[01])?))?"
)


def vae_canonical_id(path: str) -> str | None:
    """``vae.decoder.up_blocks.1.resnets.0.conv1`` → ``decoder.up_blocks.1.resnets.0.conv1``
    (the same for ``vae.encoder.…``), or None if unknown."""
    if path in ("", "vae"):
        return ""
    rest = path.removeprefix("vae.")
    if not _KNOWN.fullmatch(rest):
        return None
    if rest.endswith(".dropout"):  # identity at inference: its (absent) ops belong to the block
        return rest.removesuffix(".dropout")
    return rest
