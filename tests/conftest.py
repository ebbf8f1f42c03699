"""Shared fixtures: model specs and workloads come from the shipped configs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from ditmeter.analytic.analysis import Analysis
from ditmeter.analytic.workload import Workload
from ditmeter.config import load
from ditmeter.models.wan21 import WAN21

MODELS = ("wan2.1-t2v-14b", "wan2.1-t2v-1.3b")
WORKLOADS = ("w001-tiny", "w002-512p", "w003-720p", "480p-81f", "720p-81f")


def spec_and_workload(model: str, workload: str, *overrides: str) -> tuple[Any, Workload]:
    cfg = load([f"model={model}", f"workload={workload}", *overrides])
    return cfg.model, cfg.workload


def analyze(model: Any, workload: Workload, stages: Sequence[str] = ("dit",)) -> Analysis:
    """The Wan2.1 analysis of ``stages`` (the DiT alone by default)."""
    return WAN21.analyze(model, workload, stages)


@pytest.fixture
def out_root(tmp_path: Path) -> Path:
    return tmp_path / "runs"
