"""Benchmark: the analytic evaluation vs one bare FlopCounterMode meta pass, in one run.

Prints ratios measured in this run, each with PASS or FAIL against its target; exits 1 if any
target is missed (machines are noisy: run it on an idle one).
Target: the analytic evaluation of 14B at 720p-81f at least 1000× faster than
one FlopCounterMode pass of the diffusers model on the meta device; `report`
with a device (tables, JSON, summary, three plots) under 1 s (and what a multi-GPU plan adds:
the per-GPU estimate and 11 more for scaling.png); the memory
measurement ``trace`` adds (one run under the tensor-lifetime counter, on the
module already built) at most 1× a bare FlopCounterMode pass of that module.

    .venv/bin/python benchmarks/bench_report.py [--model M] [--workload W] [--repeats N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from timing import Targets, best  # benchmarks/timing.py: the script's folder is on sys.path
from torch import nn

from ditmeter.commands.report import report
from ditmeter.config import load
from ditmeter.tracer.capture import capture_forward, flop_counter_pass
from ditmeter.tracer.memory import peak_live_bytes


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="wan2.1-t2v-14b")
    p.add_argument("--workload", default="720p-81f")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    cfg = load([f"model={args.model}", f"workload={args.workload}"])
    fam, spec, wl = cfg.family, cfg.model, cfg.workload
    forward = (fam.forward_stage,)

    evaluate_s = best(lambda: fam.analyze(spec, wl, forward).per_video, args.repeats * 20)

    geo = cfg.geometry
    make = fam.references()[fam.forward_stage].make

    def on_fresh_model(run: Callable[[nn.Module, dict[str, torch.Tensor]], object]) -> Callable[[], object]:
        # Both passes build the model, as a user's first trace does.
        def once() -> object:
            module, inputs = make(spec, wl, geo, "meta")
            return run(module, inputs)

        return once

    fc_s = best(on_fresh_model(flop_counter_pass), args.repeats)
    capture_s = best(on_fresh_model(capture_forward), args.repeats)
    module, inputs = make(spec, wl, geo, "meta")
    run_fc_s = best(lambda: flop_counter_pass(module, inputs), args.repeats)
    memory_s = best(lambda: peak_live_bytes(module, inputs), args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        cfg_tmp = load([f"model={args.model}", f"workload={args.workload}", f"output_root={Path(tmp)}"])
        report_s = best(lambda: report(cfg_tmp), args.repeats)
        device = [f"model={args.model}", f"workload={args.workload}", "device=h100-sxm"]
        cfg_dev = load([*device, f"output_root={Path(tmp)}"])
        report(cfg_dev)  # matplotlib's first import is not part of the measurement
        device_s = best(lambda: report(cfg_dev), args.repeats)
        plan = ["parallel.ulysses=8", "parallel.dit_fsdp=true", "parallel.t5_fsdp=true"]
        cfg_plan = load([*device, *plan, f"output_root={Path(tmp)}"], "report")
        plan_s = best(lambda: report(cfg_plan), args.repeats)

    targets = Targets()
    print(f"model={args.model} workload={args.workload} (best of {args.repeats})")
    print(f"  FlopCounterMode meta pass (build + forward): {fc_s * 1e3:9.2f} ms")
    print(f"  analytic evaluation (per-video totals):      {evaluate_s * 1e3:9.3f} ms")
    print(f"  full `report` (tables, JSON, summary, I/O):  {report_s * 1e3:9.2f} ms")
    ratio = fc_s / evaluate_s
    print(
        f"  ratio FlopCounterMode / analytic evaluation: {ratio:9.0f}x  "
        + targets.verdict("analytic evaluation", ratio >= 1000, ">= 1000x")
    )
    print(f"  ratio FlopCounterMode / full report:         {fc_s / report_s:9.1f}x")
    print(f"  fx capture with per-node FLOPs (build + run):{capture_s * 1e3:9.2f} ms")
    ratio = capture_s / fc_s
    print(
        f"  ratio fx capture / FlopCounterMode pass:     {ratio:9.2f}x  "
        + targets.verdict("fx capture", ratio <= 3, "<= 3x, issue 3")
    )
    print(
        f"  `report device=h100-sxm` (3 plots included): {device_s * 1e3:9.2f} ms  "
        + targets.verdict("report with a device", device_s < 1, "< 1000 ms")
    )
    print(
        f"  the same under Ulysses 8 + FSDP (scaling.png):{plan_s * 1e3:8.2f} ms  ({plan_s / device_s:.2f}x)"
    )
    print(f"  FlopCounterMode pass on the built module:    {run_fc_s * 1e3:9.2f} ms")
    print(f"  memory measurement (tensor lifetimes):       {memory_s * 1e3:9.2f} ms")
    ratio = memory_s / run_fc_s
    print(
        f"  ratio memory measurement / FlopCounterMode:  {ratio:9.2f}x  "
        + targets.verdict("memory measurement", ratio <= 1, "<= 1x")
    )
    return targets.finish()


if __name__ == "__main__":
    sys.exit(main())
