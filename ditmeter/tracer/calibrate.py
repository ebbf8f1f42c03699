"""Micro-benchmarks of one model's own kernels on the local device: the points of a calibration.

The shapes are the model's own (``ditmeter calibrate`` reads every GEMM,
attention core and convolution leaf of the selected stages at the workload from
the analysis and passes them here as plain tuples); each is timed with
``torch.utils.benchmark`` on ``cuda`` (a plain timed loop on ``cpu``, see
``_time``), and the achieved rates become the curve points of a kernel table
(:mod:`ditmeter.analytic.kernels`) as fractions of the device's peaks. On a CPU
the peaks are the best rates measured (the CPU has no datasheet entry); on a GPU
named with ``device=`` they are the catalog's.

A shape above ``max_flops`` per call is measured at fewer rows (its point is
where it was measured, so the curve stays honest); a GEMM or convolution's
FLOPs key its curve, an attention's key/value length keys its.

Element-wise bandwidth: the model's own norm, activation and residual shapes,
as a fraction of the best of them and a plain copy. Host overhead: one tiny
op's time (on a CPU each op's dispatch adds to its kernel; on a GPU launches
overlap), and what the real diffusers DiT's Python spends per kernel it launches
(``module_host``: recorded beside the fit, not used by it; docs/eager.md).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from typing import Any, cast

import attrs
import torch
import torch.nn.functional as F
from torch.utils import benchmark
from torch.utils._python_dispatch import TorchDispatchMode

TORCH_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@attrs.frozen
class Point:
    """One measured kernel: its class, dtype, shape, the curve key and what it achieved."""

    kind: str  # gemm | attention | conv | elementwise | copy | host | module_host
    dtype: str
    shape: str
    x: float  # the curve key: FLOPs per call (gemm, conv), key/value tokens (attention), bytes
    seconds: float
    flops: int
    bytes: int
    head_dim: int = 0
    #: the interquartile range of the calls' times over their median (a busy machine's is large)
    spread: float = 0.0

    @property
    def flop_per_s(self) -> float:
        return self.flops / self.seconds

    @property
    def bytes_per_s(self) -> float:
        return self.bytes / self.seconds

    def as_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


def _time(fn: Callable[[], object], device_kind: str, min_run_time: float) -> tuple[float, float]:
    """Median seconds per call over at least ``min_run_time`` (and 3 calls) after a warm-up, and
    the spread of the calls: their interquartile range over the median.

    CUDA: ``torch.utils.benchmark.Timer`` (it synchronises the device). CPU: a plain
    ``perf_counter`` loop, because the Timer calls ``torch.set_num_threads`` on entry and exit,
    and on this project's machines that re-initialisation halves oneDNN's bf16 GEMM speed for the
    rest of the process (measured: a 256×1536×8960 GEMM from 0.36 s to 0.71 s per call).
    """
    fn()  # warm up (allocator, kernels, caches)
    if device_kind == "cuda":
        timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
        m = timer.blocked_autorange(min_run_time=min_run_time)
        return float(m.median), float(m.iqr / m.median) if m.median > 0 else 0.0
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 3 or time.perf_counter() - start < min_run_time:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    median = statistics.median(times)
    quartiles = statistics.quantiles(times, n=4)
    return median, (quartiles[2] - quartiles[0]) / median if median > 0 else 0.0


def _rows_within(rows: int, flops_per_row: float, max_flops: float) -> int:
    return max(1, min(rows, int(max_flops // max(flops_per_row, 1.0))))


def measure_gemm(
    shape: tuple[int, int, int, str], device: str, max_flops: float, min_run_time: float
) -> Point:
    rows, fan_in, fan_out, dtype = shape
    rows = _rows_within(rows, 2.0 * fan_in * fan_out, max_flops)
    t = TORCH_DTYPES[dtype]
    x = torch.randn(rows, fan_in, device=device, dtype=t)
    w = torch.randn(fan_out, fan_in, device=device, dtype=t)
    seconds, spread = _time(lambda: F.linear(x, w), device, min_run_time)
    flops = 2 * rows * fan_in * fan_out
    size = t.itemsize * (rows * fan_in + fan_in * fan_out + rows * fan_out)
    return Point("gemm", dtype, f"{rows}x{fan_in}x{fan_out}", flops, seconds, flops, size, spread=spread)


def measure_attention(
    shape: tuple[int, int, int, int, int, str], device: str, max_flops: float, min_run_time: float
) -> Point:
    """torch's SDPA (its flash kernel where it has one) at the shape; queries cut to fit ``max_flops``."""
    batch, heads, q, kv, head_dim, dtype = shape
    q = _rows_within(q, 4.0 * batch * heads * kv * head_dim, max_flops)
    t = TORCH_DTYPES[dtype]
    qt = torch.randn(batch, heads, q, head_dim, device=device, dtype=t)
    kt = torch.randn(batch, heads, kv, head_dim, device=device, dtype=t)
    vt = torch.randn(batch, heads, kv, head_dim, device=device, dtype=t)
    seconds, spread = _time(lambda: F.scaled_dot_product_attention(qt, kt, vt), device, min_run_time)
    flops = 4 * batch * heads * q * kv * head_dim
    size = t.itemsize * batch * heads * head_dim * (2 * q + 2 * kv)
    return Point(
        "attention", dtype, f"{batch}x{heads}x{q}x{kv}x{head_dim}", kv, seconds, flops, size, head_dim, spread
    )


def measure_conv(
    shape: tuple[int, int, int, int, str], device: str, max_flops: float, min_run_time: float
) -> Point:
    """A 3D convolution with the leaf's channels and kernel volume (cubic 27 → 3×3×3, 4 → 1×2×2
    patches, else 1×1×1 or k×1×1) over a square map giving (about) its outputs."""
    outputs, cin, cout, kvol, dtype = shape
    outputs = _rows_within(outputs, 2.0 * cin * cout * kvol, max_flops)
    kernel = {27: (3, 3, 3), 4: (1, 2, 2), 3: (3, 1, 1)}.get(kvol, (1, 1, 1))
    stride = kernel if kvol == 4 else (1, 1, 1)
    side = max(1, int(math.sqrt(outputs)))
    shape_in = (
        1,
        cin,
        kernel[0],
        side * stride[1] + kernel[1] - stride[1],
        side * stride[2] + kernel[2] - stride[2],
    )
    t = TORCH_DTYPES[dtype]
    x = torch.randn(*shape_in, device=device, dtype=t)
    w = torch.randn(cout, cin, *kernel, device=device, dtype=t)
    seconds, spread = _time(lambda: F.conv3d(x, w, stride=stride), device, min_run_time)
    real = side * side
    flops = 2 * real * cin * cout * math.prod(kernel)
    size = t.itemsize * (x.numel() + w.numel() + real * cout)
    label = f"{real}x{cin}x{cout}x{math.prod(kernel)}"
    return Point("conv", dtype, label, flops, seconds, flops, size, spread=spread)


def measure_elementwise(rows: int, dim: int, dtype: str, device: str, min_run_time: float) -> list[Point]:
    """The model's memory-bound kinds at its residual shape [rows, dim]: add, LayerNorm, GELU, a
    plain copy (the peak reference)."""
    t = TORCH_DTYPES[dtype]
    a = torch.randn(rows, dim, device=device, dtype=t)
    b = torch.randn(rows, dim, device=device, dtype=t)
    out = torch.empty_like(a)
    n = a.numel() * t.itemsize
    kinds: list[tuple[str, Callable[[], object], int]] = [
        ("copy", lambda: out.copy_(a), 2 * n),
        ("add", lambda: torch.add(a, b, out=out), 3 * n),
        ("layer_norm", lambda: F.layer_norm(a, (dim,)), 2 * n),
        ("gelu_tanh", lambda: F.gelu(a, approximate="tanh"), 2 * n),
    ]
    points = []
    for name, fn, size in kinds:
        seconds, spread = _time(fn, device, min_run_time)
        kind = "copy" if name == "copy" else "elementwise"
        points.append(Point(kind, dtype, f"{name} {rows}x{dim}", size, seconds, 0, size, spread=spread))
    return points


def measure_host(device: str, min_run_time: float) -> Point:
    """One op on a one-element tensor: the dispatch (CPU) or launch (GPU) cost of a kernel."""
    a = torch.ones(1, device=device)
    seconds, spread = _time(lambda: torch.add(a, a), device, min_run_time)
    return Point("host", "fp32", "add 1", 1, seconds, 1, 12, spread=spread)


class LaunchCount(TorchDispatchMode):
    """Counts the aten ops run under it and those that launch no kernel (``views``): the ones
    ``free`` names (the caller passes ``compare.mapping.ZERO_OPS``, the set ``trace``'s
    eager-kernel check drops, as it passes it to :func:`~ditmeter.tracer.kernels.eager_launches`)."""

    def __init__(self, free: frozenset[str]) -> None:
        super().__init__()
        self.free = free
        self.ops = 0
        self.views = 0

    @property
    def launched(self) -> int:
        return self.ops - self.views

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.ops += 1
        self.views += f"aten.{func.overloadpacket.__name__}" in self.free
        return func(*args, **(kwargs or {}))


#: The diffusers DiT ``module_host`` times: the 1.3B's block count at widths so small that every
#: kernel is shorter than its launch (a forward's time is then the host's chain).
HOST_DIT = {"blocks": 30, "width": 64, "heads": 2, "ffn": 128, "text": 16, "frames": 2}


def host_dtype(device: str) -> str:
    """The dtype the host measurement runs the DiT in: bf16 on a GPU, as the pipelines run it (its
    attention then takes the path a real run takes); fp32 on a CPU, whose bf16 kernels are slower."""
    return "bf16" if device == "cuda" else "fp32"


def diffusers_host_forward(device: str, blocks: int = HOST_DIT["blocks"]) -> Callable[[], object]:
    """One forward of the real diffusers ``WanTransformer3DModel`` at ``HOST_DIT``'s widths."""
    from diffusers import WanTransformer3DModel

    h, dtype = HOST_DIT, TORCH_DTYPES[host_dtype(device)]
    with torch.device(device):
        m = cast(torch.nn.Module, WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=h["heads"], attention_head_dim=h["width"] // h["heads"],
            in_channels=16, out_channels=16, text_dim=h["width"], freq_dim=256, ffn_dim=h["ffn"],
            num_layers=blocks, cross_attn_norm=True, eps=1e-6, rope_max_seq_len=1024,
        )).eval()  # fmt: skip
    keep_fp32 = set(WanTransformer3DModel._keep_in_fp32_modules)  # as from_pretrained(torch_dtype=) keeps
    for name, param in m.named_parameters():
        if not keep_fp32.intersection(name.split(".")):
            param.data = param.data.to(dtype)
    x = torch.randn(1, 16, h["frames"], 4, 4, device=device, dtype=dtype)
    t = torch.tensor([500.0], device=device)
    ctx = torch.randn(1, h["text"], h["width"], device=device, dtype=dtype)
    return lambda: m(x, t, ctx)


def measure_module_host(device: str, min_run_time: float, free: frozenset[str]) -> Point:
    """The host's seconds per launched kernel of the real diffusers DiT (:func:`diffusers_host_forward`):
    a forward's time over the kernels it launches (its aten ops less those ``free`` names)."""
    forward = diffusers_host_forward(device)
    counter = LaunchCount(free)
    with torch.no_grad():
        forward()
        with counter:
            forward()
        seconds, spread = _time(forward, device, min_run_time)
    shape = (
        f"diffusers DiT, {HOST_DIT['blocks']} blocks at width {HOST_DIT['width']}: {counter.launched} kernels"
    )
    per_kernel = seconds / max(counter.launched, 1)
    return Point("module_host", host_dtype(device), shape, counter.launched, per_kernel, 0, 0, spread=spread)


def _rule_fn(rule: str, dims: dict[str, Any], dtype: str, device: str) -> Callable[[], object] | None:
    """The model's eager code for one element-wise rule at ``dims`` (the diffusers Wan port's: fp32
    norms and modulation over bf16 activations, RoPE in fp32), or None for a rule not re-enacted."""
    t = TORCH_DTYPES[dtype]

    def rand(*shape: int, dt: torch.dtype = t) -> torch.Tensor:
        return torch.randn(*shape, device=device, dtype=dt)

    if rule in ("layer_norm", "rms_norm", "modulate", "gated_residual"):
        rows, dim = int(dims["rows"]), int(dims["dim"])
        x, w = rand(rows, dim), rand(dim)
        if rule == "layer_norm":
            return lambda: F.layer_norm(x.float(), (dim,)).to(t)
        if rule == "rms_norm":
            return lambda: F.rms_norm(x, (dim,), w)
        scale, shift = rand(dim, dt=torch.float32), rand(dim, dt=torch.float32)
        if rule == "modulate":
            return lambda: (x.float() * (1 + scale) + shift).to(t)
        y = rand(rows, dim)
        return lambda: (x.float() + y.float() * scale).to(t)
    if rule in ("gelu_tanh", "gelu", "silu", "residual_add", "layout_copy"):
        x = rand(int(dims["elements"]))
        y = rand(int(dims["elements"]))
        unary = {
            "gelu_tanh": lambda: F.gelu(x, approximate="tanh"),
            "gelu": lambda: F.gelu(x),
            "silu": lambda: F.silu(x),
            "residual_add": lambda: x + y,
            "layout_copy": lambda: x.clone(),
        }
        return unary[rule]
    if rule == "rope":
        rows, heads, head_dim = int(dims["rows"]), int(dims["heads"]), int(dims["head_dim"])
        x = rand(rows, heads, head_dim)
        cos, sin = (
            rand(rows, 1, head_dim // 2, dt=torch.float32),
            rand(rows, 1, head_dim // 2, dt=torch.float32),
        )
        tensors = int(dims.get("tensors", 1))

        def rope() -> object:
            for _ in range(tensors):  # q and k
                x1, x2 = x.float().reshape(rows, heads, head_dim // 2, 2).unbind(-1)
                out = torch.empty(rows, heads, head_dim, device=device, dtype=torch.float32)
                out[..., 0::2] = x1 * cos - x2 * sin
                out[..., 1::2] = x1 * sin + x2 * cos
                out.to(t)
            return None

        return rope
    return None


def measure_rule(
    rule: str, dims: dict[str, Any], moved_bytes: int, dtype: str, device: str, min_run_time: float
) -> Point | None:
    """One element-wise rule as the model's eager code runs it at one of its leaves' shapes; its
    ``bytes`` are the leaf's fused-ideal bytes (what the prediction divides by the bandwidth)."""
    fn = _rule_fn(rule, dims, dtype, device)
    if fn is None:
        return None
    seconds, spread = _time(fn, device, min_run_time)
    return Point("elementwise_rule", dtype, rule, moved_bytes, seconds, 0, moved_bytes, spread=spread)
