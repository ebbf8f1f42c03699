"""Peak live activations of the Wan-VAE encode and decode (diffusers ``AutoencoderKLWan``), in bytes.

Both run chunk by chunk with a causal cache: every causal 3×3×3 conv keeps the
last 2 frames of its input for the next call (the temporal downsamplers' time
convs keep 1 frame). The peak is at a full-resolution resnet conv of a later
call (read from the real module's tensor lifetimes, ``ditmeter.tracer.memory``;
tests/test_memory.py checks these rules against it):

* decode: the last call's ``up_blocks.3.resnets.<last>.conv2``;
* encode: the last call's ``down_blocks.0.conv2``.

At that conv the live set is every cache (the convs already run in this call
hold their new cache, the rest the previous call's), the conv's new cache,
the working tensors of the conv at full resolution (the up block's input that
the decoder holds, the resnet's input kept for the residual, the SiLU output,
the cache + frames concatenation and its zero-padded copy), the output so far
and the previous chunk's output, and (decode) the ``post_quant_conv`` output of
all latents. Caches made by the first call hold one frame, so a conv's old
cache on the second call is one frame.
"""

from __future__ import annotations

import itertools

from ditmeter.analytic.cost import DTYPE_BYTES
from ditmeter.models.wan21.vae_spec import VaeSpec

#: A causal conv's cache: (input channels, height, width, frames it keeps after a later call;
#: 0 for a decoder time conv, which the first call skips).
Cache = tuple[int, int, int, int]


def _decoder_caches(spec: VaeSpec, h: int, w: int) -> tuple[list[Cache], int, int, int]:
    """The decoder's caches in call order, without ``conv_out`` and the peak conv (the last
    up block's last conv2); returns them, that conv's channels and the full-resolution size."""
    d = [spec.base_dim * m for m in (spec.dim_mult[-1], *spec.dim_mult[::-1])]
    up_t = spec.temperal_downsample[::-1]
    caches: list[Cache] = [(spec.z_dim, h, w, 2)] + [(d[0], h, w, 2)] * 4  # conv_in, the mid block
    for i, (cin, cout) in enumerate(itertools.pairwise(d)):
        cin = cin if i == 0 else cin // 2
        for j in range(spec.num_res_blocks + 1):
            caches += [(cin if j == 0 else cout, h, w, 2), (cout, h, w, 2)]
        if i < len(spec.dim_mult) - 1:
            if up_t[i]:
                caches.append((cout, h, w, 0))  # the time conv: from the second call on
            h, w = 2 * h, 2 * w
    caches.pop()  # the peak conv, counted apart
    return caches, d[-1], h, w


def decode_activation_bytes(spec: VaeSpec, batch: int, latent_frames: int, h: int, w: int) -> int:
    """Peak live bytes of decoding ``batch`` × (z_dim, latent_frames, h, w) latents (module doc)."""
    a = DTYPE_BYTES[spec.dtype]
    caches, c, big_h, big_w = _decoder_caches(spec, h, w)
    plane, padded = c * big_h * big_w, c * (big_h + 2) * (big_w + 2)
    latents = spec.z_dim * latent_frames * h * w  # post_quant_conv output, all latents
    if latent_frames == 1:  # the first call only: one frame everywhere, the time convs skipped
        held = sum(ch * hh * ww for ch, hh, ww, keep in caches if keep) + 2 * plane  # + the peak's
        return batch * a * (held + 3 * plane + 3 * padded + latents)
    old = 1 if latent_frames == 2 else 2  # caches made by the first call hold one frame
    t = 4  # frames per later call at full resolution
    held = sum(ch * hh * ww * 2 for ch, hh, ww, _ in caches) + old * plane  # + conv_out's old cache
    working = 2 * plane + old * plane + 3 * t * plane + (old + t) * plane + (t + 2) * padded
    before = 1 + 4 * (latent_frames - 2)  # output frames so far; the previous chunk held too
    outputs = spec.out_channels * big_h * big_w * (before + (4 if latent_frames > 2 else 0))
    return batch * a * (held + working + outputs + latents)


def _encoder_caches(spec: VaeSpec, height: int, width: int) -> list[Cache]:
    """The encoder's caches below full resolution, in call order (the full-resolution resnet
    convs and ``conv_in`` are counted apart)."""
    dims = [spec.base_dim * m for m in (1, *spec.dim_mult)]
    h, w = height, width
    caches: list[Cache] = []
    for i, (cin, cout) in enumerate(itertools.pairwise(dims)):
        for _ in range(spec.num_res_blocks):
            caches += [(cin, h, w, 2), (cout, h, w, 2)]
            cin = cout
        if i < len(spec.dim_mult) - 1:
            h, w = h // 2, w // 2
            if spec.temperal_downsample[i]:
                caches.append((cout, h, w, 1))  # the time conv keeps one frame
    c = dims[-1]
    caches += [(c, h, w, 2)] * 5  # the mid block's two resnets, conv_out
    return caches[2 * spec.num_res_blocks :]


def encode_activation_bytes(spec: VaeSpec, batch: int, frames: int, height: int, width: int) -> int:
    """Peak live bytes of encoding ``batch`` videos of ``frames`` (1 + 4k) frames (module doc).

    The peak is at the last full-resolution conv (``down_blocks.1.conv2``): on the first call its
    output, on later calls its zero-padded input.
    """
    a = DTYPE_BYTES[spec.dtype]
    c, convs = spec.base_dim, 2 * spec.num_res_blocks  # full-resolution causal convs
    plane, padded, rgb = c * height * width, c * (height + 2) * (width + 2), 3 * height * width
    calls = 1 + (frames - 1) // 4
    if calls == 1:  # one frame: conv_in's and each full-resolution conv's cache, the conv's
        # residual input, SiLU output, padded input and output
        return batch * a * (rgb + convs * plane + 3 * plane + 3 * padded)
    old, t = (1 if calls == 2 else 2), 4  # caches made by the first call hold one frame
    held = 2 * rgb + (convs - 1) * 2 * plane + old * plane + 2 * plane  # new caches, the peak's old
    held += sum(ch * hh * ww * min(keep, old) for ch, hh, ww, keep in _encoder_caches(spec, height, width))
    working = 2 * t * plane + (old + t) * plane + (t + 2) * padded
    latent = 2 * spec.z_dim * (height // 8) * (width // 8)
    outputs = latent * (calls - 1 + (1 if calls > 2 else 0))  # latents so far, the previous chunk
    return batch * a * (held + working + outputs)
