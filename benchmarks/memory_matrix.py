"""The memory gate over the standard matrix, both pipelines: analytic vs measured peak live bytes.

For every (model, workload, pipeline) of the standard matrix (5 workloads × both
T2V sizes, I2V-14B-480p and FLF2V-14B at 480p-81f), every stage's real module is
built on meta and run once under the tensor-lifetime counter
(``ditmeter.tracer.memory``), as ``trace`` does; the analytic rule's figure for
that module is beside it. Prints one row per stage, the largest relative error,
and the peak memory per GPU each pipeline predicts. Exit 1 if any error
exceeds 5%.

    .venv/bin/python benchmarks/memory_matrix.py [--pipelines official diffusers] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time

from ditmeter.config import load
from ditmeter.errors import ConfigError
from ditmeter.tracer.memory import peak_live_bytes

T2V = ("wan2.1-t2v-14b", "wan2.1-t2v-1.3b")
WORKLOADS = ("w001-tiny", "w002-512p", "w003-720p", "480p-81f", "720p-81f")
MATRIX = [(m, w) for m in T2V for w in WORKLOADS] + [
    ("wan2.1-i2v-14b-480p", "480p-81f"),
    ("wan2.1-flf2v-14b-720p", "480p-81f"),
]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pipelines", nargs="+", default=["official", "diffusers"])
    p.add_argument("--quick", action="store_true", help="the 1.3B rows and the tiny workloads only")
    args = p.parse_args()
    matrix = [(m, w) for m, w in MATRIX if not args.quick or "1.3b" in m or w == "w001-tiny"]
    worst = 0.0
    head = f"{'model':<24} {'workload':<10} {'pipeline':<10} {'stage':<14}"
    print(f"{head} {'analytic':>16} {'measured':>16} error")
    for pipeline in args.pipelines:
        for model, workload in matrix:
            # one block holds the DiT's peak: every block has the same live set
            try:
                cfg = load(
                    [f"model={model}", f"workload={workload}", f"pipeline={pipeline}", "model.num_layers=1"]
                )
            except ConfigError as exc:  # e.g. the official FLF2V at a frame count it refuses
                print(f"{model:<24} {workload:<10} {pipeline:<10} refused: {exc}")
                continue
            analysis = cfg.family.analyze(cfg.model, cfg.workload, cfg.stages)
            expected = cfg.family.reference_memory(analysis)
            for stage in cfg.stages:
                start = time.perf_counter()
                module, inputs = cfg.family.references()[stage].make(
                    cfg.model, cfg.workload, cfg.geometry, "meta"
                )
                measured = peak_live_bytes(module, inputs)
                err = abs(expected[stage] - measured) / measured
                worst = max(worst, err)
                print(
                    f"{model:<24} {workload:<10} {pipeline:<10} {stage:<14} {expected[stage]:>16,} "
                    f"{measured:>16,} {err:.4%}  ({time.perf_counter() - start:.1f} s)",
                    flush=True,
                )
    print(f"max relative error over every stage: {worst:.4%} (gate: 5%)")
    return 1 if worst > 0.05 else 0


if __name__ == "__main__":
    sys.exit(main())
