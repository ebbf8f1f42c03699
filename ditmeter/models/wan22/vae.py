"""The Wan2.2 VAE (TI2V-5B) encode and decode as trees of costed modules, call by call.

diffusers ``AutoencoderKLWan(is_residual=True, patch_size=2, ...)`` runs the Wan2.1 VAE's loops
(:mod:`ditmeter.models.wan21.vae`: the encoder on the first frame then 4 frames per call, the
decoder on one latent frame per call, a causal cache of every conv) around other blocks:

- ``patchify`` folds each 2×2 pixel patch into channels (3 → 12) before the encoder and
  ``unpatchify`` unfolds the decoder's 12 channels after it (layout copies, no FLOPs);
- ``WanResidualDownBlock``: ``x.clone()``, its resnets, a ``downsampler`` (stride-2 conv, the
  time conv from the second call), plus an ``avg_shortcut`` (``AvgDown3D``: the input's 2×2
  (×2 in time) neighbourhoods averaged into the new channel groups) added to the output;
- ``WanResidualUpBlock``: ``x.clone()``, ``num_res_blocks + 1`` resnets, an ``upsampler`` whose
  3×3 conv keeps the width (Wan2.1 halves it), plus an ``avg_shortcut`` (``DupUp3D``: channels
  repeated into 2×2 (×2 in time) positions; the first call keeps the last frame) added;
- the decoder's widths come from ``decoder_base_dim`` (256: 1024, 1024, 1024, 512, 256), the
  encoder's from ``base_dim`` (160: 160, 160, 320, 640, 640).

Module ids are the diffusers paths (``decoder.up_blocks.0.upsampler.time_conv``); the clone and
the shortcut add of a block are its ``copy`` and ``add`` leaves.
"""

from __future__ import annotations

import itertools

from ditmeter.analytic.tree import Composite
from ditmeter.models.wan21.vae import VaeRules, _Decode, _Encode
from ditmeter.models.wan21.vae import build_vae_decode as _build_decode
from ditmeter.models.wan21.vae import build_vae_encode as _build_encode
from ditmeter.models.wan21.vae_spec import VaeSpec
from ditmeter.models.wan22.vae_memory import decode_activation_bytes, encode_activation_bytes

Thw = tuple[int, int, int]


def _copy(call: _Decode, mid: str, elements: int) -> None:
    call.acc.add(mid, "resample", "layout_copy", elements=elements, act_bytes=call.a)


class _ResidualDecode(_Decode):
    """One call of the residual decoder (module doc)."""

    def __init__(self, spec: VaeSpec, batch: int, index: int = 0) -> None:
        super().__init__(spec, batch, index)
        self.dims = [spec.decoder_dim * m for m in (spec.dim_mult[-1], *spec.dim_mult[::-1])]

    def time_convs(self) -> list[tuple[str, int, int]]:
        return [
            (f"decoder.up_blocks.{i}.upsampler.time_conv", self.dims[i + 1], 2 * self.dims[i + 1])
            for i, temporal in enumerate(self.upsample_t)
            if temporal
        ]

    def call(self, hw: tuple[int, int], first: bool) -> Thw:
        d, z, b = self.dims, self.spec.z_dim, self.batch
        thw: Thw = (1, *hw)
        self.cache("decoder.feat_cache", z, *hw)
        self.conv("decoder.conv_in", z, d[0], 27, thw, (2, 2))
        self.mid("decoder", d[0], thw)
        last = len(self.spec.dim_mult) - 1
        for i, (cin, cout) in enumerate(itertools.pairwise(d)):
            p = f"decoder.up_blocks.{i}"
            _copy(self, f"{p}.copy", b * cin * thw[0] * thw[1] * thw[2])
            t_in = thw[0]
            for j in range(self.spec.num_res_blocks + 1):
                self.resblock(f"{p}.resnets.{j}", cin if j == 0 else cout, cout, thw)
            if i < last:
                temporal = self.upsample_t[i]
                thw = self.resample_up(f"{p}.upsampler", cout, cout, thw, temporal, first)
                n = b * cout * thw[0] * thw[1] * thw[2]
                # DupUp3D: repeat_interleave, then the permuted copy (2·t_in frames; the first
                # call keeps the last of them)
                made = b * cout * (2 * t_in if temporal else t_in) * thw[1] * thw[2]
                _copy(self, f"{p}.avg_shortcut", 2 * made)
                self.acc.add(f"{p}.add", "norm_mod", "residual_add", elements=n, act_bytes=self.a)
        self.head("decoder", d[-1], self.spec.out_channels, thw)
        return thw

    def finish(self, frames: int, h: int, w: int) -> None:
        _copy(self, "unpatchify", self.batch * frames * self.spec.out_channels * h * w)


class _ResidualEncode(_Encode):
    """One call of the residual encoder (module doc)."""

    def encode_time_convs(self) -> list[tuple[str, int, int]]:
        dims = [self.spec.base_dim * m for m in (1, *self.spec.dim_mult)]
        last = len(self.spec.dim_mult) - 1
        return [
            (f"encoder.down_blocks.{i}.downsampler.time_conv", dims[i + 1], dims[i + 1])
            for i, temporal in enumerate(self.spec.temperal_downsample)
            if temporal and i < last
        ]

    def start(self, frames: int, height: int, width: int) -> tuple[int, int]:
        _copy(self, "patchify", self.batch * 3 * frames * height * width)
        p = self.spec.patch_size
        return height // p, width // p

    def encode_call(self, thw: Thw, first: bool) -> Thw:
        spec, b = self.spec, self.batch
        dims = [spec.base_dim * m for m in (1, *spec.dim_mult)]
        self.cache("encoder.feat_cache", spec.in_channels, thw[1], thw[2], thw[0])
        self.conv("encoder.conv_in", spec.in_channels, dims[0], 27, thw, (2, 2))
        last = len(spec.dim_mult) - 1
        for i, (cin, cout) in enumerate(itertools.pairwise(dims)):
            p = f"encoder.down_blocks.{i}"
            t, h, w = thw
            _copy(self, f"{p}.copy", b * cin * t * h * w)
            for j in range(spec.num_res_blocks):
                self.resblock(f"{p}.resnets.{j}", cin if j == 0 else cout, cout, thw)
            temporal = spec.temperal_downsample[i] if i < last else False
            if i < last:
                thw = self.resample_down(f"{p}.downsampler", cout, thw, temporal, first)
            # AvgDown3D (also the last block's, factor 1): the input front-padded to whole time
            # pairs (``F.pad``), permuted into channel groups (a copy) and averaged into the output
            padded = -(-t // 2) * 2 if temporal else t
            n = b * cout * thw[0] * thw[1] * thw[2]
            shortcut = {"padded": b * cin * padded * h * w, "averaged": n}
            self.acc.add(
                f"{p}.avg_shortcut",
                "resample",
                "layout_copy",
                elements=b * cin * t * h * w,
                act_bytes=self.a,
                **shortcut,
            )
            self.acc.add(f"{p}.add", "norm_mod", "residual_add", elements=n, act_bytes=self.a)
        return self.tail("encoder", dims[-1], 2 * spec.z_dim, thw)


def build_vae_decode(
    spec: VaeSpec, batch: int, latent_frames: int, latent_h: int, latent_w: int
) -> Composite:
    """The cost tree of decoding ``batch`` × (z_dim, T, h, w) latents into 1 + 4·(T−1) frames of
    16h × 16w pixels."""
    return _build_decode(spec, batch, latent_frames, latent_h, latent_w, _ResidualDecode)


def build_vae_encode(spec: VaeSpec, batch: int, frames: int, height: int, width: int) -> Composite:
    """The cost tree of encoding ``batch`` videos of ``frames`` (1 + 4k) frames of height × width
    pixels (patchified to 12 channels at half the size)."""
    return _build_encode(spec, batch, frames, height, width, _ResidualEncode)


#: The Wan2.2 VAE's rules.
WAN22_VAE = VaeRules(build_vae_encode, build_vae_decode, encode_activation_bytes, decode_activation_bytes)
