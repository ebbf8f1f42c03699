"""Real runs for the ingest tests: a pipeline's DiT run on this CPU (random weights, a small
config) under torch.profiler with stacks and shapes, the way a user records one. Beside the
Chrome trace each run keeps the profiler's own in-memory event tree's answer to "which module
ran each top-level op" (``experimental_event_tree()``: the module objects themselves, by
``id``), the independent reference for ingest's module resolution."""

from __future__ import annotations

import functools
import gzip
import importlib
import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from ditmeter.config import load


@attrs.frozen
class Run:
    trace: Path
    overrides: tuple[str, ...]  # model=… workload=… pipeline=… model.num_layers=…
    ops: list[tuple[str, str | None]]  # the profiler's tree: (op name, module path) per top-level op
    op_ns: dict[str, int]  # the profiler's tree: CPU ns of the top-level ops per module path


def _tree_ops(prof: Any, *models: nn.Module) -> tuple[list[tuple[str, str | None]], dict[str, int]]:
    ids = {id(m): path for model in models for path, m in model.named_modules()}
    ops: list[tuple[str, str | None]] = []
    ns: dict[str, int] = {}

    def walk(e: Any, path: str | None) -> None:
        fields = e.extra_fields
        if type(fields).__name__ == "_ExtraFields_PyCall" and fields.module is not None:
            path = ids.get(fields.module.self_ptr, path)
        if type(fields).__name__ == "_ExtraFields_TorchOp":
            ops.append((e.name, path))
            if path is not None:
                ns[path] = ns.get(path, 0) + e.duration_time_ns
            return
        for child in e.children:
            walk(child, path)

    for root in prof.profiler.kineto_results.experimental_event_tree():
        walk(root, None)
    return ops, ns


def record(model: nn.Module, call: Callable[[], Any], path: Path, forwards: int, *more: nn.Module) -> Run:
    """One warm-up call, then ``forwards`` calls under the profiler; the trace at ``path``. The
    reference paths are ``model``'s and ``more``'s (the other modules ``call`` runs)."""
    with torch.no_grad():
        call()
        with profile(activities=[ProfilerActivity.CPU], with_stack=True, record_shapes=True) as prof:
            for _ in range(forwards):
                call()
    prof.export_chrome_trace(str(path))
    ops, ns = _tree_ops(prof, model, *more)
    return Run(path, (), ops, ns)


def diffusers_run(folder: Path, forwards: int = 2, layers: int = 2) -> Run:
    """diffusers' ``WanTransformer3DModel`` of the 1.3B with ``layers`` blocks at w001-tiny."""
    overrides = (
        "model=wan2.1-t2v-1.3b",
        "workload=w001-tiny",
        "pipeline=diffusers",
        f"model.num_layers={layers}",
    )
    cfg = load(list(overrides), "ingest")
    ref = cfg.family.references()["dit"]
    model, inputs = ref.make(cfg.model, cfg.workload, cfg.geometry, "cpu")
    run = record(model, lambda: model(**inputs), folder / "diffusers.json", forwards)
    return attrs.evolve(run, overrides=overrides)


#: A small video under diffusers: a 2-block UMT5 of width 256, a 1-block 1.3B DiT, 1 frame at 128².
PIPELINE_ARGS = (
    "model=wan2.1-t2v-1.3b",
    "workload=w001-tiny",
    "pipeline=diffusers",
    "model.num_layers=1",
    "model.text_encoder.num_layers=2",
    "model.text_encoder.d_model=256",
    "model.text_encoder.d_kv=32",
    "model.text_encoder.d_ff=512",
    "model.text_encoder.num_heads=8",
    "model.text_encoder.vocab_size=1000",
    "workload.height=128",
    "workload.width=128",
    "workload.num_frames=1",
)


def pipeline_run(folder: Path) -> Run:
    """One small video's stages as the diffusers pipeline runs them, in one trace: the text
    encode, one step (the conditional and unconditional DiT forwards) and the VAE decode (the
    pipeline calls ``vae.decode``: the trace shows its decoder)."""
    cfg = load(list(PIPELINE_ARGS), "ingest")
    refs = cfg.family.references()
    built = {
        s: refs[s].make(cfg.model, cfg.workload, cfg.geometry, "cpu")
        for s in ("text_encoder", "dit", "vae_decode")
    }

    def video() -> None:
        for stage, times in (("text_encoder", 1), ("dit", 2), ("vae_decode", 1)):
            module, inputs = built[stage]
            for _ in range(times):
                module(**inputs)

    modules = [m for m, _ in built.values()]
    run = record(modules[0], video, folder / "pipeline.json", 1, *modules[1:])
    return attrs.evolve(run, overrides=PIPELINE_ARGS)


@contextmanager
def official_attention_on_cpu() -> Iterator[None]:
    """The official ``WanModel`` calls ``flash_attention`` (flash-attn, CUDA only); on this CPU it
    runs the official code's own SDPA fallback (``attention.attention``) in fp32 instead."""
    from ditmeter.models.wan21.official import official_model_module

    model_module = official_model_module()
    attention = importlib.import_module(model_module.__name__.rpartition(".")[0] + ".attention")
    kept = model_module.flash_attention
    model_module.flash_attention = functools.partial(attention.attention, dtype=torch.float32)
    try:
        yield
    finally:
        model_module.flash_attention = kept


def official_run(folder: Path, forwards: int = 2, layers: int = 2) -> Run:
    """The official ``WanModel`` (the installed Wan2.2 code) of TI2V-5B with ``layers`` blocks at
    w001-tiny, called as generate.py calls it (lists of latents and contexts, ``seq_len``)."""
    from ditmeter.models.wan21.builders import build_official_dit

    overrides = ("model=wan2.2-ti2v-5b", "workload=w001-tiny", f"model.num_layers={layers}")
    cfg = load(list(overrides), "ingest")
    m, g = cfg.model, cfg.geometry
    torch.manual_seed(0)
    model = build_official_dit(m, "cpu")
    x = [torch.randn(m.in_dim, *g.latent_shape)]
    context = [torch.randn(g.context_len, m.text_dim)]
    t = torch.tensor([500.0])
    with official_attention_on_cpu():
        run = record(model, lambda: model(x, t, context, g.tokens), folder / "official.json", forwards)
    return attrs.evolve(run, overrides=overrides)


# ---- a hand-made CUDA trace: kernels, launches, correlation ids, NCCL, idle time ------------------

_T = {"pid": 1, "tid": 1}


def _py(name: str, ts: float, dur: float, pid: int) -> dict[str, Any]:
    return {
        "ph": "X",
        "cat": "python_function",
        "name": name,
        "ts": ts,
        "dur": dur,
        **_T,
        "args": {"Python id": pid},
    }


def cpu_op(name: str, ts: float, dur: float, ext: int) -> dict[str, Any]:
    return {
        "ph": "X",
        "cat": "cpu_op",
        "name": name,
        "ts": ts,
        "dur": dur,
        **_T,
        "args": {"External id": ext},
    }


def _launch(ts: float, corr: int, ext: int | None) -> dict[str, Any]:
    args = {"correlation": corr, **({"External id": ext} if ext is not None else {})}
    return {
        "ph": "X",
        "cat": "cuda_runtime",
        "name": "cudaLaunchKernel",
        "ts": ts,
        "dur": 4,
        **_T,
        "args": args,
    }


def _kernel(name: str, ts: float, dur: float, corr: int, ext: int | None) -> dict[str, Any]:
    args = {
        "correlation": corr,
        "device": 0,
        "stream": 7,
        **({"External id": ext} if ext is not None else {}),
    }
    return {"ph": "X", "cat": "kernel", "name": name, "ts": ts, "dur": dur, "pid": 0, "tid": 7, "args": args}


def hand_cuda_trace(path: Path) -> Path:
    """One diffusers DiT forward (1 block): to_q's GEMM (60 µs, linked by External id), the
    attention kernel (100 µs, linked by correlation only), a RoPE multiply (10 µs) and, outside
    the model, an NCCL all-gather (50 µs). GPU window 200 → 550 µs: busy 220, idle 130."""
    events = [
        _py("nn.Module: WanTransformer3DModel_0", 0, 900, 1),
        _py("nn.Module: WanTransformerBlock_0", 50, 800, 2),
        _py("nn.Module: WanAttention_0", 60, 700, 3),
        _py("nn.Module: Linear_0", 90, 70, 4),
        cpu_op("aten::linear", 100, 50, 10),
        cpu_op("aten::addmm", 105, 40, 11),  # nested: its kernel belongs to aten::linear
        _launch(110, 1, 11),
        cpu_op("aten::scaled_dot_product_attention", 170, 30, 12),
        _launch(180, 2, None),
        cpu_op("aten::mul", 210, 10, 13),
        _launch(212, 3, 13),
        cpu_op("nccl:all_gather", 950, 40, 14),
        _launch(960, 4, 14),
        _kernel("sm90_xmma_gemm_bf16", 200, 60, 1, 11),
        _kernel("flash_fwd_kernel", 270, 100, 2, None),
        _kernel("vectorized_elementwise_kernel", 380, 10, 3, 13),
        _kernel("ncclDevKernel_AllGather_RING_LL", 500, 50, 4, 14),
    ]
    data = {"traceEvents": events, "deviceProperties": [{"name": "NVIDIA H100 80GB HBM3"}]}
    path.write_text(json.dumps(data))
    return path


#: The model the hand-made trace is a run of (one block of the 1.3B under diffusers).
CUDA_ARGS = ("model=wan2.1-t2v-1.3b", "workload=w001-tiny", "pipeline=diffusers", "model.num_layers=1")


def gzipped(run: Run) -> Path:
    """The same trace as ``.json.gz`` (as tensorboard_trace_handler(use_gzip=True) writes it)."""
    out = run.trace.with_suffix(".json.gz")
    with run.trace.open("rb") as src, gzip.open(out, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return out
