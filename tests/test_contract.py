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
        (["output_root=''"], "output_root: must be a path"),
        (["profile=5"], "profile: not used by `ditmeter report`"),
        (["run_id=.hidden"], "run_id: must be a folder name"),
        (["run_id=.."], "run_id: must be a folder name"),
        (["run_id=" + "r" * 300], "run_id: must be a folder name"),
        (["output_root=/dev/null"], "output_root: /dev/null is not a folder"),
        (["output_root=/tmp/" + "x" * 300], "output_root: a folder name is longer than 255 bytes"),
        (["model.num_layers=1000000000"], "model.num_layers: 1,000,000,000 exceeds 200"),
        (["stages=[dit,dit]"], "stages: ['dit', 'dit'] names a stage twice"),
        (["offload.bogus=1"], "offload.bogus: not a known key; keys of offload: model, t5_cpu"),
        (["workload.num_frames=[5,9"], "workload.num_frames: cannot parse it"),
        # a key --help lists for every device, absent from this one's file: taken, then judged
        (["device=l40s", "device.nics_per_node=2"], "device.nics_per_node: l40s has no network"),
        # an optional device number the board's file leaves out needs its source, which is taken too
        (
            ["device=rtx4090", "device.nvlink_gbps=100"],
            "device.sources.nvlink_gbps: every number needs a source",
        ),
        (
            ["device=h100-sxm", "device.memory_bandwidth_gbps=1e-300"],
            "device.memory_bandwidth_gbps: must be a",
        ),
        (["device=h100-sxm", "device.memory_mib=1e308"], "device.memory_mib: must be a number from"),
        (["device=h100-sxm", "device.name="], "device.name: empty"),
        (["workload.name=' '"], "workload.name: empty"),
        # a catalog name is one of the group's files, never a path (nor another group's file)
        (["device=h100-sxm", "device.kernels=../../../etc/hosts"], "device.kernels: kernel table"),
        (["device=h100-sxm", "device.kernels=../fabric/nvswitch-hopper"], "device.kernels: kernel table"),
        (["device=h100-sxm", "device.network=../kernels/hopper"], "device.network: network"),
        (["device=h100-sxm", "host=..", "offload.t5_cpu=true"], "host: '..' unknown"),
        (["workload.num_frames=1e309"], "workload.num_frames: 1e309 is past a 64-bit float's range"),
        (["device=h100-sxm", "device.bf16_tflops=-2E+400"], "device.bf16_tflops: -2E+400 is past"),
        (["device=h100-sxm", "device.memory_mib=1_0e999"], "device.memory_mib: 1_0e999 is past"),
        (["workload.num_frames=_e5"], "workload.num_frames: must be"),  # the pattern, not a number
        (["run_id=é"], "run_id: must be a folder name of at most 200 ASCII"),
        (["stages=dit,vae_decode"], "stages: 'dit,vae_decode' is Hydra's sweep syntax"),
        # Hydra would take the last silently
        (["workload.num_frames=5", "workload.num_frames=9"], "workload.num_frames: given twice"),
        (["device=h100-sxm", "device.fabric=pcie-shm", "device.fabric=pcie-shm"], "device.fabric: given"),
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


def test_a_name_that_reads_as_a_number_past_a_floats_range_is_a_name(tmp_path: Path) -> None:
    """run_id=1e999 is a folder name, not a number Hydra reads as infinity."""
    status, _, err = _run(["report", *TINY, "run_id=1e999", f"output_root={tmp_path}"])
    assert status == 0, err
    assert (tmp_path / "1e999" / "run.json").is_file()


def test_keys_a_command_does_not_use_are_refused(tmp_path: Path) -> None:
    for argv, message in (
        (["profile", *TINY, "stages=[vae_decode]"], "stages: not used by `ditmeter profile`"),
        (["compare", "model=wan2.1-t2v-14b"], "model: compare reads the model and workload from the run"),
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
    """Only ditmeter's own staging (with the marker its reservation writes) is removed, once a day
    old; a ``.*.partial`` folder someone else made, however old, stays."""
    old, fresh, foreign = (tmp_path / f".{n}.partial" for n in ("old", "fresh", "foreign"))
    for folder in (old, fresh, foreign):
        folder.mkdir()
    for folder in (old, fresh):
        (folder / ".ditmeter-staging").write_text("1\n")
    (foreign / "keep.txt").write_text("not ditmeter's")
    day_ago = time.time() - 25 * 3600
    for folder in (old, foreign):
        os.utime(folder, (day_ago, day_ago))
    assert _run(["report", *TINY, f"output_root={tmp_path}"])[0] == 0
    assert not old.exists() and fresh.exists() and (foreign / "keep.txt").is_file()
    (run,) = (p for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert not (run / ".ditmeter-staging").exists()  # the marker does not travel into the run


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
    status, _, err = _run(["compare", f"output_root={tmp_path}", "run_id=one"])
    expected = {
        "missing column": "has no column 'measured_flops'",
        "non-json metadata": "is not JSON",
        "directory": "is not a file",
        "zero rows": "has no rows",  # a traced run always has rows: bad input, not a failed gate
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
        ({"dur": float("nan")}, "no valid 'dur': not a finite number$"),
        ({"dur": "1e309"}, "no valid 'dur': not a finite number$"),
        ({"ts": "-Infinity"}, "no valid 'ts': not a finite number$"),
        ({"ts": 10**400}, "no valid 'ts': an integer past 2\\^63$"),
        ({"ts": "x"}, "no valid 'ts'"),
    ],
)
def test_a_damaged_chrome_trace_is_refused(tmp_path: Path, event: dict[str, Any], message: str) -> None:
    """A damaged event is named; a non-finite number (JSON's NaN, Infinity, 1e309) is not printed
    as nan or inf."""
    from ditmeter.tracer.profile import FORWARD_RANGE, TraceFormatError, read_chrome_trace

    base = {"ph": "X", "cat": "user_annotation", "name": FORWARD_RANGE, "pid": 1, "tid": 1, "ts": 0, "dur": 5}
    path = tmp_path / "trace.json"
    text = json.dumps({"traceEvents": [{**base, **event}]})
    path.write_text(text.replace('"1e309"', "1e309").replace('"-Infinity"', "-Infinity"))  # as a number
    with pytest.raises(TraceFormatError, match=message) as caught:
        read_chrome_trace(path)
    assert "inf" not in str(caught.value).lower().replace("info", "") and "nan" not in str(caught.value)


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


def _writing_run(tmp_path: Path, argv: list[str]) -> subprocess.Popen[bytes]:
    """A CLI run in a child process, returned once it is writing its run folder (and stays there)."""
    marker = tmp_path / "writing"
    child = (
        "import sys, time, pathlib\n"
        "import ditmeter.reports.run_files as rf\n"
        "def slow(*a, **k):\n"
        f"    pathlib.Path({str(marker)!r}).write_text('x'); time.sleep(60)\n"
        "rf.write_json = slow\n"
        "from ditmeter.cli import main\n"
        f"sys.exit(main({argv!r}))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not marker.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert marker.exists(), proc.stderr.read() if proc.stderr else ""
    return proc


def test_a_killed_trace_leaves_nothing_compare_reads(tmp_path: Path) -> None:
    """SIGKILL while the run folder is being written: only a hidden staging folder remains, which
    compare ignores (and the next run removes once it is a day old)."""
    proc = _writing_run(tmp_path, ["trace", *TINY, "stages=[dit]", f"output_root={tmp_path / 'runs'}"])
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = list((tmp_path / "runs").iterdir())
    assert [p.name.startswith(".") and p.name.endswith(".partial") for p in left] == [True]
    status, _, err = _run(["compare", f"output_root={tmp_path / 'runs'}"])
    assert status == 2 and "no traced run" in err


# ---- files the user names: only regular files, read within a limit; output never onto a device --


class _Hung(BaseException):
    """Raised by the alarm: the call blocked (a FIFO read) or ran away (an endless file)."""


@contextlib.contextmanager
def _within(seconds: int) -> Any:
    def ring(*_: Any) -> None:
        raise _Hung(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, ring)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def odd(tmp_path: Path) -> dict[str, Path]:
    """Files no reader should take: a FIFO, a folder, a link to nothing, YAML and JSON nested 30,000
    deep, an integer of 5,000 digits, a sparse file just past the 64 MiB text limit."""
    files = {n: tmp_path / "odd" / n for n in ("fifo", "folder", "dangling", "deep.yaml", "deep.json")}
    files["folder"].mkdir(parents=True)
    os.mkfifo(files["fifo"])
    files["dangling"].symlink_to(tmp_path / "odd" / "nothing")
    files["deep.yaml"].write_text("[" * 30_000 + "]" * 30_000)
    files["deep.json"].write_text('{"traceEvents": ' + "[" * 30_000 + "]" * 30_000 + "}")
    files["bigint.yaml"] = tmp_path / "odd" / "bigint.yaml"
    files["bigint.yaml"].write_text("kind: ditmeter-calibration\nversion: " + "9" * 5000 + "\n")
    files["huge.yaml"] = tmp_path / "odd" / "huge.yaml"
    with files["huge.yaml"].open("wb") as f:
        f.truncate(64 * 2**20 + 1)
    files["zero"] = Path("/dev/zero")
    return files


@pytest.mark.parametrize(
    ("command", "key", "name", "message"),
    [
        ("report", "calibration", "zero", "/dev/zero is a character device, not a regular file"),
        ("report", "calibration", "fifo", "is a FIFO, not a regular file"),
        ("report", "calibration", "folder", "is a folder, not a regular file"),
        ("report", "calibration", "dangling", "a symbolic link to nothing"),
        ("report", "calibration", "deep.yaml", "is nested too deeply to read"),
        ("report", "calibration", "bigint.yaml", "integer string conversion"),
        ("report", "calibration", "huge.yaml", "67,108,865 bytes; at most 67,108,864 are read"),
        ("ingest", "trace", "zero", "/dev/zero is a character device, not a regular file"),
        ("ingest", "trace", "fifo", "is a FIFO, not a regular file"),
        ("ingest", "trace", "deep.json", "is nested too deeply to read"),
    ],
)
def test_a_file_no_reader_should_take_is_refused(
    command: str, key: str, name: str, message: str, odd: dict[str, Path], tmp_path: Path
) -> None:
    """/dev/zero read until memory ran out, a FIFO blocked forever, deep nesting and long integers
    were internal errors, /dev/zero was "no such file": each is one line naming the key."""
    root = tmp_path / "runs"
    with _within(60):
        status, _, err = _run([command, *TINY, f"{key}={odd[name]}", f"output_root={root}"])
    assert status == 2 and err.count("\n") == 1 and err.startswith(f"ditmeter: error: {key}: "), err
    assert message in err and "no such file" not in err, err
    assert not root.exists()


def test_a_gzip_bomb_stops_at_the_limit(tmp_path: Path) -> None:
    import gzip

    from ditmeter.errors import ConfigError
    from ditmeter.files import gunzip

    packed = gzip.compress(b"0" * 10_000)
    assert gunzip(packed, tmp_path / "t.json.gz", "trace", 10_000) == b"0" * 10_000
    with pytest.raises(ConfigError, match="decompresses to more than 9,999 bytes"):
        gunzip(packed, tmp_path / "t.json.gz", "trace", 9_999)


def _no_measurement(monkeypatch: pytest.MonkeyPatch) -> None:
    from ditmeter.tracer import calibrate as bench

    for name in ("measure_gemm", "measure_attention", "measure_conv", "measure_elementwise"):
        monkeypatch.setattr(bench, name, lambda *_a, **_k: pytest.fail("measured before refusing"))


def _leftovers(*folders: Path) -> list[Path]:
    return [p for f in folders for p in f.glob(".*.tmp")]


@pytest.mark.parametrize(
    "target", ["/", "folder", "fifo", "device", "dangling", "under-a-file", "a-users-file", "a-link-to-it"]
)
def test_calibrate_writes_only_a_regular_file(
    target: str, odd: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """calibrate.output onto a device replaced it as root (os.replace); `/` and folders left a
    ``.*.tmp``; a file of the user's (or a link to one) was overwritten. Each is refused before any
    measurement and nothing is written anywhere."""
    _no_measurement(monkeypatch)
    afile = tmp_path / "afile"
    afile.write_text("x")
    (tmp_path / "link").symlink_to(afile)
    if target == "device":
        if os.geteuid() != 0:
            pytest.skip("making a device node needs root")
        path = tmp_path / "null"
        os.mknod(path, 0o666 | 0o020000, os.makedev(1, 3))  # a character device, as /dev/null
    else:
        path = {
            "/": Path("/"),
            "under-a-file": afile / "cal.yaml",
            "a-users-file": afile,
            "a-link-to-it": tmp_path / "link",
        }.get(target) or odd[target]
    before = os.lstat(path).st_mode if os.path.lexists(path) else None
    status, _, err = _run(["calibrate", *TINY, f"calibrate.output={path}", f"output_root={tmp_path}/r"])
    assert status == 2 and err.startswith("ditmeter: error: calibrate.output: "), err
    assert err.count("\n") == 1
    assert (os.lstat(path).st_mode if os.path.lexists(path) else None) == before
    assert _leftovers(tmp_path, odd["folder"], Path("/")) == [] and not (tmp_path / "r").exists()
    assert afile.read_text() == "x"


def test_a_failed_write_leaves_no_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk at the rename (or the write) removes the temporary file and the folders made."""
    import errno

    from ditmeter import files
    from ditmeter.errors import ConfigError

    def full(*_a: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files.os, "replace", full)
    with pytest.raises(ConfigError, match="no space left on the device"):
        files.write_atomically(tmp_path / "new" / "cal.yaml", "x: 1\n", "calibrate.output")
    assert list(tmp_path.iterdir()) == []


def test_calibrate_refuses_what_the_machine_cannot_hold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ditmeter.tracer import profile as tracer_profile

    _no_measurement(monkeypatch)
    status, _, err = _run(
        ["calibrate", *TINY, "workload.height=100000", "workload.width=100000", f"output_root={tmp_path}"]
    )
    assert status == 2 and "calibrating needs about" in err and err.count("\n") == 1, err
    monkeypatch.setattr(tracer_profile, "available_bytes", lambda _kind: 1024)
    status, _, err = _run(["calibrate", *TINY, f"output_root={tmp_path}"])
    assert status == 2 and "calibrating needs about" in err and "cpu has 1.00 KiB free" in err, err
    assert list(tmp_path.iterdir()) == []


def test_a_trace_argument_that_is_not_an_int_list_counts_nothing() -> None:
    """``Concrete Inputs`` of a convolution from someone's trace: text, nested lists, floats, huge
    literals gave ValueError or TypeError out of ``ingest``; they count None (no formula applied)."""
    from ditmeter.tracer.trace_flops import op_flops

    dims = [[1, 3, 8, 8], [4, 3, 3, 3], [4], [], [], [], [], [], []]
    good = ["", "", "", "[1, 1]", "[0, 0]", "[1, 1]", "False", "[0, 0]", "1"]
    assert op_flops("aten::convolution", {"Input Dims": dims, "Concrete Inputs": good}) == 2 * 36 * 4 * 27
    for stride in ("['a']", "[[1]]", "[1.5]", "[" * 500 + "]" * 500, "[" + "9" * 5000 + "]", "[0]", "{1}"):
        concrete = [*good[:3], stride, *good[4:]]
        assert op_flops("aten::convolution", {"Input Dims": dims, "Concrete Inputs": concrete}) is None
    for bad_dims in ([["a", 3, 8, 8], *dims[1:]], [[1, 3, 8], *dims[1:]], [7, *dims[1:]]):
        assert op_flops("aten::convolution", {"Input Dims": bad_dims, "Concrete Inputs": good}) is None
    assert op_flops("aten::convolution", {"Input Dims": dims, "Concrete Inputs": "x"}) is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("workload.height=" + "1" * 5000, "workload.height: a number of more than 4,300 digits"),
        ("stages=" + "[" * 5000 + "]" * 5000, "stages: nested 5,000 deep"),
        ("workload.height=" + "1" * 4300, "workload: tensor_flops of whole video would be above 1e300"),
    ],
)
def test_overrides_past_the_parsers_limits_are_refused(override: str, message: str, tmp_path: Path) -> None:
    status, _, err = _run(["report", *TINY, override, f"output_root={tmp_path / 'r'}"])
    assert status == 2 and err.startswith(f"ditmeter: error: {message}") and err.count("\n") == 1, err
    assert not (tmp_path / "r").exists()


def test_run_folders_the_os_cannot_hold_are_refused(tmp_path: Path) -> None:
    """A folder in /proc, a path longer than the OS allows, a dangling symlink where the run folder
    goes: each was an internal error (exit 3)."""
    (tmp_path / "dangling").symlink_to(tmp_path / "nothing")
    long_root = tmp_path.joinpath(*["d" * 200] * 21)
    for args, message in (
        (["output_root=/proc/ditmeter-nope/runs"], "output_root: cannot create a run under /proc/"),
        ([f"output_root={long_root}"], "output_root: "),
        ([f"output_root={tmp_path}", "run_id=dangling"], "run_id: 'dangling' already exists under"),
    ):
        status, _, err = _run(["report", *TINY, *args])
        assert status == 2 and err.startswith(f"ditmeter: error: {message}") and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling"] and (tmp_path / "dangling").is_symlink()


def test_run_files_that_are_no_regular_files_are_refused(tmp_path: Path) -> None:
    """A run folder whose run.json is a FIFO (compare and diff read manifests) and a report.json
    nested 30,000 deep: a clean 2, no hang."""
    run = tmp_path / "one" / "static_analysis" / "wan2_1"
    run.mkdir(parents=True)
    os.mkfifo(tmp_path / "one" / "run.json")
    (run / "report.json").write_text("[" * 30_000 + "]" * 30_000)
    with _within(60):
        status, _, err = _run(["compare", f"output_root={tmp_path}"])
        assert status == 2 and "no traced run" in err, err
        status, _, err = _run(["diff", "one", "one", f"output_root={tmp_path}"])
    assert status == 2 and "report.json is nested too deeply to read" in err and err.count("\n") == 1, err


def test_a_crash_says_where_its_log_went_when_output_root_is_unusable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(*_a: Any) -> int:
        raise RuntimeError("boom")

    monkeypatch.setitem(cli._COMMANDS, "report", crash)
    afile = tmp_path / "afile"
    afile.write_text("x")
    status, _, err = _run(["report", f"output_root={afile / 'runs'}"])
    assert status == 3 and err.count("\n") == 1, err
    assert f"(output_root {afile / 'runs'} is unusable)" in err, err
    log = Path(err.split("traceback in ", 1)[1].split(" (output_root", 1)[0])
    assert log.is_file() and "RuntimeError: boom" in log.read_text()
    log.unlink()


def test_sigterm_cleans_up_like_ctrl_c(tmp_path: Path) -> None:
    """SIGTERM (timeout, a job scheduler) while the run folder is written: exit 143, one line, no
    staging folder left, the run id free again."""
    from ditmeter.reports.run_dir import ensure_free

    root = tmp_path / "runs"
    proc = _writing_run(tmp_path, ["report", *TINY, f"output_root={root}", "run_id=mine"])
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.decode().splitlines() == ["ditmeter: terminated (SIGTERM); nothing was published"]
    assert not root.exists()  # the staging folder and the output_root it made are gone
    ensure_free(root, "mine")


def test_the_real_cli_refuses_special_files_and_parser_limits(odd: dict[str, Path], tmp_path: Path) -> None:
    """A sample of the families above through the installed entry point, in parallel."""
    root = tmp_path / "runs"
    cases = [
        ["report", *TINY, f"calibration={odd['fifo']}"],
        ["ingest", *TINY, "trace=/dev/zero"],
        ["report", *TINY, "workload.height=" + "7" * 5000],
        ["calibrate", *TINY, f"calibrate.output={odd['fifo']}"],
    ]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "ditmeter", *argv, f"output_root={root}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for argv in cases
    ]
    for argv, proc in zip(cases, procs, strict=True):
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2 and err.count("\n") == 1, (argv, err)
        assert err.startswith("ditmeter: error: "), (argv, err)
    assert not root.exists() and odd["fifo"].is_fifo()
