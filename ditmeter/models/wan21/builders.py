"""Wan2.1's reference modules, built from the typed model record on a device (meta: no weights).

The diffusers ``WanTransformer3DModel`` config is derived from the
:class:`~ditmeter.models.wan21.spec.WanModelSpec` (official field names), never
kept as a second hand-written copy; the components come from their own
records. The ``make_*`` functions build one stage's module and the inputs of
one run; :mod:`ditmeter.models.wan21.references` names them per stage (a
further reference, such as the official Wan code, is one more entry there).
"""

from __future__ import annotations

from typing import Any, cast

import attrs
import torch
from torch import nn

from ditmeter.analytic.geometry import Geometry
from ditmeter.analytic.workload import Workload
from ditmeter.models.wan21.spec import ClipSpec, UMT5Spec, WanModelSpec
from ditmeter.models.wan21.vae_spec import VaeSpec

TORCH_DTYPES: dict[str, torch.dtype] = {
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp32": torch.float32,
}


def diffusers_dit_config(spec: WanModelSpec) -> dict[str, Any]:
    """``WanTransformer3DModel`` keyword arguments for ``spec``."""
    return {
        "patch_size": tuple(spec.patch_size),
        "num_attention_heads": spec.num_heads,
        "attention_head_dim": spec.head_dim,
        "in_channels": spec.in_dim,
        "out_channels": spec.out_dim,
        "text_dim": spec.text_dim,
        "freq_dim": spec.freq_dim,
        "ffn_dim": spec.ffn_dim,
        "num_layers": spec.num_layers,
        "cross_attn_norm": spec.cross_attn_norm,
        "qk_norm": "rms_norm_across_heads" if spec.qk_norm else None,
        "eps": spec.eps,
        **(
            {
                "image_dim": spec.image_dim,
                "added_kv_proj_dim": spec.dim,
                "pos_embed_seq_len": spec.image_tokens if spec.image_pos_embed else None,
            }
            if spec.image_tokens
            else {}
        ),
    }


def build_diffusers_dit(spec: WanModelSpec, dtype: str = "bf16", device: str = "meta") -> nn.Module:
    """The diffusers Wan2.1 DiT in ``dtype`` (fp32 where the port keeps it).

    On ``meta`` (the default) nothing is allocated; on ``cpu``/``cuda`` the
    weights are diffusers' random initialisation (for timing, never for outputs).
    """
    from diffusers import WanTransformer3DModel

    with torch.device(device):
        model = cast(nn.Module, WanTransformer3DModel(**diffusers_dit_config(spec)))
    keep_fp32 = set(WanTransformer3DModel._keep_in_fp32_modules)
    target = TORCH_DTYPES[dtype]
    for name, param in model.named_parameters():
        fp32 = any(part in keep_fp32 for part in name.split("."))
        param.data = param.data.to(torch.float32 if fp32 else target)
    model.eval()
    return model


def diffusers_dit_inputs(
    spec: WanModelSpec, workload: Workload, geo: Geometry, device: str = "meta", per_token: bool = False
) -> dict[str, torch.Tensor]:
    """Tensors for one DiT forward: latents, one timestep per sample (``per_token``: per token, the
    [batch, tokens] timesteps Wan2.2 feeds), padded context.

    Meta tensors by default; random values on a real device.
    """
    dtype = TORCH_DTYPES[workload.dtype]
    b = workload.batch_size
    dev = torch.device(device)
    make = torch.empty if dev.type == "meta" else torch.randn
    inputs = {
        "hidden_states": make(b, spec.in_dim, *geo.latent_shape, dtype=dtype, device=dev),
        "timestep": torch.zeros((b, geo.tokens) if per_token else b, dtype=torch.long, device=dev),
        "encoder_hidden_states": make(b, geo.context_len, spec.text_dim, dtype=dtype, device=dev),
    }
    if spec.image_tokens:  # CLIP hidden states, one block of tokens per conditioning image
        per_image = spec.image_tokens // spec.images
        inputs["encoder_hidden_states_image"] = make(
            b * spec.images, per_image, spec.image_dim, dtype=dtype, device=dev
        )
    return inputs


def build_umt5_encoder(spec: UMT5Spec, device: str = "meta") -> nn.Module:
    """transformers ``UMT5EncoderModel`` (gated GELU, untied embeddings) from ``model.text_encoder``.

    In eval mode and in the config's dtype throughout. NB: transformers keeps
    ``wo`` in fp32 only for fp16 loads; the pipelines load bf16.
    """
    from transformers import UMT5Config, UMT5EncoderModel

    ints = {k: v for k, v in attrs.asdict(spec).items() if k not in ("name", "dtype")}
    make_config: Any = UMT5Config  # its stubs type every keyword; ours are checked ints
    config = make_config(**ints, feed_forward_proj="gated-gelu", tie_word_embeddings=False)
    with torch.device(device):
        model = cast(nn.Module, UMT5EncoderModel(config))
    model.to(TORCH_DTYPES[spec.dtype])
    model.eval()
    return model


def umt5_inputs(batch: int, tokens: int, device: str = "meta") -> dict[str, torch.Tensor]:
    """Token ids for one encode (no padding mask: building it is data-dependent, impossible on meta)."""
    dev = torch.device(device)
    if dev.type == "meta":
        return {"input_ids": torch.empty(batch, tokens, dtype=torch.long, device=dev)}
    return {"input_ids": torch.randint(0, 1000, (batch, tokens), device=dev)}


def build_wan_vae(spec: VaeSpec, device: str = "meta") -> nn.Module:
    """diffusers ``AutoencoderKLWan`` from ``model.vae`` (built in fp32)."""
    from diffusers import AutoencoderKLWan

    with torch.device(device):
        return cast(
            nn.Module,
            AutoencoderKLWan(
                base_dim=spec.base_dim,
                z_dim=spec.z_dim,
                num_res_blocks=spec.num_res_blocks,
                dim_mult=list(spec.dim_mult),
                temperal_downsample=list(spec.temperal_downsample),
                **(
                    {
                        "decoder_base_dim": spec.decoder_dim,
                        "in_channels": spec.in_channels,
                        "out_channels": spec.out_channels,
                        "patch_size": spec.patch_size,
                        "is_residual": True,
                        "scale_factor_spatial": spec.spatial_stride,
                        "scale_factor_temporal": spec.temporal_stride,
                    }
                    if spec.is_residual or spec.patch_size > 1
                    else {}
                ),
            ),
        )


def build_clip_vision(spec: ClipSpec, device: str = "meta") -> nn.Module:
    """transformers ``CLIPVisionModel`` (exact GELU) from ``model.image_encoder``, eval, in the
    pipeline's dtype, with the blocks the pipeline runs (``layers_run``: the official code's
    ``use_31_block`` stops after block 31, so the model is built with 31)."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    make_config: Any = CLIPVisionConfig
    config = make_config(
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.layers_run,
        num_attention_heads=spec.num_attention_heads,
        image_size=spec.image_size,
        patch_size=spec.patch_size,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
    )
    with torch.device(device):
        model = cast(nn.Module, CLIPVisionModel(config))
    model.to(TORCH_DTYPES[spec.dtype])
    model.eval()
    return model


def clip_inputs(spec: ClipSpec, images: int, device: str = "meta") -> dict[str, Any]:
    """Pixels for ``images`` images; the diffusers pipeline (every layer run) asks for every hidden
    state and takes the penultimate."""
    dev = torch.device(device)
    make = torch.empty if dev.type == "meta" else torch.randn
    size = spec.image_size
    pixels = make(images, 3, size, size, dtype=TORCH_DTYPES[spec.dtype], device=dev)
    return {"pixel_values": pixels, "output_hidden_states": spec.layers_run == spec.num_hidden_layers}


class VaeDecode(nn.Module):
    """``vae.decode(z)`` as a module call, so the tracer sees the VAE's module paths (``vae.…``)."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, z: torch.Tensor) -> Any:
        return self.vae.decode(z, return_dict=False)  # type: ignore[operator]


def _vae(spec: VaeSpec, device: str) -> nn.Module:
    """The diffusers Wan-VAE in its config dtype, eval."""
    vae = build_wan_vae(spec, device)
    if spec.dtype != "fp32":  # built in fp32
        vae.to(TORCH_DTYPES[spec.dtype])
    vae.eval()
    return vae


def build_vae_decode_module(spec: VaeSpec, device: str = "meta") -> nn.Module:
    """The Wan-VAE wrapped to decode."""
    return VaeDecode(_vae(spec, device))


def vae_decode_inputs(
    spec: VaeSpec, batch: int, latent_shape: tuple[int, int, int], device: str = "meta"
) -> dict[str, Any]:
    """Latents (batch, z_dim, T, h, w) for one decode."""
    dev = torch.device(device)
    make = torch.empty if dev.type == "meta" else torch.randn
    return {"z": make(batch, spec.z_dim, *latent_shape, dtype=TORCH_DTYPES[spec.dtype], device=dev)}


class VaeEncode(nn.Module):
    """``vae.encode(video).latent_dist.mode()`` (what the I2V pipelines take) as a module call."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, video: torch.Tensor) -> Any:
        return self.vae.encode(video).latent_dist.mode()  # type: ignore[operator]


def build_vae_encode_module(spec: VaeSpec, device: str = "meta") -> nn.Module:
    """The Wan-VAE wrapped to encode."""
    return VaeEncode(_vae(spec, device))


def vae_encode_inputs(
    spec: VaeSpec, batch: int, video_shape: tuple[int, int, int], device: str = "meta"
) -> dict[str, Any]:
    """A (batch, 3, F, H, W) conditioning video for one encode."""
    dev = torch.device(device)
    make = torch.empty if dev.type == "meta" else torch.randn
    return {"video": make(batch, 3, *video_shape, dtype=TORCH_DTYPES[spec.dtype], device=dev)}


Built = tuple[nn.Module, dict[str, Any]]


def make_dit(m: WanModelSpec, w: Workload, g: Geometry, device: str) -> Built:
    """The DiT and one forward's inputs (``return_dict=False``, as the pipelines call it)."""
    per_token = m.per_token_timesteps(w.pipeline)  # the timesteps the pipeline feeds
    inputs: dict[str, Any] = {**diffusers_dit_inputs(m, w, g, device, per_token), "return_dict": False}
    return build_diffusers_dit(m, w.dtype, device), inputs


def make_text_encoder(m: WanModelSpec, w: Workload, g: Geometry, device: str) -> Built:
    """UMT5 and one encode of ``text_len`` tokens per sample."""
    return build_umt5_encoder(m.text_encoder, device), umt5_inputs(w.batch_size, m.text_len, device)


def make_image_encoder(m: WanModelSpec, w: Workload, g: Geometry, device: str) -> Built:
    """CLIP and the conditioning image(s) of every sample."""
    assert m.image_encoder is not None
    spec = m.image_encoder
    return build_clip_vision(spec, device), clip_inputs(spec, w.batch_size * m.images, device)


def make_vae_encode(m: WanModelSpec, w: Workload, g: Geometry, device: str) -> Built:
    """The Wan-VAE encoder and the conditioning video at the effective size."""
    video = (m.conditioning_frames(g.effective_frames), g.effective_height, g.effective_width)
    return build_vae_encode_module(m.vae, device), vae_encode_inputs(m.vae, w.batch_size, video, device)


def make_vae_decode(m: WanModelSpec, w: Workload, g: Geometry, device: str) -> Built:
    """The Wan-VAE decoder and the final latents."""
    return build_vae_decode_module(m.vae, device), vae_decode_inputs(
        m.vae, w.batch_size, g.latent_shape, device
    )


def enable_context_parallel(module: nn.Module, ulysses: int, ring: int) -> None:
    """diffusers' context parallelism on the DiT ``module`` (``ContextParallelConfig(ulysses_degree,
    ring_degree)``), run under a process group of ulysses × ring ranks (``docs/parallel.md``).

    The attention backend becomes ``_native_flash``: it returns the log-sum-exp the ring needs and
    has a meta kernel. NB a workaround: diffusers places each rank on ``rank %
    torch.accelerator.device_count()``, 0 on a CPU; the count reads 1 for the call only.
    """
    import logging
    import warnings

    from diffusers import ContextParallelConfig

    # the 1-D timestep is not split (Wan2.1 has one per sample): diffusers warns about it once
    logging.getLogger("diffusers.hooks.context_parallel").setLevel(logging.ERROR)
    notices = logging.getLogger("diffusers.models.modeling_utils")  # "experimental feature" notices
    level = notices.level
    notices.setLevel(logging.ERROR)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "experimental feature" notices
        module.set_attention_backend("_native_flash")  # type: ignore[operator]
        count = torch.accelerator.device_count
        torch.accelerator.device_count = lambda *a, **k: 1  # type: ignore[assignment]
        try:
            config = ContextParallelConfig(ring_degree=ring, ulysses_degree=ulysses)
            module.enable_parallelism(config=config)  # type: ignore[operator]
        finally:
            torch.accelerator.device_count = count  # type: ignore[assignment]
            notices.setLevel(level)


def build_official_dit(spec: WanModelSpec, device: str = "meta") -> nn.Module:
    """The official ``WanModel`` of ``spec`` (from the installed official code,
    :mod:`ditmeter.models.wan21.official`) on ``device``; its own fp32 initialisation."""
    from ditmeter.errors import ConfigError
    from ditmeter.models.wan21.official import official_model_module, official_model_type

    module = official_model_module()
    kwargs = {
        "model_type": official_model_type(spec.images),
        "patch_size": tuple(spec.patch_size),
        "text_len": spec.text_len,
        "in_dim": spec.in_dim,
        "dim": spec.dim,
        "ffn_dim": spec.ffn_dim,
        "freq_dim": spec.freq_dim,
        "text_dim": spec.text_dim,
        "out_dim": spec.out_dim,
        "num_heads": spec.num_heads,
        "num_layers": spec.num_layers,
        "eps": spec.eps,
    }
    try:
        with torch.device(device):
            model = cast(nn.Module, module.WanModel(**kwargs))
    except (AssertionError, TypeError) as exc:
        raise ConfigError(
            "pipeline", f"official: the installed official WanModel cannot build {spec.name} ({exc!r})"
        ) from None
    if spec.images and not hasattr(model, "img_emb"):  # Wan2.2's code dropped Wan2.1's CLIP branch
        raise ConfigError(
            "pipeline",
            f"official: the installed official WanModel has no CLIP image branch (img_emb) that "
            f"{spec.name} runs; put the Wan2.1 repository on PYTHONPATH",
        )
    model.eval()
    return model


def module_table(module: nn.Module) -> dict[str, tuple[str, tuple[tuple[int, ...], ...]]]:
    """Path → (class name, its own parameters' shapes) of every module of ``module``, in
    ``named_modules()`` order."""
    return {
        path: (type(m).__name__, tuple(tuple(p.shape) for p in m.parameters(recurse=False)))
        for path, m in module.named_modules()
    }
