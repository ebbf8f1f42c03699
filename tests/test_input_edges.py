"""Edges of the command line: a step count past the bound, whole numbers written as floats (``1e9``),
and values Hydra's lexer cannot read unquoted. Each is one line naming the field and the fix, exit 2,
nothing written."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from ditmeter.cli import main
from ditmeter.config import load
from ditmeter.errors import ConfigError

BASE = ["model=wan2.1-t2v-1.3b", "workload=w001-tiny", "device=h100-sxm"]


def _refused(argv: list[str], out_root: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """The one stderr line of a refused command (exit 2, nothing under ``out_root``)."""
    given = any(a.startswith("output_root=") for a in argv)  # a key is given once
    rc = main([*argv, *([] if given else [f"output_root={out_root}"])])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1, err
    assert not out_root.exists() or not any(out_root.iterdir())
    return err


def _message(*overrides: str, command: str | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load([*BASE, *overrides], command)
    return str(info.value)


def test_steps_past_ten_thousand_are_refused(out_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _refused(["report", *BASE, "workload.num_inference_steps=10001"], out_root, capsys)
    assert err == "ditmeter: error: workload.num_inference_steps: 10001 not allowed; allowed: 1 to 10,000"
    assert _message("workload.num_inference_steps=1000000") == (
        "workload.num_inference_steps: 1000000 not allowed; allowed: 1 to 10,000"
    )
    assert load([*BASE, "workload.num_inference_steps=10000"]).workload.num_inference_steps == 10_000


def test_a_model_default_past_the_bound_names_its_key() -> None:
    """A null step count takes the model's ``default_steps``: the refusal names that key."""
    message = _message("workload.num_inference_steps=null", "model.default_steps=1000000")
    assert message == "model.default_steps: 1000000 not allowed; allowed: 1 to 10,000"


def test_a_sweep_over_steps_past_the_bound_is_refused(
    out_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["sweep", *BASE, "workload.num_inference_steps=[50,1000000]", f"output_root={out_root}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err[-1].startswith(
        "ditmeter: error: workload.num_inference_steps: 1000000 not allowed; allowed: 1 to 10,000"
    )
    assert not out_root.exists() or not any(out_root.iterdir())


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("workload.num_frames=1e9", "workload.num_frames: write it as an integer: 1000000000"),
        ("model.dim=1e6", "model.dim: write it as an integer: 1000000"),
        ("workload.num_inference_steps=1e2", "workload.num_inference_steps: write it as an integer: 100"),
        ("model.patch_size=[1,2.0,2]", "model.patch_size[1]: write it as an integer: 2"),
        # the bound is checked on the number first: one try, not two
        ("workload.num_inference_steps=1e6", "workload.num_inference_steps: 1000000 not allowed; allowed"),
    ],
)
def test_a_whole_number_written_as_a_float_names_the_integer(
    override: str, message: str, out_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _refused(["report", *BASE, override], out_root, capsys).startswith(f"ditmeter: error: {message}")


def test_whole_number_fields_name_the_integer_and_still_refuse_the_rest() -> None:
    """``compare.show`` (a whole number >= 1) like the positive ints; a bool, a fraction, a
    negative and an infinity keep their messages."""
    trace = [
        ("compare.show=1e9", "compare.show: write it as an integer: 1000000000"),
        ("compare.show=true", "compare.show: must be a whole number >= 1, got True"),
    ]
    for override, message in trace:
        assert _message(override, command="trace") == message
    kept = [("true", "True"), ("1.5", "1.5"), ("-1e3", "-1000.0")]
    for written, shown in kept:
        message = f"workload.num_frames: must be a positive integer, got {shown}"
        assert _message(f"workload.num_frames={written}") == message
    # Hydra reads 1e400 as infinity: refused as written, before any field's check says "inf"
    overflow = "workload.num_frames: 1e400 is past a 64-bit float's range (read as infinity)"
    assert _message("workload.num_frames=1e400") == overflow


@pytest.mark.parametrize("name", ["ünïcødé日本", "a b ü", "it's ü"])
def test_a_value_the_lexer_refuses_says_how_to_quote_it(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The suggested shell words are one override that Hydra reads as the very path, and it runs."""
    root = tmp_path / "runs"
    path = root / name
    err = _refused(["report", *BASE, f"output_root={path}"], root, capsys)
    head = f"ditmeter: error: output_root: Hydra cannot read the value {path} unquoted (non-ASCII or special "
    assert err.startswith(f"{head}characters); quote it: ")
    words = shlex.split(err.partition("quote it: ")[2])
    assert len(words) == 1 and words[0] != f"output_root={path}"
    assert main(["report", *BASE, "run_id=q", *words]) == 0
    assert (path / "q" / "run.json").is_file()


def test_the_sweep_says_how_to_quote_too(out_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["sweep", *BASE, "workload.num_inference_steps=[1,2]", f"output_root={out_root}/ü"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err[-1] == (
        f"ditmeter: error: output_root: Hydra cannot read the value {out_root}/ü unquoted (non-ASCII or "
        f"special characters); quote it: \"output_root='{out_root}/ü'\""
    )


def test_a_key_the_lexer_refuses_is_not_told_to_quote(
    out_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Quoting helps a value only: a key (or a list) the lexer refuses keeps the grammar message,
    without Hydra's pointer to its docs."""
    err = _refused(["report", *BASE, "workload.nüm=1"], out_root, capsys)
    assert err.startswith("ditmeter: error: workload.nüm: cannot parse it (LexerNoViableAltException:")
    assert "hydra.cc" not in err and "quote it" not in err
