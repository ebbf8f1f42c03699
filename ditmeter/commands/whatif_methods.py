"""The what-if methods ``ditmeter whatif`` compares (docs/whatif.md): each a named set of config
overrides the time model carries, the default selection, and the pairs that cannot combine. No
heavy imports: ``--help`` lists these names without loading the time model."""

from __future__ import annotations

#: Each what-if: the overrides that turn it on, and what it is.
WHATIFS: dict[str, tuple[tuple[str, ...], str]] = {
    "compile": (("time.execution=compiled",), "torch.compile: one fused kernel per module"),
    "cuda_graphs": (("methods.cuda_graphs=true",), "the step replayed as a CUDA graph"),
    "cfg_batch": (("methods.cfg_batch=true",), "both guidance forwards as one batch of 2"),
    "few_step": (
        ("methods.cfg_free=true", "workload.num_inference_steps=4"),
        "a step- and guidance-distilled model: 4 steps, one forward each",
    ),
    "fp8": (("gemm_dtype=fp8",), "the DiT's matmuls in FP8 (activations scaled per token)"),
    "fp8_block": (
        ("gemm_dtype=fp8_block",),
        "the DiT's matmuls in FP8 with DeepSeek-V3's 1x128 / 128x128 block scaling (DeepGEMM)",
    ),
    "fp8_tensor": (
        ("gemm_dtype=fp8_tensor",),
        "the DiT's matmuls in FP8 with one static scale per tensor (ComfyUI's fp8 linear)",
    ),
    "int8": (("gemm_dtype=int8",), "the DiT's matmuls in INT8 (W8A8: activations scaled per token)"),
    "nvfp4": (("gemm_dtype=nvfp4",), "the DiT's matmuls in NVFP4 (Blackwell datacenter)"),
    "sage": (("attention=sage",), "SageAttention2: the DiT's attention with INT8 QK and FP8 PV"),
    "fa4": (("attention=fa4",), "FlashAttention-4 as the DiT's attention (Blackwell datacenter)"),
    "magcache": (("methods.cache=magcache",), "MagCache step cache (its published rule)"),
    "teacache": (("methods.cache=teacache",), "TeaCache step cache (methods.cache_skip: your run's share)"),
    "easycache": (("methods.cache=easycache",), "EasyCache step cache (methods.cache_skip)"),
    "fbcache": (("methods.cache=fbcache",), "first-block cache (methods.cache_skip)"),
    "vae_tiling": (("methods.vae_tiling=true",), "diffusers' tiled VAE decode (pipeline=diffusers)"),
    "vae_parallel": (("methods.vae_parallel=true",), "the VAE decode spread over the plan's GPUs (LightX2V)"),
    **{
        name: ((f"methods.sparse={name}",), f"{label} sparse attention (methods.sparse_density: its share)")
        for name, label in (
            ("svg", "Sparse VideoGen"),
            ("radial", "Radial Attention"),
            ("sta", "Sliding Tile Attention"),
            ("vsa", "Video Sparse Attention"),
        )
    },
}
#: What ``whatif`` compares when ``whatif=`` is not given.
DEFAULT_WHATIFS = ("compile", "cuda_graphs", "fp8", "sage", "few_step")
#: Pairs that cannot combine, and why (refused with exit 2 naming both).
EXCLUSIVE = {
    frozenset({"cfg_batch", "few_step"}): "a guidance-distilled model runs one forward per step: nothing "
    "to batch",
    **{
        frozenset({kernel, n}): "both replace the DiT's attention kernel"
        for kernel in ("sage", "fa4")
        for n in ("svg", "radial", "sta", "vsa")
    },
}
