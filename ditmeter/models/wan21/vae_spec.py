"""``model.vae`` as a typed record: the VAE's shape in diffusers' ``AutoencoderKLWan`` vocabulary.

Apart from :mod:`ditmeter.models.wan21.spec` so that the VAE's cost and memory rules
(:mod:`~ditmeter.models.wan21.vae`, :mod:`~ditmeter.models.wan21.vae_memory`) can read it while
the model record names those rules: the imports go one way.
"""

from __future__ import annotations

import attrs

from ditmeter.analytic.cost import DTYPE_BYTES
from ditmeter.validate import (
    FieldError,
    as_tuple,
    bool_tuple,
    boolean,
    int_tuple,
    one_of,
    positive_int,
    positive_int_at_most,
)


@attrs.frozen
class VaeSpec:
    """``model.vae`` in diffusers' ``AutoencoderKLWan`` vocabulary.

    The Wan2.1 VAE leaves the last four keys at diffusers' defaults; the Wan2.2 VAE sets them
    (``decoder_base_dim=256, in_channels=12, out_channels=12, patch_size=2, is_residual=true``:
    2×2 pixel patches as channels, residual down and up blocks).
    """

    name: str = attrs.field(converter=str)
    base_dim: int = attrs.field(validator=positive_int)
    z_dim: int = attrs.field(validator=positive_int)
    num_res_blocks: int = attrs.field(validator=positive_int_at_most(16, "a Wan-VAE stage has 2"))
    dim_mult: tuple[int, ...] = attrs.field(converter=as_tuple, validator=int_tuple(max_length=8))
    temperal_downsample: tuple[bool, ...] = attrs.field(converter=as_tuple, validator=bool_tuple)
    dtype: str = attrs.field(validator=one_of(*DTYPE_BYTES))
    decoder_base_dim: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(positive_int)
    )
    in_channels: int = attrs.field(default=3, validator=positive_int)
    out_channels: int = attrs.field(default=3, validator=positive_int)
    patch_size: int = attrs.field(default=1, validator=positive_int_at_most(4, "the Wan2.2 VAE has 2"))
    is_residual: bool = attrs.field(default=False, validator=boolean)

    def __attrs_post_init__(self) -> None:
        if len(self.temperal_downsample) != len(self.dim_mult) - 1:
            raise FieldError(
                "temperal_downsample",
                f"must be {len(self.dim_mult) - 1} booleans, got {list(self.temperal_downsample)!r}",
            )
        for key in ("in_channels", "out_channels"):
            if getattr(self, key) != 3 * self.patch_size**2:
                raise FieldError(
                    key, f"must be 3 x patch_size² = {3 * self.patch_size**2} (RGB pixel patches)"
                )
        if self.patch_size > 1 and not self.is_residual:
            raise FieldError(
                "is_residual", "pixel patches (patch_size > 1) come with residual blocks; allowed: true"
            )
        if self.is_residual:
            self._check_residual()

    def _check_residual(self) -> None:
        """What diffusers' residual blocks can build, and what the Wan2.2 VAE's memory rules cover."""
        if self.num_res_blocks < 2:
            raise FieldError(
                "num_res_blocks",
                f"{self.num_res_blocks} not allowed: the Wan2.2 VAE's rules need >= 2 (it has 2)",
            )
        enc = [self.base_dim * m for m in (1, *self.dim_mult)]
        dec = [self.decoder_dim * m for m in (self.dim_mult[-1], *self.dim_mult[::-1])]
        temporal = (*self.temperal_downsample, False)
        for i in range(len(self.dim_mult)):
            last = i == len(self.dim_mult) - 1
            down = 1 if last else 4 * (2 if temporal[i] else 1)  # AvgDown3D's factor
            up = 1 if last else 4 * (2 if self.temperal_downsample[::-1][i] else 1)  # DupUp3D's factor
            if enc[i] * down % enc[i + 1] or (not last and dec[i + 1] * up % dec[i]):
                raise FieldError(
                    "dim_mult",
                    f"{list(self.dim_mult)!r} not allowed: the residual shortcuts regroup channels, so each "
                    "width times its block's down/up factor must divide by the next (e.g. [1, 2, 4, 4])",
                )

    @property
    def decoder_dim(self) -> int:
        """The decoder's base width (diffusers: ``decoder_base_dim``, else ``base_dim``)."""
        return self.decoder_base_dim or self.base_dim

    @property
    def spatial_stride(self) -> int:
        """Pixels per latent side: the pixel patch × 2 per spatial downsampler."""
        return self.patch_size * (1 << (len(self.dim_mult) - 1))

    @property
    def temporal_stride(self) -> int:
        """Video frames per latent frame (after the first): 2 per temporal downsampler."""
        return 1 << sum(self.temperal_downsample)
