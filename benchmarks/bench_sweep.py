"""Benchmark: ``ditmeter sweep`` over a 10,000-point grid (analytic only, no tracing), in one run.

Target: 10,000 points in at most 3 s on this machine (time.execution=eager, the default: every
kernel of the DiT's eager code timed), for the first sweep of a fresh process
(Hydra composes each model × workload pair and each device once, ~0.15 s a composition). The
grid: the 5 Wan2.1 models × 2 workloads × 10 frame counts (100 analyses) × 10 devices × 2 time modes × 5
device efficiencies (100 devices and plans). ``pipeline=diffusers``: the official FLF2V code
takes 81 frames only. Prints the points, the seconds, the rate, each step's seconds and
PASS/FAIL; then the same grid again, once the compositions are cached; then one point checked
against the expanded prediction of ``report``. Nothing is written. Exits 1 if the target is
missed or the grid is not the 10,000 points it times.

    .venv/bin/python benchmarks/bench_sweep.py [--target-s 3]
"""

from __future__ import annotations

import argparse
import sys
import time

from timing import Targets  # benchmarks/timing.py: the script's folder is on sys.path

from ditmeter.catalog import choices
from ditmeter.commands.report import analyze
from ditmeter.commands.sweep import SweepResult, sweep
from ditmeter.config import load

FRAMES = (17, 33, 49, 65, 81, 97, 113, 129, 145, 161)  # 4n+1
#: Ten devices of the catalog, named (the catalog grows; the grid stays 10,000 points).
DEVICES = (
    "a100-sxm-80gb",
    "a800",
    "h100-pcie",
    "h100-sxm",
    "h20",
    "h200",
    "h800",
    "l40s",
    "rtx4090",
    "rtx5090",
)
EFFICIENCIES = (0.6, 0.7, 0.8, 0.9, 1.0)


def grid() -> list[str]:
    return [
        f"model=[{','.join(m for m in choices('model') if m.startswith('wan2.1-'))}]",
        "pipeline=diffusers",
        "workload=[480p-81f,720p-81f]",
        f"workload.num_frames=[{','.join(map(str, FRAMES))}]",
        f"device=[{','.join(DEVICES)}]",
        "time.mode=[predicted,roofline]",
        "attention=[auto]",
        f"device.efficiency=[{','.join(map(str, EFFICIENCIES))}]",
    ]


def timed(overrides: list[str]) -> tuple[SweepResult, float]:
    start = time.perf_counter()
    result = sweep(overrides)
    return result, time.perf_counter() - start


#: The points of :func:`grid` (the module docstring's product).
POINTS = 10_000


def report(label: str, result: SweepResult, took: float, target_s: float | None, targets: Targets) -> None:
    n = len(result.frame)
    verdict = (
        ""
        if target_s is None
        else "  "
        + targets.verdict(
            f"{n:,} points", took <= target_s and n == POINTS, f"{POINTS:,} points <= {target_s:g} s"
        )
    )
    print(f"{label}: {n:,} points in {took:.2f} s = {n / took:,.0f} points/s{verdict}")
    steps = ", ".join(f"{k} {v:.2f} s" for k, v in result.seconds.items())
    print(f"  {result.analyses} analyses × {result.device_plans} devices and plans; steps: {steps}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target-s", type=float, default=3.0)
    args = p.parse_args()
    overrides, targets = grid(), Targets()
    result, took = timed(overrides)
    report("first sweep (cold: Hydra compositions included)", result, took, args.target_s, targets)
    again, took_again = timed(overrides)
    report("second sweep (compositions cached)", again, took_again, None, targets)

    i = len(result.frame) // 3
    row = result.frame.iloc[i]
    point = [*result.grid.fixed, *(f"{k}={v}" for k, v in list(result.grid.points())[i].items())]
    prediction = analyze(load(point))[1].prediction
    assert prediction is not None
    want = prediction.per_video_s
    print(f"spot check {' '.join(point)}:")
    got = float(row["per_video_s"])
    close = abs(got / want - 1) <= 1e-9
    print(
        f"  sweep {got:.6f} s, report {want:.6f} s, rel diff {got / want - 1:.1e}  "
        + targets.verdict("spot check", close, "the same time within 1e-9")
    )
    return targets.finish()


if __name__ == "__main__":
    sys.exit(main())
