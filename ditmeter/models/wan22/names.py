"""Module paths of the Wan2.2 family's VAEs → analytic ids: the Wan2.1 VAE's table
(:data:`ditmeter.models.wan21.names.VAE_NAMES`) and the Wan2.2 VAE's (diffusers
``AutoencoderKLWan(is_residual=True)``), whose residual blocks name their children ``resnets``,
``downsampler`` / ``upsampler`` and ``avg_shortcut``. The ids are the diffusers paths without
the tracer wrapper's ``vae.``.
"""

from __future__ import annotations

from ditmeter.compare.names import NameTable
from ditmeter.models.wan21.names import VAE_NAMES

_BLOCK = r"(?:down|up)_blocks(?:\.\d+(?:\.(?:resnets(?:\.\d+)?|downsampler|upsampler|avg_shortcut))?)?"
_MODULE = (
    r"(?:post_quant_conv|quant_conv|(?:de|en)coder(?:\.(?:conv_in|conv_out|norm_out|nonlinearity"
    rf"|mid_block(?:\.(?:resnets|attentions)(?:\.\d+)?)?|{_BLOCK}))?)"
)
_CHILD = (
    r"(?:conv_shortcut|norm1|norm2|conv1|conv2|nonlinearity|norm|to_qkv|proj|time_conv|resample(?:\.[01])?)"
)

VAE22_NAMES = NameTable(
    (
        *VAE_NAMES.rows,
        (rf"vae\.({_MODULE})\.dropout", r"\1"),
        (rf"vae\.({_MODULE}(?:\.{_CHILD})?)", r"\1"),
    )
)
