"""A run folder that cannot be published (``run_id`` taken, ``output_root`` a file) is refused at
once: one line naming the key, exit 2, no header, no table and no reading of the trace before it,
nothing written. ``report``, ``diff`` and ``validate`` already did; ``plan``, ``whatif``, ``sweep``
and ``ingest`` refused it only after all their work, ``trace`` and ``profile`` after their header
(the check :func:`ditmeter.reports.run_dir.check_run_folder`, which publishing makes again)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ingest_runs import CUDA_ARGS, hand_cuda_trace

from ditmeter.cli import main

TINY = ("model=wan2.1-t2v-1.3b", "workload=w001-tiny")
COMMANDS = {
    "plan": ("plan", *TINY, "device=h100-sxm", "gpus=2"),
    "whatif": ("whatif", *TINY, "device=h100-sxm"),
    "sweep": ("sweep", *TINY, "device=[h100-sxm,l40s]"),
    "trace": ("trace", *TINY),
    "profile": ("profile", *TINY),
}


def _contents(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _refused(argv: list[str], field: str, capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``argv``: exit 2 and one line on stderr naming ``field``; stdout returned."""
    capsys.readouterr()
    status = main(argv)
    out, err = capsys.readouterr()
    assert status == 2, err + out
    assert err.startswith(f"ditmeter: error: {field}: ") and err.count("\n") == 1, err
    return out


@pytest.mark.parametrize("command", COMMANDS)
def test_a_taken_run_id_is_refused_before_any_costing(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a").mkdir()
    before = _contents(tmp_path)
    out = _refused([*COMMANDS[command], f"output_root={tmp_path}", "run_id=a"], "run_id", capsys)
    assert out == ""  # no table, no progress
    assert _contents(tmp_path) == before


@pytest.mark.parametrize("command", COMMANDS)
def test_an_output_root_that_is_a_file_is_refused_before_any_costing(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "file"
    root.write_text("not a folder\n")
    before = _contents(tmp_path)
    out = _refused([*COMMANDS[command], f"output_root={root}"], "output_root", capsys)  # a fresh run id
    assert out == ""
    assert _contents(tmp_path) == before and root.read_text() == "not a folder\n"


@pytest.fixture
def unread(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading the trace fails the test: the refusal must come before it."""

    def read(*_: Any) -> Any:
        raise AssertionError("the trace was read before the run folder was checked")

    monkeypatch.setattr("ditmeter.commands.ingest.read_trace", read)


@pytest.mark.usefixtures("unread")
@pytest.mark.parametrize("field", ["run_id", "output_root"])
def test_ingest_refuses_the_run_folder_before_reading_the_trace(
    field: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A taken ``run_id``, or an ``output_root`` that is a file: refused before the trace is read."""
    trace = hand_cuda_trace(tmp_path / "t.json")
    if field == "run_id":
        root, taken = tmp_path / "runs", ["run_id=a"]
        (root / "a").mkdir(parents=True)
    else:
        root, taken = tmp_path / "file", []
        root.write_text("not a folder\n")
    before = _contents(tmp_path)
    argv = ["ingest", f"trace={trace}", *CUDA_ARGS, f"output_root={root}", *taken]
    assert _refused(argv, field, capsys) == ""  # not even the header
    assert _contents(tmp_path) == before


def test_ingest_names_the_run_folder_before_the_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The run folder is checked first, as ``validate`` checks it before reading its data: the
    trace, however given, is read after."""
    (tmp_path / "a").mkdir()
    trace = tmp_path / "missing.json"
    argv = ["ingest", f"trace={trace}", *CUDA_ARGS, f"output_root={tmp_path}", "run_id=a"]
    assert _refused(argv, "run_id", capsys) == ""
    assert _contents(tmp_path) == ["a"]


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_calibrate_refuses_an_output_under_proc_before_measuring(capsys: pytest.CaptureFixture[str]) -> None:
    """/proc admits root's write permission check but holds no files: refused before any
    measurement (exit 2, the key named), not after it."""
    status = main(
        [
            "calibrate",
            "calibrate.output=/proc/calibration.yaml",
            "model=wan2.1-t2v-1.3b",
            "workload=w001-tiny",
        ]
    )
    err = capsys.readouterr().err
    assert (
        status == 2
        and err.startswith("ditmeter: error: calibrate.output:")
        and "holds no files" in err
        and "kernel" in err
    )
