"""``scripts/gpu_check.sh``, the one command a lent GPU runs (docs/gpu-check.md): its dry run on
this CPU takes every step (calibrate, report with the calibration, profile, ingest of the trace)
and leaves only files the device tool brings back."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def test_the_gpu_check_dry_run_leaves_at_most_8_plain_files(tmp_path: Path) -> None:
    env = {**os.environ, "GPU_CHECK_KIND": "cpu", "PY": sys.executable, "OUT": str(tmp_path)}
    run = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu_check.sh")], env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert all((tmp_path / n).is_file() for n in left) and len(left) <= 8  # the device tool's limits
    assert {"calibration.yaml", "trace.json.gz", "ingest-summary.md", "log.txt"} <= set(left)
    calibration = yaml.safe_load((tmp_path / "calibration.yaml").read_text(encoding="utf-8"))
    assert calibration["kind"] == "ditmeter-calibration"
    log = (tmp_path / "log.txt").read_text(encoding="utf-8")
    assert "== 3. profile" in log and "FLOPs check" in log and "exact" in log
