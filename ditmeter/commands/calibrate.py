"""``ditmeter calibrate``: measure the model's own kernels on this machine and write a calibration.

The GEMM, attention and convolution shapes of the selected stages (at the
workload) are read from the analysis, timed on ``device_kind`` with
``torch.utils.benchmark`` (CUDA; a timed loop on a CPU) (:mod:`ditmeter.tracer.calibrate`), fitted into a
kernel table of fractions of the device's peaks
(:func:`ditmeter.analytic.calibration.fit_kernels`) and written as YAML
(:mod:`ditmeter.analytic.calibration`). ``calibration=PATH`` then makes every
prediction use the machine and its measured fractions.
"""

from __future__ import annotations

import os
import platform
import socket
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import yaml

from ditmeter.analytic.analysis import Analysis
from ditmeter.analytic.calibration import (
    calibration_mapping,
    fit_kernels,
    implausible_points,
    measured_device,
)
from ditmeter.analytic.device import DeviceSpec
from ditmeter.analytic.kernels import KernelTable
from ditmeter.analytic.timing import KERNEL_CLASS
from ditmeter.analytic.tree import walk
from ditmeter.commands.progress import Progress, no_progress
from ditmeter.compare.mapping import ZERO_OPS
from ditmeter.config import RunConfig
from ditmeter.errors import ConfigError
from ditmeter.files import check_output_file, write_atomically


@attrs.frozen
class CalibrationResult:
    path: Path
    device: DeviceSpec
    kernels: KernelTable
    points: list[dict[str, Any]]
    seconds: float
    #: points outside physical limits, medians with a wide spread (a busy machine)
    warnings: tuple[str, ...] = ()


def _a_calibration(path: Path) -> bool:
    """Whether ``path`` holds a calibration file (its ``kind``): one ``calibrate`` wrote, which a
    new run may replace; any other file is the user's."""
    from ditmeter.analytic.calibration import KIND
    from ditmeter.files import load_yaml

    try:
        raw = load_yaml(path, "calibrate.output")
    except ConfigError:
        return False
    return isinstance(raw, dict) and raw.get("kind") == KIND


def _leaves(analysis: Analysis, stages: Iterable[str], kind: str) -> Iterable[tuple[str, dict[str, Any]]]:
    wanted = set(stages)
    for stage in analysis.every_stage:
        if stage.name in wanted:
            for r in walk(stage.tree, expand=False):
                if r.kind == "leaf" and KERNEL_CLASS.get(r.rule or "") == kind:
                    yield stage.dtype, dict(r.dims)


def model_shapes(analysis: Analysis, stages: Iterable[str]) -> dict[str, list[tuple[Any, ...]]]:
    """The model's own kernel shapes: GEMMs (rows, in, out, dtype), fused attention (batch, heads,
    q, kv, head dim, dtype; 16-bit, head dim <= 256) and convolutions (outputs, in, out, kernel
    volume, dtype), each once."""
    stages = tuple(stages)
    gemm = {
        (int(d["tokens"]), int(d["in_features"]), int(d["out_features"]), dt)
        for dt, d in _leaves(analysis, stages, "gemm")
        if "in_features" in d
    }
    attention = set()
    for dt, d in _leaves(analysis, stages, "attention"):
        if dt != "fp32" and int(d.get("head_dim", 0)) <= 256:
            for key in ("kv_tokens", "text_tokens", "image_tokens"):
                if key in d:
                    attention.add(
                        (
                            int(d["batch"]),
                            int(d["heads"]),
                            int(d["q_tokens"]),
                            int(d[key]),
                            int(d["head_dim"]),
                            dt,
                        )
                    )
    conv = set()
    for dt, d in _leaves(analysis, stages, "conv"):
        if "in_channels" in d:
            outputs = int(d["outputs"]) if "outputs" in d else int(d["batch"]) * int(d["patches"])
            conv.add((outputs, int(d["in_channels"]), int(d["out_channels"]), int(d["kernel_volume"]), dt))
    return {"gemm": sorted(gemm), "attention": sorted(attention), "conv": sorted(conv)}


def elementwise_leaves(
    analysis: Analysis, stages: Iterable[str]
) -> list[tuple[str, dict[str, Any], int, str]]:
    """(rule, dims, fused-ideal bytes, dtype): the largest leaf of every element-wise rule of the
    selected stages, where its time is."""
    largest: dict[str, tuple[str, dict[str, Any], int, str]] = {}
    wanted = set(stages)
    for stage in analysis.every_stage:
        if stage.name not in wanted:
            continue
        for r in walk(stage.tree, expand=False):
            if r.kind == "leaf" and r.rule and KERNEL_CLASS.get(r.rule) is None and r.dims:
                moved = r.cost.moved_bytes
                if moved > largest.get(r.rule, ("", {}, -1, ""))[2]:
                    largest[r.rule] = (r.rule, dict(r.dims), moved, stage.dtype)
    return sorted(largest.values(), key=lambda v: v[0])


def machine_description(device_kind: str, device: DeviceSpec | None) -> dict[str, Any]:
    """What was measured: host, processor, threads, torch, the device, when."""
    import torch

    host = socket.gethostname()
    info: dict[str, Any] = {
        "host": host,
        "device_kind": device_kind,
        "processor": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": str(torch.__version__),
        "python": platform.python_version(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if device_kind == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
        info["name"] = device.name if device is not None else "cuda"
    else:
        info["name"] = "cpu"
        info["display_name"] = f"CPU {info['processor']} ({info['threads']} threads, {host})"
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemTotal:"):
                    info["memory_bytes"] = int(line.split()[1]) * 1024
        except OSError:
            info["memory_bytes"] = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return info


def _residual_shape(analysis: Analysis) -> tuple[int, int, str]:
    """The forward stage's residual stream [rows, dim] and dtype: where element-wise work runs."""
    g = analysis.geometry
    dim = int(getattr(analysis.model, "dim", 1024))
    return analysis.workload.batch_size * g.tokens, dim, analysis.forward.dtype


def calibrate(cfg: RunConfig, progress: Progress = no_progress) -> CalibrationResult:
    """Measure, fit and write the calibration file (atomically); see the module docstring."""
    import time

    import torch

    from ditmeter.tracer import calibrate as bench

    kind, opts = cfg.calibrate.device_kind, cfg.calibrate
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device_kind", "cuda: torch sees no CUDA device on this machine; allowed here: cpu")
    if kind == "cuda" and cfg.device is None:
        raise ConfigError(
            "device", "calibrate device_kind=cuda needs device=NAME: the fractions are of its peaks"
        )
    start = time.perf_counter()
    host = socket.gethostname()
    named = cfg.device.name if kind == "cuda" and cfg.device is not None else "cpu"
    field = "calibrate.output" if opts.output else "output_root"
    path = Path(opts.output) if opts.output else cfg.output_root / f"calibration-{named}-{host}.yaml"
    check_output_file(path, field, _a_calibration)  # before any measurement: a device, FIFO, folder,
    # link or a file this tool did not write is refused
    analysis = cfg.family.analyze(cfg.model, cfg.workload, cfg.stages, cfg.offload)
    shapes = model_shapes(analysis, cfg.stages)
    rows, dim, dtype = _residual_shape(analysis)
    leaves = elementwise_leaves(analysis, cfg.stages)
    _check_memory(kind, shapes, (rows, dim, dtype), leaves, opts.max_flops)
    points: list[dict[str, Any]] = []
    measure: dict[str, Callable[..., bench.Point]] = {
        "gemm": bench.measure_gemm,
        "attention": bench.measure_attention,
        "conv": bench.measure_conv,
    }
    with torch.no_grad():
        for kind_name, fn in measure.items():
            if shapes[kind_name]:
                with progress(f"measure {len(shapes[kind_name])} {kind_name} shapes"):
                    points += [
                        fn(s, kind, opts.max_flops, opts.min_run_time).as_dict() for s in shapes[kind_name]
                    ]
        with progress("measure element-wise bandwidth and per-op overhead"):
            points += [
                p.as_dict() for p in bench.measure_elementwise(rows, dim, dtype, kind, opts.min_run_time)
            ]
            points.append(bench.measure_host(kind, opts.min_run_time).as_dict())
        with progress("measure the host's cost per kernel of the real diffusers DiT's code"):
            points.append(bench.measure_module_host(kind, opts.min_run_time, ZERO_OPS).as_dict())
        with progress(f"measure {len(leaves)} element-wise rules as the model's eager code runs them"):
            for rule, dims, moved, rule_dtype in leaves:
                point = bench.measure_rule(rule, dims, moved, rule_dtype, kind, opts.min_run_time)
                if point is not None:
                    points.append(point.as_dict())
    machine = machine_description(kind, cfg.device)
    device = cfg.device if kind == "cuda" and cfg.device is not None else measured_device(points, machine)
    where = f"{machine['host']} ({machine.get('gpu', machine['processor'])}, torch {machine['torch']})"
    kernels = fit_kernels(points, device, overlapped=kind == "cuda", where=where)
    warnings = implausible_points(points, device)
    content = calibration_mapping(machine, device, kernels, points, warnings)
    write_atomically(
        path, yaml.safe_dump(content, sort_keys=False, allow_unicode=True), field, _a_calibration
    )
    return CalibrationResult(path, device, kernels, points, time.perf_counter() - start, tuple(warnings))


def measurement_bytes(
    shapes: dict[str, list[tuple[Any, ...]]],
    residual: tuple[int, int, str],
    leaves: list[tuple[str, dict[str, Any], int, str]],
    max_flops: float,
) -> int:
    """The most memory one measurement holds at once: a GEMM's, convolution's or attention's
    operands (rows, outputs or queries cut to ``max_flops`` as :mod:`ditmeter.tracer.calibrate`
    cuts them; an attention's keys and values and a GEMM's weight are never cut), the element-wise
    kinds at the residual stream (two inputs, an output and one result), or an element-wise rule
    (NB: 4× its fused-ideal bytes, for the eager code's fp32 temporaries; an estimate)."""
    from ditmeter.tracer.calibrate import TORCH_DTYPES
    from ditmeter.tracer.calibrate import _rows_within as cut

    def size(dtype: str) -> int:
        return int(TORCH_DTYPES[dtype].itemsize)

    need = [4 * residual[0] * residual[1] * size(residual[2])]
    for rows, fan_in, fan_out, dt in shapes["gemm"]:
        rows = cut(rows, 2.0 * fan_in * fan_out, max_flops)
        need.append(size(dt) * (rows * fan_in + fan_in * fan_out + rows * fan_out))
    for batch, heads, q, kv, head_dim, dt in shapes["attention"]:
        q = cut(q, 4.0 * batch * heads * kv * head_dim, max_flops)
        need.append(size(dt) * batch * heads * (head_dim * (2 * q + 2 * kv) + q * kv))
    for outputs, cin, cout, kvol, dt in shapes["conv"]:
        outputs = cut(outputs, 2.0 * cin * cout * kvol, max_flops)
        need.append(size(dt) * (outputs * cin * kvol + cin * cout * kvol + outputs * cout))
    need += [4 * moved for _, _, moved, _ in leaves]
    return max(need)


def _check_memory(
    kind: str,
    shapes: dict[str, list[tuple[Any, ...]]],
    residual: tuple[int, int, str],
    leaves: list[tuple[str, dict[str, Any], int, str]],
    max_flops: float,
) -> None:
    """Refuse, before anything is allocated, a workload whose measurements the device cannot hold."""
    from ditmeter.reports.format import binary_bytes
    from ditmeter.tracer.profile import available_bytes

    need, have = measurement_bytes(shapes, residual, leaves, max_flops), available_bytes(kind)
    if need > have:
        raise ConfigError(
            "workload",
            f"calibrating needs about {binary_bytes(need)} for its largest measurement and the {kind} has "
            f"{binary_bytes(have)} free; shrink the workload (the shapes are the workload's)",
        )
