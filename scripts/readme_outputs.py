"""The README's output blocks, regenerated from real runs.

A ```` ```text ```` block of the README that follows one or more marker lines

    <!-- output: ditmeter ARGS [| grep REGEX] [| head N] -->

is the output of those commands: for each marker, the line ``$ .venv/bin/ditmeter ARGS`` then what
the command prints (standard output and error), only the lines matching ``REGEX`` and the first
``N`` of them where given, and ``…`` where lines were left out. Each command runs in this process
with ``output_root`` a temporary folder, written as ``tmp/profile-output`` (the default) in the
block, and a fresh run id as ``…``.

    .venv/bin/python scripts/readme_outputs.py           # exit 1 and name every block that differs
    .venv/bin/python scripts/readme_outputs.py --write   # rewrite the blocks

Compared (not written) with the volatile parts normalised: the seconds a command took to write
its run folder, and a sweep's seconds and rate (:func:`normalised`).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import attrs

README = Path(__file__).resolve().parents[1] / "README.md"
MARKER = re.compile(r"^<!-- output: ditmeter (?P<command>.+?) -->$")
RUN_ID = re.compile(r"\d{8}T\d{6}Z_[A-Za-z0-9._+=-]+?_[0-9a-f]{6}")
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

    @classmethod
    def parse(cls, text: str) -> Command:
        command, *filters = (part.strip() for part in text.split(" | "))
        grep = head = None
        for f in filters:
            name, _, value = f.partition(" ")
            if name == "grep":
                grep = value
            elif name == "head":
                head = int(value)
            else:
                raise SystemExit(f"readme_outputs: unknown filter {f!r} in <!-- output: ditmeter {text} -->")
        return cls(tuple(shlex.split(command)), grep, head)

    @property
    def shown(self) -> str:
        return "$ .venv/bin/ditmeter " + " ".join(shlex.quote(a) for a in self.argv)


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


@contextlib.contextmanager
def _output_root() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="ditmeter-readme-") as tmp:
        yield Path(tmp)


def run(command: Command) -> list[str]:
    """The command's printed lines (trailing blanks cut), filtered as its marker says, paths and
    run ids as the README writes them."""
    from ditmeter.cli import main

    with _output_root() as root:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            main([*command.argv, f"output_root={root}"])
        text = out.getvalue().replace(str(root), "tmp/profile-output")
    text = RUN_ID.sub("…", text)
    lines = [line.rstrip() for line in text.rstrip("\n").splitlines()]
    kept = [line for line in lines if command.grep is None or re.search(command.grep, line)]
    if command.head is not None:
        kept = kept[: command.head]
    return [*kept, "…"] if len(kept) < len(lines) and kept[-1:] != ["…"] else kept


def render(block: Block) -> list[str]:
    out = []
    for command in block.commands:
        out += [command.shown, *run(command)]
    return out


def normalised(text: str) -> str:
    for pattern, replacement in VOLATILE:
        text = pattern.sub(replacement, text)
    return text


def differing(lines: list[str], only: tuple[str, ...] | None = None) -> list[tuple[Block, list[str]]]:
    """(block, its regenerated lines) of every block whose text differs from a real run now;
    ``only``: the blocks whose commands are all among these subcommands."""
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
    p.add_argument("--write", action="store_true", help="rewrite the blocks that differ")
    args = p.parse_args()
    changed = differing(README.read_text(encoding="utf-8").splitlines())
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
