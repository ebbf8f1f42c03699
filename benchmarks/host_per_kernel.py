"""Benchmark: the host's cost per launched kernel of the real DiT code, against one bare op, in one run.

Eager PyTorch spends CPU time on every op the module's Python issues (the module calls, the
views, the dispatch and the launch). The time model charges each kernel ``host.per_kernel_s``
of the device's kernel table (5 µs). This script measures what the real modules spend: the
diffusers ``WanTransformer3DModel`` and, where it imports, the official ``WanModel``, built with
the 1.3B's 30 blocks at widths so small that every kernel is shorter than its launch, so the
forward's wall time is the host's chain. It counts the forward's aten ops under a dispatch mode
(those ``compare.mapping.ZERO_OPS`` names, views and allocations, launch nothing) and prints
seconds per forward, per op and per launched kernel, and the ratios to one bare ``add`` (the op
``ditmeter calibrate`` times as ``host``) and to the model's figure.

On the CPU the "kernels" run (tiny) where a GPU host would launch them, in fp32; ``--device cuda``
measures the real launch path (a synchronize closes each timed run): the diffusers DiT in bf16,
the official one with fp32 weights under bf16 autocast, as its ``generate.py`` runs it. Prints
no PASS/FAIL: it is a measurement for docs/eager.md, whose numbers it reproduces on this machine.

    .venv/bin/python benchmarks/host_per_kernel.py [--device cpu|cuda] [--repeats N]
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable
from typing import Any

import torch
from timing import best  # benchmarks/timing.py: the script's folder is on sys.path

from ditmeter.catalog import kernel_table
from ditmeter.compare.mapping import ZERO_OPS
from ditmeter.tracer.calibrate import HOST_DIT, LaunchCount, diffusers_host_forward


def per_call(fn: Callable[[], object], device: str, repeats: int) -> float:
    """:func:`timing.best` of ``fn`` after one warm-up call, each call synchronized on a GPU."""

    def synced() -> None:
        fn()
        if device == "cuda":
            torch.cuda.synchronize()

    synced()
    return best(synced, repeats)


def official_forward(device: str) -> Callable[[], object] | None:
    from ditmeter.errors import ConfigError
    from ditmeter.models.wan21.official import official_model_module

    try:
        module = official_model_module()
    except ConfigError:
        return None
    if device == "cpu":  # its flash_attention asserts CUDA: SDPA in its place, a few ops fewer
        sdpa = torch.nn.functional.scaled_dot_product_attention

        def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **_: Any) -> torch.Tensor:
            return sdpa(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)

        module.flash_attention = attention
    h = HOST_DIT  # the diffusers forward's widths (ditmeter calibrate's module_host)
    m = module.WanModel(
        model_type="t2v", patch_size=(1, 2, 2), text_len=h["text"], in_dim=16, dim=h["width"],
        ffn_dim=h["ffn"], freq_dim=256, text_dim=h["width"], out_dim=16, num_heads=h["heads"],
        num_layers=h["blocks"],
    ).to(device).eval()  # fmt: skip
    x = [torch.randn(16, h["frames"], 4, 4, device=device)]
    t = torch.tensor([500.0], device=device)
    ctx = [torch.randn(h["text"], h["width"], device=device)]
    tokens = h["frames"] * 4
    if device == "cpu":
        return lambda: m(x, t, ctx, tokens)

    def under_autocast() -> object:  # generate.py: fp32 weights under bf16 autocast
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return m(x, t, ctx, tokens)

    return under_autocast


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("host_per_kernel: --device cuda: torch sees no CUDA device here", file=sys.stderr)
        return 2
    warnings.filterwarnings("ignore", message=".*autocast.*")
    torch.set_num_threads(1)  # the host's chain is one Python thread
    model_s = kernel_table("hopper").host.per_kernel_s
    one = torch.ones(1, device=args.device)
    bare_s = per_call(lambda: torch.add(one, one), args.device, args.repeats * 100)
    blocks, width = HOST_DIT["blocks"], HOST_DIT["width"]
    print(f"device {args.device}, torch {torch.__version__}, {blocks} blocks at width {width}")
    print(f"  bare add: {bare_s * 1e6:.2f} µs per op; the model charges {model_s * 1e6:.1f} µs per kernel")
    with torch.no_grad():
        for name, build in (("diffusers", diffusers_host_forward), ("official", official_forward)):
            forward = build(args.device)
            if forward is None:
                print(f"  {name}: the official Wan code is not importable here, skipped")
                continue
            counter = LaunchCount(ZERO_OPS)
            with counter:
                forward()
            seconds = per_call(forward, args.device, args.repeats)
            kernels = counter.launched
            print(
                f"  {name}: {seconds * 1e3:.1f} ms per forward, {counter.ops} aten ops "
                f"({counter.views} views, {kernels} launched): {seconds / counter.ops * 1e6:.2f} µs per op, "
                f"{seconds / kernels * 1e6:.2f} µs per launched kernel = {seconds / kernels / bare_s:.1f}x "
                f"a bare op, {seconds / kernels / model_s:.1f}x the model's figure"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
