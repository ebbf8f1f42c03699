"""The CLI's contract: exit 0 ok, 1 gate failed, 2 bad input or unusable environment (one line on
stderr, nothing written), 3 internal error (a log, one line). Never a traceback, never a hang."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ditmeter import cli
from ditmeter.cli import main
from ditmeter.commands.report import analyze
from ditmeter.config import load

TINY = ["model=wan2.1-t2v-1.3b", "workload=w001-tiny"]


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(argv)
    return status, out.getvalue(), err.getvalue()


def _files(root: Path) -> set[Path]:
    return set(root.rglob("*")) if root.exists() else set()


# ---- 1,000 generated invocations, in process --------------------------------------------------

_VALUES = st.one_of(
    st.integers(-3, 3),
    st.sampled_from([0, 1, 2, 7, 16, 33, 81, 256, 480, 832, 10**12, 2**63, -(10**9)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        [
            "bf16",
            "fp32",
            "int4",
            "official",
            "diffusers",
            "abc",
            "",
            "[bf16]",
            "{}",
            "null",
            "[1,2,3]",
            "${oc.env:NOPE}",
            "${workload.height}",
            "1e-320",
            "1e300",
            "true",
        ]
    ),
)
_KEYS = st.sampled_from(
    [
        "workload.batch_size",
        "workload.num_frames",
        "workload.height",
        "workload.width",
        "workload.num_inference_steps",
        "workload.guidance_scale",
        "workload.text_len",
        "workload.context_len",
        "workload.dtype",
        "pipeline",
        "offload.model",
        "offload.t5_cpu",
        "+workload.steps",
        "~workload.height",
        "model.dim",
        "model.num_heads",
        "model.num_layers",
        "model.eps",
        "model.patch_size",
        "model.pipeline",
        "model.text_encoder.d_ff",
        "model.vae.dim_mult",
        "model.vae.num_res_blocks",
        "model.family",
        "device.efficiency",
        "device.bf16_tflops",
        "measured_video_s",
        "stages",
        "run_id",
        "compare.tolerance",
        "compare.show",
        "profile.num_layers",
        "profile.warmup",
        "profile.device_kind",
        "profile.trace",
        "profile",
        "compare",
        "+foo",
        "output_root",
    ]
)
_GROUPS = st.sampled_from(
    [
        "model=wan2.1-t2v-1.3b",
        "model=wan2.1-i2v-14b-480p",
        "model=nope",
        "workload=w001-tiny",
        "workload=480p-81f",
        "workload=huge",
        "device=h100-sxm",
        "device=rtx4090",
        "device=b300",
        "~device",
    ]
)
_MALFORMED = st.sampled_from(["=", "workload.height", "a b=c", "workload.height=[", "--help=1", "x=${"])


def _override(key: str, value: Any) -> str:
    return f"{key}={value}" if not key.startswith("~") else key


@st.composite
def _invocations(draw: Any) -> list[str]:
    command = draw(st.sampled_from(["report", "trace", "profile", "compare"]))
    items = draw(st.lists(st.one_of(_GROUPS, st.builds(_override, _KEYS, _VALUES), _MALFORMED), max_size=3))
    return [command, *items]


def _validating_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands' bodies replaced by what they do before any long work: load and validate every
    key, cost every stage (the analysis with its bounds), take the geometry. The heavy real runs
    (tracing, profiling, writing) are exercised on real inputs elsewhere in the suite."""

    def validate(command: str) -> Any:
        def run(overrides: list[str], console: Any) -> int:
            cfg = load(overrides, command)
            if command != "compare":
                analyze(cfg)
            cfg.geometry  # noqa: B018
            return 0

        return run

    monkeypatch.setattr(cli, "_COMMANDS", {c: validate(c) for c in cli._COMMANDS})


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(argv=_invocations())
def test_any_invocation_keeps_the_contract(argv: list[str], tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tmp_path_factory.getbasetemp() / "contract-runs"
    argv = [*argv, f"output_root={root}"] if not any(a.startswith("output_root=") for a in argv) else argv
    before = _files(root)
    with pytest.MonkeyPatch.context() as mp:
        _validating_only(mp)
        status, _, err = _run(argv)
    assert status in (0, 1, 2), (argv, err)
    assert "Traceback" not in err
    if status == 2:
        assert err.count("\n") == 1 and err.startswith("ditmeter: error: "), (argv, err)
        assert _files(root) == before, argv


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    frames=st.integers(1, 200),
    height=st.integers(1, 2000),
    width=st.integers(1, 2000),
    batch=st.integers(1, 4),
    steps=st.integers(1, 100),
    model=st.sampled_from(["wan2.1-t2v-1.3b", "wan2.1-i2v-14b-480p", "wan2.1-flf2v-14b-720p"]),
)
def test_real_report_runs_keep_the_contract(
    frames: int,
    height: int,
    width: int,
    batch: int,
    steps: int,
    model: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The whole `report` (tables, JSON, summary, plots) on random workloads: 0 or a clean 2."""
    root = tmp_path_factory.mktemp("real")
    w = [f"workload.num_frames={frames}", f"workload.height={height}", f"workload.width={width}"]
    w += [f"workload.batch_size={batch}", f"workload.num_inference_steps={steps}"]
    status, out, err = _run(
        ["report", f"model={model}", "workload=w001-tiny", *w, "device=h100-sxm", f"output_root={root}"]
    )
    assert status in (0, 2), err
    if status == 0:
        (run,) = root.iterdir()
        report = json.loads(next(run.rglob("report.json")).read_text())
        assert report["workload"]["geometry"]["tokens"] > 0 and "nan" not in out.lower()
    else:
        assert err.count("\n") == 1 and list(root.iterdir()) == []


# ---- exit 2: bad input and unusable environments, each family --------------------------------


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["+workload.steps=25"], "workload.steps: not a known key"),
        (["+foo=1"], "foo: not a known key"),
        (["compare.tolerance=0.1"], "compare.tolerance: not used by `ditmeter report`"),
        (["measured_video_s=100"], "measured_video_s: needs device=NAME"),
        (["device=h100-sxm", "device.efficiency=1e-320"], "device.efficiency: must be in [0.001, 1]"),
        (
            ["device=h100-sxm", "measured_video_s=1e-320"],
            "measured_video_s: must be a finite number >= 0.001",
        ),
        (["workload.dtype=[bf16]"], "workload.dtype: ['bf16'] not allowed"),
        (["model.eps=abc"], "model.eps: must be a finite number > 0"),
        (["workload.height=${oc.env:DITMETER_NOPE}"], "workload.height: "),
        (["output_root=[a]"], "output_root: must be a path"),
        (["output_root=''"], "output_root: must be a path"),
        (["profile=5"], "profile: not used by `ditmeter report`"),
        (["run_id=.hidden"], "run_id: must be a folder name"),
        (["run_id=.."], "run_id: must be a folder name"),
        (["run_id=" + "r" * 300], "run_id: must be a folder name"),
        (["output_root=/dev/null"], "output_root: /dev/null is not a folder"),
        (["output_root=/tmp/" + "x" * 300], "output_root: a folder name is longer than 255 bytes"),
        (["model.num_layers=1000000000"], "model.num_layers: 1,000,000,000 exceeds 200"),
        (["workload.num_frames=1000000000000"], "workload: tensor_flops of whole video would be"),
        (["workload.batch_size=100000000000"], "workload: tensor_flops of whole video would be"),
        (
            [
                "workload.num_frames=409",
                "workload.height=2160",
                "workload.width=3840",
                "workload.num_inference_steps=50",
            ],
            "workload: tensor_flops",
        ),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(args: list[str], field: str, tmp_path: Path) -> None:
    root = tmp_path / "runs"
    argv = [
        "report",
        *TINY,
        *(a for a in args),
        *([] if any("output_root" in a for a in args) else [f"output_root={root}"]),
    ]
    status, _, err = _run(argv)
    assert status == 2 and err.count("\n") == 1 and err.startswith(f"ditmeter: error: {field}"), err
    assert not root.exists()


def test_keys_a_command_does_not_use_are_refused(tmp_path: Path) -> None:
    for argv, message in (
        (["profile", *TINY, "stages=[vae_decode]"], "stages: not used by `ditmeter profile`"),
        (["compare", "model=wan2.1-t2v-14b"], "model: not used by `ditmeter compare`"),
        (["compare", "device=h100-sxm"], "device: not used by `ditmeter compare`"),
        (["trace", *TINY, "profile.num_layers=3"], "profile.num_layers: not used by `ditmeter trace`"),
    ):
        status, _, err = _run([*argv, f"output_root={tmp_path}"])
        assert status == 2 and err.startswith(f"ditmeter: error: {message}"), err


def test_an_unwritable_output_root_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Read-only (permission bits do not stop root, so the check's answer is what is tested), a file,
    a path under a file."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    for root, message in ((afile, "is not a folder"), (afile / "sub", "which is not a folder")):
        status, _, err = _run(["report", *TINY, f"output_root={root}"])
        assert status == 2 and message in err
    monkeypatch.setattr(os, "access", lambda *_a, **_k: False)
    status, _, err = _run(["report", *TINY, f"output_root={tmp_path / 'ro'}"])
    assert status == 2 and err.startswith(f"ditmeter: error: output_root: cannot write under {tmp_path}")
    assert not (tmp_path / "ro").exists()


# ---- runs: reservation, races, stale staging, the newest run, schemas -------------------------


def test_a_run_id_being_written_is_refused_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ditmeter.tracer import capture

    (tmp_path / ".mine.partial").mkdir()  # another run holds the id
    monkeypatch.setattr(
        capture, "capture_forward", lambda *_a: pytest.fail("traced although the id was held")
    )
    status, _, err = _run(["trace", *TINY, "stages=[dit]", f"output_root={tmp_path}", "run_id=mine"])
    assert status == 2 and "is being written by another run" in err
    assert (tmp_path / ".mine.partial").is_dir()  # the other run's reservation is untouched


def test_stale_staging_of_a_killed_run_is_removed(tmp_path: Path) -> None:
    old, fresh = tmp_path / ".old.partial", tmp_path / ".fresh.partial"
    old.mkdir()
    fresh.mkdir()
    day_ago = time.time() - 25 * 3600
    os.utime(old, (day_ago, day_ago))
    assert _run(["report", *TINY, f"output_root={tmp_path}"])[0] == 0
    assert not old.exists() and fresh.exists()


def test_compare_reads_the_newest_traced_run_by_creation_time(tmp_path: Path) -> None:
    argv = ["trace", *TINY, "stages=[dit]", f"output_root={tmp_path}"]
    assert _run([*argv, "run_id=zzz-first"])[0] == 0
    assert _run([*argv, "run_id=aaa-second"])[0] == 0  # sorts first by name, created last
    assert _run(["report", *TINY, f"output_root={tmp_path}", "run_id=zzzz-report"])[0] == 0
    status, out, _ = _run(["compare", f"output_root={tmp_path}"])
    assert status == 0 and out.startswith("run aaa-second:") and "the newest traced run, created" in out
    manifest = json.loads((tmp_path / "aaa-second" / "run.json").read_text())
    assert manifest["command"] == "trace" and manifest["artifacts"] == "static_analysis/wan2_1"


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("traced")
    assert _run(["trace", *TINY, "stages=[dit]", f"output_root={root}", "run_id=one"])[0] == 0
    return root / "one"


def _copy(run: Path, tmp_path: Path) -> Path:
    import shutil

    shutil.copytree(run, tmp_path / run.name)
    return tmp_path / run.name / "static_analysis" / "wan2_1"


@pytest.mark.parametrize("damage", ["missing column", "non-json metadata", "directory", "zero rows"])
def test_compare_checks_the_tables_it_reads(traced: Path, tmp_path: Path, damage: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = _copy(traced, tmp_path)
    table = pq.read_table(folder / "modules.parquet")
    if damage == "missing column":
        pq.write_table(table.drop(["measured_flops"]), folder / "modules.parquet")
    elif damage == "non-json metadata":
        meta = {**table.schema.metadata, b"ditmeter.model": b"{not json"}
        pq.write_table(table.replace_schema_metadata(meta), folder / "modules.parquet")
    elif damage == "directory":
        (folder / "nodes.parquet").unlink()
        (folder / "nodes.parquet").mkdir()
    else:
        pq.write_table(pa.Table.from_pylist([], schema=table.schema), folder / "modules.parquet")
        nodes = pq.read_table(folder / "nodes.parquet")
        pq.write_table(pa.Table.from_pylist([], schema=nodes.schema), folder / "nodes.parquet")
    status, out, err = _run(["compare", f"output_root={tmp_path}", "run_id=one"])
    if damage == "zero rows":  # a gate with nothing compared fails
        assert status == 1 and "nothing was compared" in out
        return
    expected = {
        "missing column": "has no column 'measured_flops'",
        "non-json metadata": "is not JSON",
        "directory": "is not a file",
    }[damage]
    assert (
        status == 2
        and err.count("\n") == 1
        and expected in err
        and err.startswith("ditmeter: error: run_id:")
    )


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"dur": None}, "no valid 'dur'"),
        ({"dur": float("nan")}, "no valid 'dur'"),
        ({"ts": "x"}, "no valid 'ts'"),
    ],
)
def test_a_damaged_chrome_trace_is_refused(tmp_path: Path, event: dict[str, Any], message: str) -> None:
    from ditmeter.tracer.profile import FORWARD_RANGE, TraceFormatError, read_chrome_trace

    base = {"ph": "X", "cat": "user_annotation", "name": FORWARD_RANGE, "pid": 1, "tid": 1, "ts": 0, "dur": 5}
    path = tmp_path / "trace.json"
    path.write_text(json.dumps({"traceEvents": [{**base, **event}]}).replace("NaN", "NaN"))
    with pytest.raises(TraceFormatError, match=message):
        read_chrome_trace(path)


def test_profile_refuses_what_the_machine_cannot_hold_or_finish(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ditmeter.tracer import profile as tracer_profile

    status, _, err = _run(["profile", "model=wan2.1-t2v-14b", "workload=480p-81f", f"output_root={tmp_path}"])
    assert status == 2 and "TFLOP would take minutes to hours on a CPU" in err
    monkeypatch.setattr(tracer_profile, "available_bytes", lambda _kind: 1024)
    status, _, err = _run(["profile", *TINY, f"output_root={tmp_path}"])
    assert status == 2 and "profiling needs about" in err and "free" in err
    assert list(tmp_path.iterdir()) == []


def test_trace_refuses_a_vae_loop_that_would_not_end_soon(tmp_path: Path) -> None:
    status, _, err = _run(
        [
            "trace",
            *TINY,
            "workload.num_frames=2001",
            "workload.height=16",
            "workload.width=16",
            f"output_root={tmp_path}",
        ]
    )
    assert status == 2 and "calls the real module 501 times" in err


def test_the_mfu_above_100_percent_is_a_warning(tmp_path: Path) -> None:
    status, out, _ = _run(
        ["report", "workload=720p-81f", "device=h100-sxm", "measured_video_s=100", f"output_root={tmp_path}"]
    )
    assert status == 0 and "warning: MFU 659% is above 100%" in out
    report = json.loads(next(tmp_path.rglob("report.json")).read_text())
    assert report["time"]["warnings"] and "MFU 659%" in report["time"]["warnings"][0]


# ---- the terminal and the process -----------------------------------------------------------


def _shell(command: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    exe = f"{sys.executable} -m ditmeter"
    return subprocess.run(
        ["bash", "-c", "set -o pipefail; " + command.replace("DITMETER", exe)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, **env},
        timeout=300,
    )


@pytest.mark.parametrize(
    ("redirect", "status", "env"),
    [
        ("| head -1", 0, {}),
        (">&-", 0, {}),
        ("> /dev/full", 2, {}),
        ("> out.txt", 0, {"PYTHONIOENCODING": "ascii"}),
        ("> out.txt", 0, {"LC_ALL": "C", "LANG": "C"}),
    ],
)
def test_stdout_that_goes_away_or_cannot_encode_never_breaks_a_run(
    redirect: str, status: int, env: dict[str, str], tmp_path: Path
) -> None:
    done = _shell(f"DITMETER report {' '.join(TINY)} output_root=runs {redirect}", tmp_path, **env)
    assert done.returncode == status, done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr
    assert done.stderr.count("\n") == (1 if status else 0), done.stderr
    (summary,) = (tmp_path / "runs").rglob("summary.md")  # the run itself completed
    assert "×" in summary.read_text(encoding="utf-8")


def test_a_killed_trace_leaves_nothing_compare_reads(tmp_path: Path) -> None:
    """SIGKILL while the run folder is being written: only a hidden staging folder remains, which
    compare ignores (and the next run removes once it is a day old)."""
    marker = tmp_path / "writing"
    child = (
        "import sys, time, pathlib\n"
        "import ditmeter.reports.run_files as rf\n"
        "real = rf.write_json\n"
        "def slow(*a, **k):\n"
        f"    pathlib.Path({str(marker)!r}).write_text('x'); time.sleep(60)\n"
        "rf.write_json = slow\n"
        "from ditmeter.cli import main\n"
        f"sys.exit(main(['trace', *{TINY!r}, 'stages=[dit]', 'output_root={tmp_path / 'runs'}']))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not marker.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert marker.exists(), proc.stderr.read() if proc.stderr else ""
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = list((tmp_path / "runs").iterdir())
    assert [p.name.startswith(".") and p.name.endswith(".partial") for p in left] == [True]
    status, _, err = _run(["compare", f"output_root={tmp_path / 'runs'}"])
    assert status == 2 and "no traced run" in err
