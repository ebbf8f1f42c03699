"""Shared fixtures: model specs and workloads come from the shipped configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from ditmeter.analytic.spec import ModelSpec, Workload
from ditmeter.config import load

MODELS = ("wan2.1-t2v-14b", "wan2.1-t2v-1.3b")
WORKLOADS = ("w001-tiny", "w002-512p", "w003-720p", "480p-81f", "720p-81f")


def spec_and_workload(model: str, workload: str, *overrides: str) -> tuple[ModelSpec, Workload]:
    cfg = load([f"model={model}", f"workload={workload}", *overrides])
    return cfg.model, cfg.workload


@pytest.fixture
def out_root(tmp_path: Path) -> Path:
    return tmp_path / "runs"
