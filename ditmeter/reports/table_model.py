"""One table model for every table ditmeter shows, rendered by rich on the terminal and as
Markdown in ``summary.md``.

A :class:`Table` holds already-formatted cells (formatting lives in
:mod:`ditmeter.reports.format`); the renderers only lay them out. A column
may be left off the terminal (``terminal=False``) where a log line has no
room for it; a cell may be :class:`Strong` (bold in both); a row may be
flagged ``"fail"`` (red on the terminal).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import attrs
from rich import box
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Table as RichTable
from rich.text import Text


@attrs.frozen
class Strong:
    """A cell to emphasise: ``**text**`` in Markdown, bold on the terminal."""

    text: str


Cell = str | Strong


@attrs.frozen
class Column:
    name: str
    align: str = "right"  # "left" or "right"
    code: bool = False  # identifiers: `backticks` in Markdown
    terminal: bool = True  # shown on the terminal too


@attrs.frozen
class Row:
    cells: tuple[Cell, ...]
    flag: str | None = None  # "fail": red on the terminal


@attrs.frozen
class Table:
    title: str
    columns: tuple[Column, ...]
    rows: tuple[Row, ...]

    def __attrs_post_init__(self) -> None:
        for row in self.rows:
            if len(row.cells) != len(self.columns):
                raise ValueError(
                    f"{self.title!r}: a row has {len(row.cells)} cells for {len(self.columns)} columns"
                )


def table(title: str, columns: Sequence[Column], rows: Sequence[Sequence[Cell] | Row]) -> Table:
    """A :class:`Table` from plain cell sequences (or :class:`Row` objects)."""
    return Table(
        title,
        tuple(columns),
        tuple(r if isinstance(r, Row) else Row(tuple(r)) for r in rows),
    )


def _text(cell: Cell) -> str:
    return cell.text if isinstance(cell, Strong) else cell


def to_markdown(t: Table) -> list[str]:
    """The table as Markdown lines (no title: the section heading or a sentence gives it)."""

    def cell(c: Cell, col: Column) -> str:
        text = _text(c).replace("|", "\\|")
        if col.code and text:
            text = f"`{text}`"
        return f"**{text}**" if isinstance(c, Strong) and text else text

    out = [
        "| " + " | ".join(c.name for c in t.columns) + " |",
        "|" + "|".join("---:" if c.align == "right" else "---" for c in t.columns) + "|",
    ]
    for row in t.rows:
        out.append(
            "| " + " | ".join(cell(c, col) for c, col in zip(row.cells, t.columns, strict=True)) + " |"
        )
    return out


class _WholeTable(RichTable):
    """A rich table that is never narrower than its columns' minimums: on a terminal too narrow for
    them it is laid out wider (the terminal wraps its lines) rather than cutting a cell or dropping
    a column, as rich does."""

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        need = self.__rich_measure__(console, options.update_width(_UNBOUNDED)).minimum
        yield from super().__rich_console__(console, options.update_width(max(need, options.max_width)))


#: The width a table is measured at to find its minimum.
_UNBOUNDED = 100_000
#: Where a value cell may fold: before a parenthesised second form (``1,248.6 s (20.8 min)``).
_PART = re.compile(r" (?=\()")


def _parts(cells: list[str]) -> list[str]:
    return [part for text in cells for part in _PART.split(text)]


def to_rich(t: Table) -> RichTable:
    """The table for the terminal (columns with ``terminal=False`` left off). Identifiers
    (``code`` columns: names, keys) and headers are never cut; other cells fold where they must."""
    shown = [i for i, c in enumerate(t.columns) if c.terminal]
    out = _WholeTable(title=t.title, title_justify="left", box=box.SIMPLE_HEAD)
    for i in shown:
        c = t.columns[i]
        texts = [_text(r.cells[i]) for r in t.rows]
        # a value folds only between its parts ("1,248.6 s" | "(20.8 min)"), never inside one
        whole = [c.name, *texts] if c.code else [*c.name.split(), *_parts(texts)]
        out.add_column(
            c.name,
            justify="left" if c.align == "left" else "right",
            overflow="fold",
            no_wrap=c.code,
            min_width=max((cell_len(x) for x in whole), default=0),
        )
    for row in t.rows:
        cells = [row.cells[i] for i in shown]
        out.add_row(
            *(Text(_text(c), style="bold") if isinstance(c, Strong) else c for c in cells),
            style="red" if row.flag == "fail" else None,
        )
    return out
