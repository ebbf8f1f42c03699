"""Hydra's and OmegaConf's errors as ditmeter's one-line messages: the key, and what is allowed
(a section's keys for an unknown one; a grammar error without its pointer to Hydra's docs)."""

from __future__ import annotations

from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf


def parse_message(exc: BaseException) -> str:
    """Hydra's override-grammar error on one line, without its pointer to Hydra's docs."""
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
    grammar = ("Error parsing override", "no viable alternative", "mismatched input", "extraneous input")
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
