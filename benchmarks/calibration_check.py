"""Check the calibration mechanism on this machine: calibrate, predict, profile, compare, in one run.

1. ``ditmeter calibrate`` on the local device at the config's shapes (1.3B, w001-tiny, the DiT);
2. ``ditmeter profile`` of the same forward (2 blocks, random weights) with ``calibration=`` the
   file just written, so its ``predicted_s`` columns come from the calibration;
3. print predicted / measured for the forward (the time inside the ops) and per category.

Targets: the forward within 25%, each category within 50%; each prints PASS or FAIL and the
script exits 1 on a miss (machines are noisy: run it on an idle one). A category whose leaves
are eager element-wise chains (norm_mod, rope, head) is where the fused-ideal bytes of the rules
sit furthest from what eager PyTorch moves.

    .venv/bin/python benchmarks/calibration_check.py [--model M] [--workload W] [--device-kind cpu|cuda]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from timing import Targets  # benchmarks/timing.py: the script's folder is on sys.path

from ditmeter.commands.calibrate import calibrate
from ditmeter.commands.profile import profile
from ditmeter.config import load
from ditmeter.reports.device_report import measured_by_category


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="wan2.1-t2v-1.3b")
    p.add_argument("--workload", default="w001-tiny")
    p.add_argument("--device-kind", default="cpu")
    p.add_argument("--device", default=None, help="catalog device for --device-kind cuda")
    p.add_argument("--layers", type=int, default=2)
    args = p.parse_args()
    targets = Targets()
    with tempfile.TemporaryDirectory() as tmp:
        cal = Path(tmp) / "calibration.yaml"
        common = [f"model={args.model}", f"workload={args.workload}", f"output_root={tmp}"]
        device = [f"device={args.device}"] if args.device else []
        cfg = load(
            [*common, *device, f"device_kind={args.device_kind}", "stages=[dit]", f"calibrate.output={cal}"],
            "calibrate",
        )
        result = calibrate(cfg)
        print(
            f"calibrated in {result.seconds:.1f} s: {len(result.points)} points "
            f"on {result.device.display_name}"
        )
        run = profile(
            load(
                [
                    *common,
                    f"calibration={cal}",
                    f"profile.device_kind={args.device_kind}",
                    f"profile.num_layers={args.layers}",
                ],
                "profile",
            )
        )
        cats = measured_by_category(run.modules)
        measured, predicted = float(cats["measured_time_s"].sum()), float(cats["predicted_s"].sum())
        ok = abs(predicted / measured - 1) <= 0.25
        print(
            f"forward ({args.layers} blocks, inside the ops): predicted {predicted:.4g} s, measured "
            f"{measured:.4g} s, ratio {predicted / measured:.2f} "
            + targets.verdict("forward", ok, "predicted / measured 0.75-1.25")
        )
        for r in cats.itertuples():
            ratio = r.predicted_s / r.measured_time_s
            print(
                f"  {r.category:<10} predicted {r.predicted_s:.4g} s  measured {r.measured_time_s:.4g} s  "
                f"ratio {ratio:.2f}  " + targets.verdict(str(r.category), abs(ratio - 1) <= 0.5, "0.5-1.5")
            )
    return targets.finish()


if __name__ == "__main__":
    sys.exit(main())
