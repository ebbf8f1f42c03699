"""Run folders that appear only when complete and never collide.

Everything is written into a hidden staging folder beside the final one and
renamed into place in one step; a failed run leaves nothing behind.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from ditmeter.errors import ConfigError

#: Where a run's analysis lives inside its run folder.
ANALYSIS_SUBDIR = Path("static_analysis") / "wan2_1"


def new_run_id(model: str, workload: str) -> str:
    """UTC time + model + workload + random suffix: sortable and unique."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    slug = re.sub(r"[^A-Za-z0-9.-]+", "-", f"{model}_{workload}")
    return f"{stamp}_{slug}_{secrets.token_hex(3)}"


@contextmanager
def staged_run(output_root: Path, run_id: str) -> Iterator[Path]:
    """Yield the analysis folder inside a staging run folder; publish it on success.

    The final ``output_root/run_id`` must not exist; on any error the staging
    folder is removed and nothing is published.
    """
    final = output_root / run_id
    if final.exists():
        raise ConfigError("run_id", f"{run_id!r} already exists under {output_root}; pick another")
    output_root.mkdir(parents=True, exist_ok=True)
    staging = output_root / f".{run_id}.partial-{secrets.token_hex(4)}"
    analysis_dir = staging / ANALYSIS_SUBDIR
    analysis_dir.mkdir(parents=True)
    try:
        yield analysis_dir
        if final.exists():
            raise ConfigError("run_id", f"{run_id!r} appeared while this run was writing")
        os.rename(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def list_runs(output_root: Path) -> list[Path]:
    """Published run folders, oldest first (run ids sort by time)."""
    if not output_root.is_dir():
        return []
    return sorted(p for p in output_root.iterdir() if p.is_dir() and not p.name.startswith("."))
