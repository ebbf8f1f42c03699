"""The VAE decode spread over a plan's GPUs (``methods.vae_parallel``): LightX2V's parallel decode
of the Wan2.1 VAE, read from ``lightx2v/models/video_encoders/hf/wan/vae.py`` @ f8aee98
(``WanVAE.decode`` with ``parallel=True`` and its default ``use_2d_split=True``:
``calculate_2d_grid``, ``decode_dist_2d``).

Every rank of the job (``dist.get_world_size()``: the plan's GPUs) runs:

- the grid: ``calculate_2d_grid`` looks the (latent height, width, world size) up in its table
  (:data:`GRID_TABLE`, copied from the code) or takes the divisor pair ``h × w = world`` that
  divides the latents and is closest to square (``(1, world)`` when none divides);
- its slice of the latents, ``chunk = total // grid`` along each side plus :data:`PADDING` = 2
  latent rows (columns) of halo on each side (the first rank takes its 4 rows below, the last
  above), made ``contiguous()``: a tile of ``chunk + 4`` latents along a split side, the whole
  side along an unsplit one;
- ``model.decode`` of that tile (the untiled decoder, frame by frame through its causal cache)
  and ``clamp_``;
- the halo cropped off, ``contiguous()``: its ``8·chunk_h × 8·chunk_w`` pixels;
- ``dist.all_gather`` into a list of world-size pieces (torch's ProcessGroupNCCL gathers into one
  flat buffer, then copies each piece out: one ``copy_`` per rank), then ``torch.cat`` of each
  grid row's pieces along the width and of the rows along the height (every rank ends with the
  whole video; the pipeline saves rank 0's).

So a rank's decode is the untiled decoder's at its tile's size (its tensor FLOPs equal
FlopCounterMode's on the real decoder at that size: ``tests/test_vae_parallel.py``), plus copies of
its piece, the gathered video twice over (unflatten, the row cats) and once more (the rows' cat),
and one all-gather of its piece over every GPU. Rank 0's tile is the largest (the others' slices
are never longer), so its decode is the one the gather waits for. Memory: the larger of the tile's
decode and what is live at the last ``cat`` (the gathered pieces, the rows and their ``cat``: three
videos) with its cropped piece (an estimate from the code's order, not traced).

Not modelled: the Wan2.2 VAE (TI2V-5B: LightX2V's ``Wan2_2_VAE.decode`` decodes whole on every
rank), the 1D split (``use_2d_split=False``) and ``use_tiling_vae`` with it (each rank would run
LightX2V's own ``tiled_decode``). LightX2V runs its VAE in the run's dtype (``GET_DTYPE()``); here
it keeps the pipeline's VAE dtype, so only the spread changes.
"""

from __future__ import annotations

import math

import attrs

from ditmeter.analytic.cost import DTYPE_BYTES
from ditmeter.analytic.tree import Composite
from ditmeter.errors import ConfigError
from ditmeter.models.wan21.vae import decode_leaves
from ditmeter.models.wan21.vae_memory import decode_activation_bytes
from ditmeter.models.wan21.vae_spec import VaeSpec

KEY = "methods.vae_parallel"
#: ``decode_dist_2d``: ``padding_size = 2`` latent rows (columns) of halo on each side of a split.
PADDING = 2
#: The Wan2.1 VAE's spatial compression (``spatial_ratio = 8`` in ``decode_dist_2d``).
RATIO = 8
#: Output channels of the decoder (RGB).
RGB = 3
#: ``WanVAE.grid_table``: (latent height, latent width, world size) -> (grid rows, grid columns).
GRID_TABLE: dict[tuple[int, int, int], tuple[int, int]] = {
    # world_size = 2
    (60, 104, 2): (1, 2),
    (68, 120, 2): (1, 2),
    (90, 160, 2): (1, 2),
    (60, 60, 2): (1, 2),
    (72, 72, 2): (1, 2),
    (88, 88, 2): (1, 2),
    (120, 120, 2): (1, 2),
    (104, 60, 2): (2, 1),
    (120, 68, 2): (2, 1),
    (160, 90, 2): (2, 1),
    # world_size = 4
    (60, 104, 4): (2, 2),
    (68, 120, 4): (2, 2),
    (90, 160, 4): (2, 2),
    (60, 60, 4): (2, 2),
    (72, 72, 4): (2, 2),
    (88, 88, 4): (2, 2),
    (120, 120, 4): (2, 2),
    (104, 60, 4): (2, 2),
    (120, 68, 4): (2, 2),
    (160, 90, 4): (2, 2),
    # world_size = 8
    (60, 104, 8): (2, 4),
    (68, 120, 8): (2, 4),
    (90, 160, 8): (2, 4),
    (60, 60, 8): (2, 4),
    (72, 72, 8): (2, 4),
    (88, 88, 8): (2, 4),
    (120, 120, 8): (2, 4),
    (104, 60, 8): (4, 2),
    (120, 68, 8): (4, 2),
    (160, 90, 8): (4, 2),
}


def grid(latent_h: int, latent_w: int, ranks: int) -> tuple[int, int]:
    """``calculate_2d_grid``: the table's grid, else the divisor pair ``h × w = ranks`` dividing the
    latents whose pieces are closest to square (the first of equals), else ``(1, ranks)``."""
    if (latent_h, latent_w, ranks) in GRID_TABLE:
        return GRID_TABLE[(latent_h, latent_w, ranks)]
    best, closest = (1, ranks), math.inf
    for h in range(1, ranks + 1):
        w = ranks // h
        divides = ranks % h == 0 and latent_h % h == 0 and latent_w % w == 0
        if divides and abs(latent_h / h - latent_w / w) < closest:
            best, closest = (h, w), abs(latent_h / h - latent_w / w)
    return best


@attrs.frozen
class Split:
    """How ``decode_dist_2d`` splits (latent frames, height, width) latents over ``rows × cols``
    ranks: each rank's share (``chunk_*``) and the tile it decodes (``tile_*``, rank 0's)."""

    rows: int
    cols: int
    chunk_h: int
    chunk_w: int
    tile_h: int
    tile_w: int

    @property
    def ranks(self) -> int:
        return self.rows * self.cols


def _side(total: int, parts: int, what: str, ranks: int) -> tuple[int, int]:
    """(share, tile) along one side; refuses what the code would not cover or slice in range."""
    chunk = total // parts
    if total % parts:
        raise ConfigError(
            KEY,
            f"LightX2V's grid splits the latent {what} ({total}) {parts} ways for {ranks} GPUs and drops "
            f"the {total % parts} left over; allowed: false, or a size whose latents split",
        )
    if parts == 1:
        return chunk, total  # rank 0's slice [0, chunk + 4) is the whole side
    if chunk < PADDING or chunk + 2 * PADDING > total:
        raise ConfigError(
            KEY,
            f"the latent {what} ({total}) is too small for {parts} pieces with LightX2V's {PADDING}-latent "
            "halo on each side; allowed: false, or a larger size",
        )
    return chunk, chunk + 2 * PADDING


def split(latent_h: int, latent_w: int, ranks: int) -> Split:
    """The grid and rank 0's share and tile (module docstring)."""
    rows, cols = grid(latent_h, latent_w, ranks)
    chunk_h, tile_h = _side(latent_h, rows, "height", ranks)
    chunk_w, tile_w = _side(latent_w, cols, "width", ranks)
    return Split(rows, cols, chunk_h, chunk_w, tile_h, tile_w)


def check(spec: VaeSpec, gpus: int, tiling: bool) -> None:
    """Refuse what LightX2V's parallel decode does not run, or this model does not cover: one GPU,
    the Wan2.2 VAE (TI2V-5B), and diffusers' tiling with it."""
    if gpus < 2:
        raise ConfigError(
            KEY,
            "spreads the decode over a parallel.* plan's GPUs; give parallel.ulysses, ring or cfg (more "
            "than one GPU), or allowed: false",
        )
    if spec.z_dim != 16:
        raise ConfigError(
            KEY,
            "LightX2V's parallel decode is the Wan2.1 VAE's (z_dim 16; also Wan2.2 A14B's); TI2V-5B's "
            "Wan2_2_VAE decodes whole on every rank; allowed: false",
        )
    if tiling:
        raise ConfigError(
            KEY,
            "cannot combine with methods.vae_tiling: diffusers' tiled decode is modelled, LightX2V's own "
            "tiled_decode (use_tiling_vae) that its ranks would run is not; allowed: one of them",
        )


def piece_bytes(spec: VaeSpec, batch: int, latent_frames: int, s: Split) -> int:
    """Bytes of one rank's decoded piece (what it sends to the all-gather)."""
    frames = 1 + 4 * (latent_frames - 1)
    return batch * RGB * frames * s.chunk_h * RATIO * s.chunk_w * RATIO * DTYPE_BYTES[spec.dtype]


def build_rank_decode(spec: VaeSpec, batch: int, latent_frames: int, s: Split) -> Composite:
    """Rank 0's decode (the module docstring), the all-gather apart: its tile decoded as the untiled
    decoder runs it, the copies around it."""
    dec = decode_leaves(spec, batch, latent_frames, s.tile_h, s.tile_w)
    acc, a = dec.acc, dec.a
    acc.add(
        "latent_slice",
        "resample",
        "layout_copy",
        elements=batch * spec.z_dim * latent_frames * s.tile_h * s.tile_w,
        act_bytes=a,
    )
    piece = piece_bytes(spec, batch, latent_frames, s) // a
    acc.add("crop", "resample", "layout_copy", elements=piece, act_bytes=a)
    video = s.ranks * piece
    acc.add("gather_unflatten", "resample", "layout_copy", elements=video, act_bytes=a)
    acc.add("row_concat", "resample", "layout_copy", elements=video, act_bytes=a)
    acc.add("rows_concat", "resample", "layout_copy", elements=video, act_bytes=a)
    return acc.tree()


def rank_decode_bytes(spec: VaeSpec, batch: int, latent_frames: int, s: Split) -> int:
    """Rank 0's peak live bytes while decoding (an estimate, the module docstring): the larger of
    its tile's decode and, at the last ``cat``, three videos beside its cropped piece."""
    piece = piece_bytes(spec, batch, latent_frames, s)
    tile = decode_activation_bytes(spec, batch, latent_frames, s.tile_h, s.tile_w)
    return max(tile, 3 * s.ranks * piece + piece)
