"""Run folders that appear only when complete and never collide.

A run is written into a hidden staging folder beside its final place and
published by one rename: the run folder is the one atomic unit, so the files
inside it are written directly. A failed run leaves nothing behind.

Layout: ``<output_root>/<run_id>/static_analysis/<family slug>/`` holds the
artifacts (``static_analysis/wan2_1/`` for Wan2.1).
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

#: The folder of a run's artifacts, under which each family has its own (``wan2_1``).
STATIC = "static_analysis"


def analysis_dir(run: Path, slug: str) -> Path:
    """Where a run's artifacts live: ``<run>/static_analysis/<slug>``."""
    return run / STATIC / slug


def new_run_id(model: str, workload: str) -> str:
    """UTC time + model + workload + random suffix: sortable and unique."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    slug = re.sub(r"[^A-Za-z0-9.-]+", "-", f"{model}_{workload}")
    return f"{stamp}_{slug}_{secrets.token_hex(3)}"


def ensure_free(output_root: Path, run_id: str) -> None:
    """Refuse a run id that is taken (said before a long trace, and again when publishing)."""
    if (output_root / run_id).exists():
        raise ConfigError("run_id", f"{run_id!r} already exists under {output_root}; pick another")


@contextmanager
def staged_run(output_root: Path, run_id: str, slug: str) -> Iterator[Path]:
    """Yield the artifact folder inside a staging run folder; publish the run on success.

    The final ``output_root/run_id`` must not exist; on any error the staging
    folder is removed and nothing is published.
    """
    ensure_free(output_root, run_id)
    output_root.mkdir(parents=True, exist_ok=True)
    staging = output_root / f".{run_id}.partial-{secrets.token_hex(4)}"
    out = analysis_dir(staging, slug)
    out.mkdir(parents=True)
    try:
        yield out
        if (output_root / run_id).exists():
            raise ConfigError("run_id", f"{run_id!r} appeared while this run was writing")
        os.rename(staging, output_root / run_id)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def list_runs(output_root: Path) -> list[Path]:
    """Published run folders, oldest first (run ids sort by time)."""
    if not output_root.is_dir():
        return []
    return sorted(p for p in output_root.iterdir() if p.is_dir() and not p.name.startswith("."))


def artifact_dirs(run: Path) -> list[Path]:
    """The family artifact folders of a run (one per run)."""
    static = run / STATIC
    return sorted(p for p in static.iterdir() if p.is_dir()) if static.is_dir() else []
