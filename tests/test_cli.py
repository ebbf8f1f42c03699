"""The CLI: bad input of each kind → one-line error naming the field, exit 2, nothing written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from ditmeter.cli import main

BAD_INPUTS = [
    (
        ["model=wan2.1-t2v-99b"],
        "model: unknown 'wan2.1-t2v-99b'; allowed: wan2.1-flf2v-14b-720p, wan2.1-i2v-14b-480p",
    ),
    (["workload=w999"], "workload: unknown 'w999'; allowed:"),
    (["workload.num_frames=0"], "workload.num_frames: must be a positive integer, got 0"),
    (["workload.num_frames=-3"], "workload.num_frames: must be a positive integer"),
    (["workload.height=12.5"], "workload.height: must be a positive integer, got 12.5"),
    (["workload.batch_size=two"], "workload.batch_size: must be a positive integer, got 'two'"),
    (["workload.width=8"], "workload.width: 8 is below one patch (16 pixels)"),
    (["workload.dtype=int4"], "workload.dtype: 'int4' not allowed; allowed: bf16, fp16, fp32"),
    (["pipeline=nearest"], "pipeline: 'nearest' not allowed; allowed: official, diffusers"),
    (["workload.rounding=diffusers"], "workload.rounding: not a known key"),
    (["+workload.rounding=diffusers"], "workload.rounding: replaced by the top-level key pipeline"),
    (["offload.model=maybe"], "offload.model: 'maybe' not allowed; allowed: true, false"),
    (
        ["model=wan2.1-i2v-14b-480p", "+model.image_encoder.dtype=fp32"],
        "model.image_encoder.dtype: is set by the pipeline",
    ),
    (
        ["model=wan2.1-flf2v-14b-720p", "workload.num_frames=33"],
        "workload.num_frames: 33 not allowed: the official FLF2V code",
    ),
    (["workload.guidance_scale=-1"], "workload.guidance_scale: must be a finite number >= 0"),
    (["workload.context_len=1024"], "workload.context_len: 1024 exceeds the model's text_len 512"),
    (["workload.colour=red"], "workload.colour: not a known key"),
    (["~workload.height"], "workload.height: missing (required key)"),
    (["pipeline=diffusers", "workload.height=730"], "workload.height: 730 is not a multiple of 16"),
    (["not-an-override"], "overrides:"),
    (["workload.context_len=1"], "workload.context_len: 1 is below workload.text_len 512"),
    # the datasheet label changed no fit (memory_mib is the capacity): refused, naming the key that does
    (
        ["device=h100-sxm", "device.memory_gb=10"],
        "device.memory_gb: is the datasheet's label and changes no fit; set device.memory_mib",
    ),
    (["model.default_workload=w001-tiny"], "model.default_workload: is read from the model file; choose"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD_INPUTS)
def test_bad_input_is_refused(
    overrides: list[str], message: str, out_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["report", *overrides, f"output_root={out_root}"])
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert not out_root.exists() or not any(out_root.iterdir())


def test_a_models_own_workload_is_said(out_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``report model=wan2.2-ti2v-5b`` alone runs its release video and says so first."""
    assert main(["report", "model=wan2.2-ti2v-5b", f"output_root={out_root}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("note: workload ti2v-720p-121f: wan2.2-ti2v-5b's own default")
    assert lines[1].startswith("wan2.2-ti2v-5b × ti2v-720p-121f: 27,280 tokens")  # 31 × 22 × 40


def test_a_rounded_cache_share_is_said_on_the_terminal(
    out_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """w001-tiny: 1 step × 2 guidance forwards. A 0.95 share is 1.9 forwards: 1 is skipped (the
    first always computes), which the terminal must say; 0.5 is exactly 1 and says nothing."""
    base = ["report", "workload=w001-tiny", "device=h100-sxm", "methods.cache=teacache"]
    assert main([*base, "methods.cache_skip=0.95", f"output_root={out_root}"]) == 0
    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning:")]
    assert said == [
        "warning: methods.cache_skip=0.95 of 2 forwards is 1.9: 1 skipped, whole forwards, "
        "the first always computed"
    ]
    assert main([*base, "methods.cache_skip=0.5", f"output_root={out_root}"]) == 0
    assert "warning:" not in capsys.readouterr().out


def test_compare_in_a_file_says_it_is_not_a_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["compare", f"output_root={afile}"]) == 2
    assert capsys.readouterr().err.startswith(f"ditmeter: error: output_root: {afile} is not a folder")


def test_report_writes_a_complete_run(out_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(
        [
            "report",
            "model=wan2.1-t2v-1.3b",
            "workload=w001-tiny",
            "workload.batch_size=2",
            f"output_root={out_root}",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    (run,) = list(out_root.iterdir())
    folder = run / "static_analysis" / "wan2_1"
    assert sorted(p.name for p in folder.iterdir()) == ["modules.parquet", "report.json", "summary.md"]
    assert "adjusted workload.num_frames: 4 → 1" in out
    assert "wan2.1-t2v-1.3b × w001-tiny[batch_size=2]" in out
    assert "nan" not in out.lower() and "inf " not in out.lower()


def test_run_ids_never_collide(out_root: Path) -> None:
    args = ["report", "workload=w001-tiny", f"output_root={out_root}"]
    assert main(args) == 0 and main(args) == 0
    assert len(list(out_root.iterdir())) == 2
    assert main([*args, "run_id=mine"]) == 0
    assert main([*args, "run_id=mine"]) == 2  # an explicit id that exists is refused
    assert len(list(out_root.iterdir())) == 3


def test_a_crash_mid_write_is_exit_3_with_a_log_and_publishes_nothing(
    out_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import ditmeter.reports.run_files as rep

    def boom(*_: object, **__: object) -> str:
        raise RuntimeError("the summary broke")

    monkeypatch.setattr(rep, "render_summary", boom)
    assert main(["report", "workload=w001-tiny", f"output_root={out_root}"]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(
        "ditmeter: internal error: RuntimeError: the summary broke"
    )
    (log,) = out_root.iterdir()  # the traceback's log, and no run folder, no staging folder
    assert log.name.startswith("ditmeter-error-") and str(log) in err
    assert "Traceback" in log.read_text() and "render_summary" not in err


def test_module_entry_point_and_help() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "ditmeter", "report", "--help"], capture_output=True, text=True, check=True
    )
    assert "workload=720p-81f" in res.stdout and "wan2.1-t2v-14b" in res.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "ditmeter", "report", "workload.height=0"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and bad.stderr.startswith("ditmeter: error: workload.height")


def _help(command: str | None, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as done:
        main([command, "--help"] if command else ["--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


#: Keys ``report`` accepts that its --help left out (issue 24), written here by hand.
REPORT_KEYS = (
    "gemm_dtype",
    "calibration",
    "parallel.gpus",
    "parallel.ulysses",
    "parallel.ring",
    "parallel.cfg",
    "parallel.dit_fsdp",
    "parallel.t5_fsdp",
    "offload.convert_model_dtype",
    "model.num_layers",
    "attention",
    "time.mode",
    "time.execution",
    "host",
)


def test_help_lists_every_key_a_command_accepts(capsys: pytest.CaptureFixture[str]) -> None:
    from ditmeter.config import COMMAND_KEYS, compose_config

    report = _help("report", capsys)
    assert all(re.search(rf"(?<![\w.]){re.escape(k)}\b", report) for k in REPORT_KEYS), [
        k for k in REPORT_KEYS if k not in report
    ]
    for command, keys in COMMAND_KEYS.items():
        text = _help(command, capsys)
        section_keys = compose_config([], None)
        for top in keys:
            value = section_keys.get(top)
            wanted = (
                [f"{top}.{sub}" for sub in value]
                if isinstance(value, dict) and top not in ("model", "workload")
                else [top]
            )
            missing = [k for k in wanted if not re.search(rf"(?<![\w.]){re.escape(k)}\b", text)]
            assert not missing, (command, missing)


def test_help_shows_no_example_the_command_refuses(capsys: pytest.CaptureFixture[str]) -> None:
    """Every KEY=VALUE an example line of a command's --help writes is a key that command accepts
    (or, on a line that runs another command, that command)."""
    from ditmeter.commands.help import EXTRA_KEYS
    from ditmeter.config import COMMAND_KEYS, compose_config

    assert "stages=" not in _help("profile", capsys)
    for command in COMMAND_KEYS:
        epilog = _help(command, capsys).split("show this help message and exit", 1)[1]
        shown, keys = epilog.split("keys (KEY=VALUE", 1)
        listed = [m.partition("=")[0] for m in re.findall(r"^  (\S+=\S+)", keys, re.MULTILINE)]
        extra = {e.partition("=")[0] for e, _ in EXTRA_KEYS.get(command, ())}  # the command line's own
        assert all(k.split(".")[0] in COMMAND_KEYS[command] or k in extra for k in listed)
        checked = 0
        for line in shown.splitlines():
            if line.startswith("record:"):  # Python code, not overrides
                continue
            runs = re.match(r"\s*(?:\w+:)?\s*ditmeter (\w+)", line)  # a line that runs a command
            tokens = re.findall(r"(?<![\w.\-/])([a-z_][a-z0-9_.]*=(?:\[[^\]]*\]|[^\s,;)'\]]+))", line)
            own = {e.partition("=")[0] for e, _ in EXTRA_KEYS.get(runs.group(1) if runs else command, ())}
            tokens = [t for t in tokens if t.partition("=")[0] not in own]  # not config keys
            runner = runs.group(1) if runs else command
            # a placeholder (model=NAME, device_kind=cpu|cuda): the key alone
            held = [t for t in tokens if re.fullmatch(r"[A-Z_]+|\S*\|\S*", t.partition("=")[2])]
            assert all(t.partition("=")[0].split(".")[0] in COMMAND_KEYS[runner] for t in held), (line, held)
            values = [t for t in tokens if t not in held]
            if runner == "sweep":  # a list is an axis of the grid: its first value is one point
                values = [re.sub(r"^(?!stages=)([^=]+)=\[([^,\]]+)[^\]]*\]$", r"\1=\2", t) for t in values]
            if values:  # the line's overrides together (device.efficiency= needs its device=)
                compose_config(values, runner)  # ConfigError: a key the command refuses
            checked += len(tokens)
        assert checked, command


def test_the_top_help_names_both_families(capsys: pytest.CaptureFixture[str]) -> None:
    text = " ".join(_help(None, capsys).split())
    assert "Wan2.1 and Wan2.2" in text


def test_a_device_key_without_a_device_names_the_device_key(capsys: pytest.CaptureFixture[str]) -> None:
    """``device.efficiency=0.5`` alone adjusts no device: refused, naming the key and the devices
    (it was "not a known key", though --help lists it); with ``device=`` it is taken."""
    assert main(["report", "device.efficiency=0.5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ditmeter: error: device.efficiency: needs device=NAME") and "h100-sxm" in err
    assert err.count("\n") == 1
    assert main(["compare", "run_id=t1", "model=wan2.1-t2v-1.3b"]) == 2
    assert "drop model" in capsys.readouterr().err  # run_id is given: not "give run_id"


def test_a_trace_too_large_for_memory_is_bad_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A trace within the size limit that this machine's memory cannot parse is exit 2 naming
    ``trace``, not an internal error (exit 3): the parse raising MemoryError stands in for it."""
    import ditmeter.files as files

    def no_memory(*_: object) -> object:
        raise MemoryError

    trace = tmp_path / "run.json"
    trace.write_text("{}")
    monkeypatch.setattr(files, "_parsed", no_memory)
    args = ["ingest", f"trace={trace}", "model=wan2.1-t2v-1.3b", "workload=w001-tiny", "pipeline=diffusers"]
    assert main([*args, f"output_root={tmp_path / 'runs'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ditmeter: error: trace: {trace} is more than this machine's memory can read")
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "runs").exists()
