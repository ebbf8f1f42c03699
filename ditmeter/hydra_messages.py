"""Hydra's and OmegaConf's errors as ditmeter's one-line messages: the key, and what is allowed
(a section's keys for an unknown one; a grammar error without its pointer to Hydra's docs; a value
Hydra's lexer refuses with the quoted override that it reads)."""

from __future__ import annotations

import re
import shlex
from typing import Any

from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

#: What Hydra's lexer refuses in an unquoted value: any character outside printable ASCII, and these.
_UNQUOTABLE = re.compile(r"""[^\x20-\x7e]|[!"#&';<>^`~]""")


def _parsed(override: str) -> Any:
    """The value Hydra reads from ``override``, or None where it cannot parse it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return OverridesParser.create().parse_overrides([override])[0].value()
    except HydraException:
        return None


def quoted(override: str) -> str | None:
    """``override`` with its value in Hydra's quotes, as a shell command line takes it, where the
    quotes make Hydra read exactly the text written: a plain value whose only fault is a character
    the lexer refuses (not a list or a sweep, no spaces at its ends, no line breaks). None otherwise."""
    key, _, value = override.partition("=")
    plain = _UNQUOTABLE.sub("a", value)
    if not value or not value.isprintable() or _parsed(f"{key}={plain}") != plain:
        return None
    mark = "'" if "'" not in value or '"' in value else '"'
    escaped = value.replace(mark, "\\" + mark)  # Hydra's escape for its quote inside quotes
    text = f"{key}={mark}{escaped}{mark}"
    if _parsed(text) != value:
        return None
    if "!" in text:  # history expansion inside a shell's double quotes
        return shlex.quote(text)
    return '"' + re.sub(r'(["$`\\])', r"\\\1", text) + '"'


def parse_message(exc: BaseException) -> str:
    """Hydra's override-grammar error on one line, without its pointer to Hydra's docs; for a value
    its lexer refuses unquoted (non-ASCII or special characters), the quoted override to give."""
    override = getattr(exc, "override", None)
    fixed = quoted(override) if isinstance(override, str) and "LexerNoViableAlt" in str(exc) else None
    if isinstance(override, str) and fixed:
        value = override.partition("=")[2]
        return (
            f"Hydra cannot read the value {value} unquoted (non-ASCII or special characters); "
            f"quote it: {fixed}"
        )
    text = " ".join(str(exc).split()).split(" See https://hydra.cc", 1)[0]
    return f"cannot parse it ({text}); give KEY=VALUE, or KEY=[a,b] where a list is taken"


def hydra_message(exc: BaseException, cfg: DictConfig | None = None) -> tuple[str, str]:
    """The key an error names (or ``overrides``) and its message; ``cfg``: the config composed so
    far, whose section lists the keys an unknown one could have been."""
    text = " ".join(str(exc).split())
    cause = exc.__cause__
    if cause is not None:
        text = f"{text} ({' '.join(str(cause).split())})"
    for quote in ("'", '"'):
        marker = f"Could not override {quote}"
        if marker in text:
            key = text.split(marker, 1)[1].split(quote, 1)[0]
            section = key.rpartition(".")[0]
            node = OmegaConf.select(cfg, section) if cfg is not None and section else None
            if isinstance(node, DictConfig):
                return key, f"not a known key; keys of {section}: {', '.join(str(k) for k in node)}"
            return key, "not a known key"
    grammar = (
        "Error parsing override",
        "no viable alternative",
        "mismatched input",
        "extraneous input",
        "LexerNoViableAltException",
    )
    if any(g in text for g in grammar):
        return "overrides", parse_message(exc)
    full_key = getattr(exc, "full_key", None) or getattr(cause, "full_key", None)
    text = text.split(" full_key:", 1)[0]  # OmegaConf appends the key and the node type
    return (str(full_key) if full_key else "overrides"), text


def parses(item: str) -> bool:
    """Whether one override passes Hydra's grammar."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        OverridesParser.create().parse_overrides([item])
    except HydraException:
        return False
    return True
