"""Tiled VAE decode (``methods.vae_tiling``): diffusers' ``AutoencoderKLWan.enable_tiling()``, read
from ``diffusers/models/autoencoders/autoencoder_kl_wan.py`` (0.42, ``tiled_decode``,
``blend_v``, ``blend_h``), for the Wan2.1 VAE (also Wan2.2 A14B's).

With tiling on, ``_decode`` hands latents wider or taller than one tile to ``tiled_decode``:

- tiles of ``TILE_SAMPLE`` = 256 pixels (32 latents) start every ``TILE_STRIDE`` = 192 pixels (24
  latents) down and across (the last ones clipped to the latents left); each is decoded on its
  own, frame by frame through the causal cache (``clear_cache`` between tiles: every tile's first
  call is a first call), its ``post_quant_conv`` per frame, its frames joined by one ``cat``;
- every tile below the first row is blended with the one above over ``min(64, both heights)``
  pixel rows, every tile right of the first column with the one to its left over as many columns:
  per row or column ``a[..] * (1 - y/e) + b[..] * (y/e)`` written into ``b`` (two ``mul``, an
  ``add``, a ``copy_``), each on a slice of channels × frames × the tile's other side;
- each tile cropped to 192 × 192 pixels (a view), the tiles of a row joined by a ``cat``, the rows
  by another, the video cropped (a view) and clamped once.

The decoder's convolutions and attention per tile are the untiled decoder's at the tile's size, so
its tensor FLOPs are those of every tile decoded alone (``tests/test_vae_tiling.py`` holds them to
FlopCounterMode on the real tiled decode). Memory: the decoded tiles are all held to the end
(``rows`` stays alive), and at the clamp three videos are live beside them (the joined rows, their
``cat``, the clamp's output), so the peak is every tile's output plus the larger of one tile's
decode and three videos (an estimate from the code's order, not traced). Time: the stage runs many
decoder calls, so like the untiled decode it is costed by its leaves' fused costs (the blends as one
pass per seam, not their row-by-row launches: ``_vae_blend`` lists those for when multi-call stages
take eager recipes).
"""

from __future__ import annotations

import itertools
from collections import Counter

from ditmeter.analytic.cost import DTYPE_BYTES
from ditmeter.analytic.tree import Composite
from ditmeter.errors import ConfigError
from ditmeter.models.wan21.vae import _Decode, _placeholders, later_calls
from ditmeter.models.wan21.vae_memory import decode_activation_bytes
from ditmeter.models.wan21.vae_spec import VaeSpec

#: diffusers ``AutoencoderKLWan.__init__``: ``tile_sample_min_height = 256``,
#: ``tile_sample_stride_height = 192`` (the same for the width), what ``enable_tiling()`` keeps.
TILE_SAMPLE, TILE_STRIDE = 256, 192
#: Pixels two tiles overlap and blend over: ``tile_sample_min - tile_sample_stride``.
BLEND = TILE_SAMPLE - TILE_STRIDE
#: The Wan2.1 VAE's spatial compression (``spatial_compression_ratio``): 8 pixels a latent.
RATIO = 8
#: Output channels of the decoder (RGB).
RGB = 3


def tile_shapes(latent_h: int, latent_w: int) -> list[list[tuple[int, int]]]:
    """The (height, width) in latents of every tile, by row: starts every 24 latents, 32 at most."""
    size, stride = TILE_SAMPLE // RATIO, TILE_STRIDE // RATIO
    return [
        [(min(size, latent_h - i), min(size, latent_w - j)) for j in range(0, latent_w, stride)]
        for i in range(0, latent_h, stride)
    ]


def tiled(latent_h: int, latent_w: int) -> bool:
    """Whether ``_decode`` tiles these latents (wider or taller than one tile)."""
    size = TILE_SAMPLE // RATIO
    return latent_h > size or latent_w > size


def check(spec: VaeSpec, pipeline: str) -> None:
    """Refuse what has no tiled decode: the official code's VAE, the Wan2.2 VAE (TI2V-5B)."""
    if pipeline != "diffusers":
        raise ConfigError(
            "methods.vae_tiling",
            "diffusers' AutoencoderKLWan.enable_tiling(); the official VAE has no tiled decode: use "
            "pipeline=diffusers, or allowed: false",
        )
    if spec.z_dim != 16:
        raise ConfigError(
            "methods.vae_tiling", "modelled for the Wan2.1 VAE (z_dim 16) only, not TI2V-5B's; allowed: false"
        )


def build_tiled_decode(
    spec: VaeSpec, batch: int, latent_frames: int, latent_h: int, latent_w: int
) -> Composite:
    """The cost tree of ``tiled_decode`` (the module docstring); latents one tile or smaller are
    decoded whole, as ``_decode`` does: the caller checks :func:`tiled` first."""
    root = _Decode(spec, batch)
    acc, a = root.acc, root.a
    _placeholders(root, root.time_convs())
    rows = tile_shapes(latent_h, latent_w)
    frames = 1 + 4 * (latent_frames - 1)
    for (th, tw), n in Counter(itertools.chain.from_iterable(rows)).items():
        first = _Decode(spec, batch)
        first.conv("post_quant_conv", spec.z_dim, spec.z_dim, 1, (latent_frames, th, tw), (0, 0))
        first.call((th, tw), first=True)
        acc.absorb(first.acc, n)
        for index, k in later_calls(latent_frames - 1):
            later = _Decode(spec, batch, index)
            later.call((th, tw), first=False)
            acc.absorb(later.acc, n * k)
        out = batch * frames * RGB * th * RATIO * tw * RATIO
        acc.add("tile_concat", "resample", "layout_copy", elements=n * out, act_bytes=a)
    per_pixel = batch * RGB * frames
    for i, row in enumerate(rows):
        for j, (th, tw) in enumerate(row):
            h, w = th * RATIO, tw * RATIO
            # (leaf, the neighbour's and this tile's extent across the seam, the slice's length)
            seams = [("blend_v", rows[i - 1][j][0] * RATIO, h, w)] if i > 0 else []
            seams += [("blend_h", row[j - 1][1] * RATIO, w, h)] if j > 0 else []
            for leaf, before, extent, length in seams:
                e = min(BLEND, before, extent)
                acc.add(leaf, "resample", "tile_blend", slices=e, elements=per_pixel * length, act_bytes=a)
    video = batch * RGB * frames * latent_h * RATIO * latent_w * RATIO
    acc.add("row_concat", "resample", "layout_copy", elements=video, act_bytes=a)
    acc.add("rows_concat", "resample", "layout_copy", elements=video, act_bytes=a)
    acc.add("clamp", "resample", "clamp", elements=video, act_bytes=a)
    return acc.tree()


def tiled_decode_bytes(spec: VaeSpec, batch: int, latent_frames: int, latent_h: int, latent_w: int) -> int:
    """Peak live bytes of ``tiled_decode`` (an estimate, the module docstring): every decoded tile
    held, plus the larger of one tile's decode and three videos (rows joined, their ``cat``, the
    clamp's output)."""
    a = DTYPE_BYTES[spec.dtype]
    frames = 1 + 4 * (latent_frames - 1)
    shapes = list(itertools.chain.from_iterable(tile_shapes(latent_h, latent_w)))
    held = sum(batch * RGB * frames * th * tw * RATIO * RATIO for th, tw in shapes) * a
    decode = max(decode_activation_bytes(spec, batch, latent_frames, th, tw) for th, tw in set(shapes))
    video = batch * RGB * frames * latent_h * RATIO * latent_w * RATIO * a
    return held + max(decode, 3 * video)
