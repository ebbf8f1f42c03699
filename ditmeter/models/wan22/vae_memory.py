"""Peak live activations of the Wan2.2 VAE's encode and decode (diffusers ``AutoencoderKLWan``
with ``is_residual=True``), in bytes.

The loops and caches are the Wan2.1 VAE's (:mod:`ditmeter.models.wan21.vae_memory`): every
causal conv keeps the last 2 frames of its input for the next call (the first call's caches hold
one frame; a downsampler's time conv keeps one frame; an upsampler's time conv keeps none after
the first call, then 2). The residual blocks move the peaks (read from the real module's tensor
lifetimes, ``ditmeter.tracer.memory``; tests/test_wan22_vae.py checks these rules against it):

* decode, first call: the last up block's last ``conv2`` (its output); later calls: the last up
  block's ``resnets.0.conv1``, whose input is twice as wide as the rest of the block (512 of 256),
  at its zero-padded input;
* encode: the first down block's last ``conv2`` at full resolution (on the first call its
  output, later its padded input).

At that conv the live set is every cache (those already run in this call hold their new cache,
the rest the previous call's), the conv's new cache, the block's input and its ``clone()`` for
the shortcut, the resnet's input, the SiLU output, the cache + frames concatenation and its
zero-padded copy, the outputs so far and the previous chunk's output, and the whole latents
(decode: ``post_quant_conv`` of all frames) or the whole patchified video (encode).

Exact at the release config (any size, batch, frame count); the peak positions assume at least
two resnets per block (``VaeSpec`` refuses fewer); without temporal downsampling or pixel
patches the encode is 0.1–0.5% off.
"""

from __future__ import annotations

import itertools

from ditmeter.analytic.cost import DTYPE_BYTES
from ditmeter.models.wan21.vae_spec import VaeSpec

#: A causal conv's cache: (channels, height, width, frames); the frame count is the most it holds
#: where :func:`_held` caps it (encode: after a later call; decode: after the first call).
Cache = tuple[int, int, int, int]


def _held(caches: list[Cache], frames: int) -> int:
    """Elements of ``caches`` holding at most ``frames`` frames each."""
    return sum(c * h * w * min(keep, frames) for c, h, w, keep in caches)


def decode_activation_bytes(spec: VaeSpec, batch: int, latent_frames: int, h: int, w: int) -> int:
    """Peak live bytes of decoding ``batch`` × (z_dim, latent_frames, h, w) latents (module doc)."""
    a, nrb = DTYPE_BYTES[spec.dtype], spec.num_res_blocks
    d = [spec.decoder_dim * m for m in (spec.dim_mult[-1], *spec.dim_mult[::-1])]
    up_t, last = spec.temperal_downsample[::-1], len(spec.dim_mult) - 1
    # the caches before the peak conv: (channels, height, width, frames after the first call)
    before: list[Cache] = [(spec.z_dim, h, w, 1)] + [(d[0], h, w, 1)] * 4  # conv_in, the mid block
    for i, (cin, cout) in enumerate(itertools.pairwise(d[:-1])):
        for j in range(nrb + 1):
            before += [(cin if j == 0 else cout, h, w, 1), (cout, h, w, 1)]
        if up_t[i]:
            before.append((cout, h, w, 0))  # the time conv: none on the first call, then 2 frames
        h, w = 2 * h, 2 * w
    cin, c = d[-2], d[-1]  # the last up block, at full resolution
    plane, padded = h * w, (h + 2) * (w + 2)
    latents = spec.z_dim * latent_frames * (h >> last) * (w >> last)  # post_quant_conv, all frames
    rest = (2 * (nrb + 1) - 1) * c * plane  # the last block's other convs' caches
    if latent_frames == 1:  # the first call, one frame: at the last conv2's output
        held = _held(before, 1) + cin * plane + rest
        working = 2 * cin * plane + 3 * c * plane + c * 3 * padded  # input, clone; resnet input, SiLU, out
        return batch * a * (held + working + latents)
    old, t = (1 if latent_frames == 2 else 2), spec.temporal_stride
    held = 2 * sum(ch * hh * ww for ch, hh, ww, _ in before)
    held += (2 + old) * cin * plane + old * (rest + c * plane)  # the peak's new and old; conv_out's
    shortcut = c * t * plane if cin != c else 0  # resnets.0.conv_shortcut's output
    working = 3 * cin * t * plane + shortcut + cin * (old + t) * plane + cin * (t + 2) * padded
    so_far = 1 + t * (latent_frames - 2)  # output frames of the previous calls; the last chunk held too
    outputs = spec.out_channels * plane * (so_far + (t if latent_frames > 2 else 0))
    return batch * a * (held + working + outputs + latents)


def encode_activation_bytes(spec: VaeSpec, batch: int, frames: int, height: int, width: int) -> int:
    """Peak live bytes of encoding ``batch`` videos of ``frames`` (1 + 4k) frames (module doc)."""
    a, nrb, p = DTYPE_BYTES[spec.dtype], spec.num_res_blocks, spec.patch_size
    dims = [spec.base_dim * m for m in (1, *spec.dim_mult)]
    h, w = height // p, width // p
    plane, padded, c = h * w, (h + 2) * (w + 2), dims[0]
    video = spec.in_channels * frames * plane  # the patchified video, kept through the encode
    calls = 1 + (frames - 1) // 4
    if calls == 1:  # conv_in's and every full-resolution cache (the peak's too), one frame each;
        # the block's input and clone, the resnet's input, SiLU output, padded input and output
        held = spec.in_channels * plane + 2 * nrb * c * plane
        return batch * a * (video + held + 5 * c * plane + c * 3 * padded)
    last = len(spec.dim_mult) - 1
    lower: list[Cache] = []  # the caches below full resolution, in call order
    for i, (cin, cout) in enumerate(itertools.pairwise(dims)):
        if i:
            for j in range(nrb):
                lower += [(cin if j == 0 else cout, h, w, 2), (cout, h, w, 2)]
        if i < last:
            h, w = h // 2, w // 2
            if spec.temperal_downsample[i]:
                lower.append((cout, h, w, 1))  # the time conv keeps one frame
    lower += [(dims[-1], h, w, 2)] * 5  # the mid block's two resnets, conv_out
    old, t = (1 if calls == 2 else 2), 4  # caches made by the first call hold one frame
    held = spec.in_channels * 2 * plane + c * plane * (2 * 2 * nrb + old) + _held(lower, old)
    working = 4 * c * t * plane + c * (old + t) * plane + c * (t + 2) * padded
    latent = 2 * spec.z_dim * h * w
    outputs = latent * (calls - 1 + (1 if calls > 2 else 0))  # latents so far, the previous chunk
    return batch * a * (video + held + working + outputs)
