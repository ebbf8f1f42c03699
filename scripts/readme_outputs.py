"""The README's output blocks, regenerated from real runs.

A ```` ```text ```` block of the README that follows one or more marker lines

    <!-- output: ditmeter ARGS [| grep REGEX] [| head N] [| gaps] [| quiet] -->

is the output of those commands, run in order in one temporary ``output_root`` (so a later
command reads the runs an earlier one wrote: ``report … run_id=a``, then ``diff a b``): for each
marker, the line ``$ .venv/bin/ditmeter ARGS`` then what the command prints (standard output and
error), filtered:

- ``grep REGEX``: only the lines where ``REGEX`` matches (Python's ``re.search``);
- ``head N``: the first ``N`` of those;
- ``quiet``: none, and no ``…`` (e.g. a ``report`` whose run a later ``diff`` reads).

A line ``…`` follows the kept lines when a line holding text was left out (blank lines and table
rules do not count: ``grep ^(?![ ─]*$)`` drops a table's spacing silently); with ``gaps``, a ``…``
stands in each place where such lines were left out instead (the first rows of a table, then
``…``, then the next table). Each command runs in this process; the ``output_root`` is written as
``tmp/profile-output`` (the default) in the block, and a generated run id as ``…``.

    .venv/bin/python scripts/readme_outputs.py           # exit 1 and name every checked block that differs
    .venv/bin/python scripts/readme_outputs.py --write   # rewrite every marked block that differs
    .venv/bin/python scripts/readme_outputs.py --write --checked   # only those the test compares

Only the blocks whose commands are all in :data:`CHECKED` are compared: their output is the same
on every machine and takes seconds. A block with a ``calibrate``, ``profile`` or ``trace`` prints
this machine's timings (and a trace takes ~15 s), so ``--write`` regenerates it and nothing
compares it. Compared with the volatile parts normalised: the seconds a command took to write its
run folder, and a sweep's seconds and rate (:func:`normalised`).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
import sys
import tempfile
from pathlib import Path

import attrs

README = Path(__file__).resolve().parents[1] / "README.md"
MARKER = re.compile(r"^<!-- output: ditmeter (?P<command>.+?) -->$")
RUN_ID = re.compile(r"\d{8}T\d{6}Z_[A-Za-z0-9._+=-]+?_[0-9a-f]{6}")
#: A line that ``…`` never stands for: blank, or a table's rule.
SPACING = re.compile(r"^[ ─]*$")
#: The subcommands whose output is the same on every run and cheap: the blocks compared.
CHECKED = ("report", "validate", "sweep", "diff", "compare", "plan", "whatif")
#: What changes from one run to the next: the seconds after `wrote … in`, a sweep's seconds and rate.
VOLATILE = (
    (re.compile(r"^(wrote .*) in [\d.,]+ s$", re.MULTILINE), r"\1 in … s"),
    (
        re.compile(r"^([\d,]+ points) in [\d.,]+ s \([\d,]+ points/s\)", re.MULTILINE),
        r"\1 in … s (… points/s)",
    ),
)


@attrs.frozen
class Command:
    """One marker: the command line after ``ditmeter`` and the filters applied to its output."""

    argv: tuple[str, ...]
    grep: str | None = None
    head: int | None = None
    gaps: bool = False
    quiet: bool = False

    @classmethod
    def parse(cls, text: str) -> Command:
        command, *filters = (part.strip() for part in text.split(" | "))
        grep, head, switches = None, None, set()
        for f in filters:
            name, _, value = f.partition(" ")
            if name == "grep":
                grep = value
            elif name == "head":
                head = int(value)
            elif name in ("gaps", "quiet") and not value:
                switches.add(name)
            else:
                raise SystemExit(f"readme_outputs: unknown filter {f!r} in <!-- output: ditmeter {text} -->")
        return cls(tuple(shlex.split(command)), grep, head, "gaps" in switches, "quiet" in switches)

    @property
    def shown(self) -> str:
        return "$ .venv/bin/ditmeter " + " ".join(shlex.quote(a) for a in self.argv)

    def filtered(self, lines: list[str]) -> list[str]:
        """The lines this marker shows, with ``…`` where lines holding text were left out."""
        if self.quiet:
            return []
        out: list[str] = []
        kept, left_out = 0, False
        for line in lines:
            if (self.head is None or kept < self.head) and (self.grep is None or re.search(self.grep, line)):
                if left_out and self.gaps:
                    out.append("…")
                    left_out = False
                out.append(line)
                kept += 1
            elif not SPACING.match(line):
                left_out = True
        return [*out, "…"] if left_out and out[-1:] != ["…"] else out


@attrs.frozen
class Block:
    """One output block: its commands and the line numbers (0-based) of its text between the fences."""

    commands: tuple[Command, ...]
    start: int  # the first line after the opening fence
    end: int  # the closing fence


def blocks(lines: list[str]) -> list[Block]:
    """Every marked output block of the README's ``lines``."""
    found, pending = [], []
    for i, line in enumerate(lines):
        match = MARKER.match(line.strip())
        if match is not None:
            pending.append(Command.parse(match["command"]))
        elif line.strip() == "```text" and pending:
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
            found.append(Block(tuple(pending), i + 1, end))
            pending = []
        elif line.strip():
            pending = []
    return found


def run(command: Command, root: Path) -> list[str]:
    """The command's printed lines with ``output_root=root`` (trailing blanks cut), filtered as its
    marker says, paths and run ids as the README writes them."""
    from ditmeter.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        main([*command.argv, f"output_root={root}"])
    text = RUN_ID.sub("…", out.getvalue().replace(str(root), "tmp/profile-output"))
    return command.filtered([line.rstrip() for line in text.rstrip("\n").splitlines()])


def render(block: Block) -> list[str]:
    """The block's text now: its commands run in order in one fresh ``output_root``."""
    out = []
    with tempfile.TemporaryDirectory(prefix="ditmeter-readme-") as tmp:
        for command in block.commands:
            out += [command.shown, *run(command, Path(tmp))]
    return out


def normalised(text: str) -> str:
    for pattern, replacement in VOLATILE:
        text = pattern.sub(replacement, text)
    return text


def differing(lines: list[str], only: tuple[str, ...] | None = CHECKED) -> list[tuple[Block, list[str]]]:
    """(block, its regenerated lines) of every block whose text differs from a real run now;
    ``only``: the blocks whose commands are all among these subcommands (``None``: every block)."""
    out = []
    for block in blocks(lines):
        if only is not None and any(c.argv[0] not in only for c in block.commands):
            continue
        new = render(block)
        if normalised("\n".join(new)) != normalised("\n".join(lines[block.start : block.end])):
            out.append((block, new))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--write", action="store_true", help="rewrite every marked block that differs")
    p.add_argument(
        "--checked", action="store_true", help="with --write: only the blocks the test compares (no timings)"
    )
    args = p.parse_args()
    only = None if args.write and not args.checked else CHECKED
    changed = differing(README.read_text(encoding="utf-8").splitlines(), only)
    for block, _ in changed:
        print(f"README.md:{block.start}: {block.commands[0].shown} differs")
    if args.write and changed:
        new = {b.commands: text for b, text in changed}
        lines = README.read_text(encoding="utf-8").splitlines()  # again: others may have edited it meanwhile
        for block in reversed(blocks(lines)):  # from the end: earlier line numbers stay valid
            if block.commands in new:
                lines[block.start : block.end] = new[block.commands]
        README.write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(f"rewrote {len(changed)} blocks")
    return 1 if changed and not args.write else 0


if __name__ == "__main__":
    sys.exit(main())
