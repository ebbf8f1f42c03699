"""Token geometry: the one place a workload becomes latent and token shapes.

The pipeline (``pipeline=``) decides the rule for frame counts that are not
4n+1 (see docs/geometry.md):

* ``official`` (Wan2.1 code): latent frames = (F − 1)//4 + 1, so 16 frames → 4.
* ``diffusers`` (``WanPipeline``): F is first rounded to F//4·4 + 1 (16 → 17,
  5 latent frames), with a warning.

A family may size the latent itself (the official image-to-video code derives
it from ``max_area`` and the image's aspect ratio) and pass that ``size``.

Height and width: the official code floors H/stride and W/stride (VAE) and
needs each latent side to be whole patches: an odd latent side (H//8 odd for
the Wan2.1 models and the A14B experts, H//16 for TI2V-5B) loses a row in the
patch conv while the token count is padded to ``ceil(lat_h·lat_w/4·lat_f)``,
and the run fails, so ``official`` refuses it naming the nearest sizes that
run. An even latent side runs, the pixels past it dropped (500 → 496); every
stage (the VAE encode and decode too) works on that size. ``WanPipeline``
refuses sizes that are not multiples of 16 with a ValueError, so the
``diffusers`` rule refuses them too, and floors the rest to whole patches.
"""

from __future__ import annotations

import attrs

from ditmeter.analytic.workload import Workload
from ditmeter.errors import ConfigError


@attrs.frozen
class Adjustment:
    """A requested value the rounding rule changed, and why."""

    field: str
    requested: int
    effective: int
    reason: str

    @property
    def text(self) -> str:
        """``workload.num_frames: 18 → 17 (the rule)``: how every command says it."""
        return f"workload.{self.field}: {self.requested} → {self.effective} ({self.reason})"


@attrs.frozen
class Geometry:
    """Latent and token shapes of one DiT forward."""

    latent_frames: int
    latent_height: int
    latent_width: int
    patch_frames: int
    patch_height: int
    patch_width: int
    context_len: int
    effective_frames: int
    effective_height: int
    effective_width: int
    adjustments: tuple[Adjustment, ...]

    @property
    def tokens(self) -> int:
        """Video tokens per sample: L = frames × height × width in patches."""
        return self.patch_frames * self.patch_height * self.patch_width

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (self.latent_frames, self.latent_height, self.latent_width)


@attrs.frozen
class Resize:
    """A pixel size the pipeline derives itself (before flooring to whole patches), and why."""

    height: int
    width: int
    reason: str


#: diffusers' Wan pipelines refuse a height or width that is not a multiple of this
#: (``check_inputs``); a multiple of it that is not one of the VAE stride × patch is floored to
#: whole patches with a warning (TI2V-5B: 32).
DIFFUSERS_MULTIPLE = 16


def geometry(
    workload: Workload,
    vae_stride: tuple[int, int, int],
    patch_size: tuple[int, int, int],
    size: Resize | None = None,
) -> Geometry:
    """Latent and token geometry of ``workload`` under its pipeline's rule, for a VAE of stride
    ``vae_stride`` (frames, height, width) and a DiT patch of ``patch_size``; ``size`` replaces
    the requested height and width when the pipeline sizes the video itself."""
    st, sh, sw = vae_stride
    pt, ph, pw = patch_size
    pix_h, pix_w = sh * ph, sw * pw
    for key, value, unit in (("height", workload.height, pix_h), ("width", workload.width, pix_w)):
        if value < unit:
            raise ConfigError(
                f"workload.{key}", f"{value} is below one patch ({unit} pixels); allowed: >= {unit}"
            )
    adjustments: list[Adjustment] = []
    frames = workload.num_frames
    if workload.pipeline == "diffusers":
        for key, value in (("height", workload.height), ("width", workload.width)):
            if value % DIFFUSERS_MULTIPLE:  # larger patches (VAE stride × patch) are floored below
                raise ConfigError(
                    f"workload.{key}",
                    f"{value} is not a multiple of {DIFFUSERS_MULTIPLE}; the diffusers pipeline refuses "
                    f"it (allowed: multiples of {DIFFUSERS_MULTIPLE}, or pipeline=official)",
                )
        if frames % st != 1:
            rounded = max(frames // st * st + 1, 1)
            adjustments.append(Adjustment("num_frames", frames, rounded, f"diffusers rule: F//{st}*{st}+1"))
            frames = rounded
    latent_frames = (frames - 1) // st + 1
    effective_frames = (latent_frames - 1) * st + 1
    if effective_frames != frames:
        adjustments.append(
            Adjustment(
                "num_frames",
                frames,
                effective_frames,
                f"official rule: latent frames (F-1)//{st}+1 = {latent_frames}",
            )
        )
    # Every stage sees the same latent, whole patches: the VAE decodes exactly the rows the DiT
    # denoised (diffusers floors to them; the official code cannot run a side they do not divide).
    height, width = (size.height, size.width) if size is not None else (workload.height, workload.width)
    if size is not None:
        for key, requested, sized in (("height", workload.height, height), ("width", workload.width, width)):
            if requested != sized:
                adjustments.append(Adjustment(key, requested, sized, size.reason))
    if workload.pipeline == "official":
        _refuse_odd_latents((("height", height, sh, ph), ("width", width, sw, pw)))
    patch_h, patch_w = height // sh // ph, width // sw // pw
    latent_h, latent_w = patch_h * ph, patch_w * pw
    eff_h, eff_w = patch_h * pix_h, patch_w * pix_w
    for key, requested, effective in (("height", height, eff_h), ("width", width, eff_w)):
        if requested != effective:
            adjustments.append(
                Adjustment(key, requested, effective, f"floored to whole {pix_h}-pixel patches")
            )
    return Geometry(
        latent_frames=latent_frames,
        latent_height=latent_h,
        latent_width=latent_w,
        patch_frames=latent_frames // pt,
        patch_height=patch_h,
        patch_width=patch_w,
        context_len=workload.context_len,
        effective_frames=effective_frames,
        effective_height=eff_h,
        effective_width=eff_w,
        adjustments=tuple(adjustments),
    )


def _refuse_odd_latents(sides: tuple[tuple[str, int, int, int], ...]) -> None:
    """The official code makes the latent at ``size // stride`` and pads the tokens to
    ``ceil(lat_h·lat_w/4·lat_f)``: a side the patch does not divide loses its last latent row in
    the patch conv, and the run fails (T2V: the scheduler step's shape mismatch; TI2V: a negative
    length for its per-token timesteps). Refuse it, naming the nearest sizes that run."""
    for key, value, stride, patch in sides:
        latent = value // stride
        if latent % patch:
            unit = stride * patch
            below = value // unit * unit
            raise ConfigError(
                f"workload.{key}",
                f"{value} gives an odd latent {key} ({value}//{stride} = {latent}), which the official code "
                f"cannot run (its patch takes {patch} latent rows; the padded token count no longer "
                f"matches the video); allowed: {key}//{stride} a multiple of {patch}, nearest "
                f"{below} or {below + unit}",
            )
