"""Reference module paths → analytic module ids: one matcher for every name table.

A :class:`NameTable` is data: ``(pattern, template)`` rows, where the pattern
is a regular expression over a reference's module path (full match) and the
template the analytic id it becomes, with ``\\1``-style groups. The first row
that matches wins; a path no row matches is unknown (``None``), so its nodes
can only be assigned by a node rule, or stay unmatched.
"""

from __future__ import annotations

import re

import attrs


@attrs.frozen
class NameTable:
    """One reference's module paths → the analytic tree's ids (see the module docstring)."""

    rows: tuple[tuple[str, str], ...]
    _compiled: tuple[tuple[re.Pattern[str], str], ...] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        compiled = tuple((re.compile(p + r"\Z"), t) for p, t in self.rows)
        object.__setattr__(self, "_compiled", compiled)

    def canonical_id(self, path: str) -> str | None:
        """The analytic id of reference module ``path``, or None if no row matches."""
        for pattern, template in self._compiled:
            m = pattern.match(path)
            if m:
                return m.expand(template)
        return None

    def __call__(self, path: str) -> str | None:
        return self.canonical_id(path)
