"""Benchmark: ``trace`` + ``compare`` end to end vs one bare FlopCounterMode meta pass, in one run.

For each workload, two fresh child processes (same interpreter, same imports
done before timing) measure (a) the bare pass: build the real module on meta
and run it once under ``FlopCounterMode``; (b) ``ditmeter trace`` then
``ditmeter compare`` through the CLI entry point, writing a real run folder.
The DiT rows trace ``stages=[dit]`` against a bare DiT pass; the whole-pipeline
row traces every stage against bare passes of every stage's module, in the
same run. Each side reports its best time over ``--repeats`` and its peak RSS.
Target: (b) / (a) <= 3; each row prints PASS or FAIL and the script exits 1 if any row misses
(machines are noisy: run it on an idle one).

    .venv/bin/python benchmarks/bench_trace.py [--model M] [--workloads W ...] [--repeats N]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import resource
import subprocess
import sys
import tempfile

from timing import Targets, best  # benchmarks/timing.py: the script's folder is on sys.path


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _child(kind: str, model: str, workload: str, repeats: int, stages: str) -> dict[str, float]:
    import diffusers  # noqa: F401  (imports are not part of either measurement)
    import transformers  # noqa: F401

    from ditmeter.cli import main
    from ditmeter.config import load
    from ditmeter.tracer.capture import flop_counter_pass

    overrides = [f"model={model}", f"workload={workload}", f"stages={stages}"]
    cfg = load(overrides)
    geo, refs = cfg.geometry, cfg.family.references()

    def bare() -> object:
        for name in cfg.stages:
            module, inputs = refs[name].make(cfg.model, cfg.workload, geo, "meta")
            flop_counter_pass(module, inputs)
        return None

    bare()  # warm lazy imports inside diffusers and transformers
    base = _peak_rss_mib()
    if kind == "bare":
        run = bare
    else:
        tmp = tempfile.mkdtemp(prefix="ditmeter-bench-")

        def run() -> object:
            with contextlib.redirect_stdout(io.StringIO()):
                rc = main(["trace", *overrides, f"output_root={tmp}"])
                rc = rc or main(["compare", f"output_root={tmp}"])
            if rc != 0:
                raise SystemExit(f"trace/compare exited {rc}")
            return rc

    seconds = best(run, repeats)
    return {"seconds": seconds, "peak_rss_mib": _peak_rss_mib(), "base_rss_mib": base}


def _measure(kind: str, model: str, workload: str, repeats: int, stages: str) -> dict[str, float]:
    argv = [sys.executable, __file__, "--child", kind, "--model", model, "--workloads", workload]
    argv += ["--stages", stages, "--repeats", str(repeats)]
    out = subprocess.run(argv, check=True, capture_output=True, text=True)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="wan2.1-t2v-14b")
    p.add_argument("--workloads", nargs="+", default=["w003-720p", "720p-81f"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--pipeline-model", default="wan2.1-i2v-14b-480p", help="model of the whole-pipeline row")
    p.add_argument("--pipeline-workload", default="480p-81f")
    p.add_argument("--child", choices=("bare", "trace"), help=argparse.SUPPRESS)
    p.add_argument("--stages", default="[dit]", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.model, args.workloads[0], args.repeats, args.stages)))
        return 0
    targets = Targets()
    print(f"best of {args.repeats}, each side in its own process after imports")
    header = f"  {'row':<44} {'bare':>8} {'trace+compare':>14} {'ratio':>7}  peak RSS bare / trace"
    print(header)
    rows = [(args.model, wl, "[dit]", f"{args.model} {wl} (DiT)") for wl in args.workloads]
    pipe = (args.pipeline_model, args.pipeline_workload)
    rows.append((*pipe, "null", f"{pipe[0]} {pipe[1]} (every stage)"))
    for model, wl, stages, label in rows:
        bare = _measure("bare", model, wl, args.repeats, stages)
        full = _measure("trace", model, wl, args.repeats, stages)
        ratio = full["seconds"] / bare["seconds"]
        print(
            f"  {label:<44} {bare['seconds']:>7.2f}s {full['seconds']:>13.2f}s {ratio:>6.2f}x  "
            f"{bare['peak_rss_mib']:.0f} MiB / {full['peak_rss_mib']:.0f} MiB  "
            + targets.verdict(label, ratio <= 3, "trace+compare <= 3x the bare FlopCounterMode pass")
        )
    return targets.finish()


if __name__ == "__main__":
    sys.exit(main())
