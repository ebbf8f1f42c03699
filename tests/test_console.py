"""What the terminal shows: the width it is given, and tables that never cut a name or a key."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
from rich.console import Console

from ditmeter.cli import main
from ditmeter.reports.table_model import Column, table, to_rich

SWEEP = [
    "sweep",
    "model=wan2.1-t2v-14b",
    "workload=w001-tiny",
    "device=h100-sxm",
    "parallel.ulysses=[1,2]",
    "parallel.dit_fsdp=[false,true]",
]


def _out(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert main(list(argv)) == 0
    return out.getvalue()


def test_a_pipe_gets_the_width_columns_gives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """COLUMNS=200 on a pipe: the sweep's table (about 130 columns) is laid out whole, on one line
    per point, the model name and every swept key in full."""
    monkeypatch.setenv("COLUMNS", "200")
    text = _out(*SWEEP, f"output_root={tmp_path}")
    rows = [line for line in text.splitlines() if "wan2.1-t2v-14b" in line]
    assert len(rows) == 4, text  # one line per point: nothing wrapped
    assert "parallel.ulysses" in text and "parallel.dit_fsdp" in text and "…" not in text
    assert max(len(line) for line in rows) <= 200


def test_a_narrow_terminal_never_cuts_a_name_or_a_key() -> None:
    """At 40 columns a table keeps every identifier whole and every column: the numbers fold."""
    long_name = "wan2.1-flf2v-14b-720p.blocks.*.self_attn.attn_core"
    t = table(
        "t",
        (
            Column("layer", "left", code=True),
            Column("parallel.dit_fsdp", "left", code=True),
            Column("per video"),
        ),
        [(long_name, "true", "1,248.6 s (20.8 min)")],
    )
    out = io.StringIO()
    Console(file=out, width=40, soft_wrap=True).print(to_rich(t))
    text = out.getvalue()
    assert long_name in text and "parallel.dit_fsdp" in text and "1,248.6" in text and "…" not in text
    # a time folds between its two forms, never inside one ("(20.8" on one line, "min)" on the next)
    assert "1,248.6 s" in text and "(20.8 min)" in text


def test_the_share_of_the_peaks_says_what_it_divides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The layers' and categories' "of peak" is roofline_s / predicted_s, whose roofline adds the
    softmax's CUDA-core term to the attention kernel's: it is labelled "of roofline", not as
    the kernel's own fraction of the peak."""
    monkeypatch.setenv("COLUMNS", "200")  # the headers on one line
    text = _out(
        "report", "model=wan2.1-t2v-1.3b", "workload=w001-tiny", "device=h100-sxm", f"output_root={tmp_path}"
    )
    (summary,) = tmp_path.glob("*/static_analysis/*/summary.md")
    for shown in (text, summary.read_text()):
        assert "of peak" not in shown and "of roofline" in shown


@pytest.mark.parametrize(
    ("stages", "said"), [("stages=[vae_decode]", True), ("stages=[dit,vae_decode]", False)]
)
def test_the_denoiser_lines_say_so_when_it_is_not_a_selected_stage(
    stages: str, said: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The per-forward and per-video lines are the DiT's; with only other stages selected the
    output says they are for reference and totals the stages costed under their own name."""
    argv = ["report", "model=wan2.1-t2v-1.3b", "workload=480p-81f", "device=h100-sxm", stages]
    assert main([*argv, f"output_root={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert ("the dit's, for reference" in out) == said
    assert ("selected stages: 275.713 TFLOP (vae_decode ×1 275.713 TFLOP)" in out) == said
    assert ("whole video: " in out) != said
