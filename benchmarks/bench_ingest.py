"""Benchmark: ``ditmeter ingest`` of a real trace vs a bare ``json.load`` of the same file, in one run.

A trace is recorded first on this CPU: diffusers' ``WanTransformer3DModel`` of the
1.3B with ``--layers`` blocks at w001-tiny, ``--forwards`` forwards under
torch.profiler with stacks and shapes (as a user records one). Then (a) the
bare read: ``json.load`` of the trace, the least any reader of it pays; (b) the
whole ``ditmeter ingest`` through the CLI entry point (read, resolve against
the model on meta, map, write the run folder). Each is the best of
``--repeats``. Target: (b) / (a) <= 5: PASS or FAIL is printed and the script exits 1 on a miss.

    .venv/bin/python benchmarks/bench_ingest.py [--layers N] [--forwards N] [--repeats N]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import resource
import sys
import tempfile
from pathlib import Path

from timing import Targets, best  # benchmarks/timing.py: the script's folder is on sys.path

TARGET = 5.0


def _record(path: Path, layers: int, forwards: int) -> list[str]:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from ditmeter.config import load

    overrides = [
        "model=wan2.1-t2v-1.3b",
        "workload=w001-tiny",
        "pipeline=diffusers",
        f"model.num_layers={layers}",
    ]
    cfg = load(overrides, "ingest")
    model, inputs = cfg.family.references()["dit"].make(cfg.model, cfg.workload, cfg.geometry, "cpu")
    with torch.no_grad():
        model(**inputs)
        with profile(activities=[ProfilerActivity.CPU], with_stack=True, record_shapes=True) as prof:
            for _ in range(forwards):
                model(**inputs)
    prof.export_chrome_trace(str(path))
    return overrides


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--forwards", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from ditmeter.cli import main as cli

    tmp = Path(tempfile.mkdtemp(prefix="ditmeter-bench-"))
    trace = tmp / "trace.json"
    overrides = _record(trace, args.layers, args.forwards)
    events = len(json.loads(trace.read_text())["traceEvents"])

    def bare() -> object:
        with trace.open() as f:
            return json.load(f)

    def ingest() -> object:
        with contextlib.redirect_stdout(io.StringIO()):
            rc = cli(["ingest", f"trace={trace}", *overrides, f"output_root={tmp / 'runs'}"])
        assert rc == 0, rc
        return None

    ingest()  # warm: the imports and the model's modules on meta are not the measurement
    a, b = best(bare, args.repeats), best(ingest, args.repeats)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    size = trace.stat().st_size / 2**20
    print(f"trace: {args.layers} blocks × {args.forwards} forwards, {events:,} events, {size:.1f} MiB")
    print(f"bare json.load      {a:8.3f} s")
    print(f"ditmeter ingest     {b:8.3f} s   ({events / b:,.0f} events/s)")
    targets = Targets()
    print(
        f"ratio ingest / bare {b / a:8.2f}   " + targets.verdict("ingest", b / a <= TARGET, f"<= {TARGET:g}")
    )
    print(f"peak RSS            {rss:8.0f} MiB")
    return targets.finish()


if __name__ == "__main__":
    sys.exit(main())
