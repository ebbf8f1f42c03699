"""Model families, one folder each, and the registry keyed by ``model.family``.

Adding a family is one folder under ``models/`` plus its configs, and one line
in :func:`families` below (see docs/architecture.md).
"""

from __future__ import annotations

from ditmeter.errors import ConfigError
from ditmeter.models.family import Family


def families() -> dict[str, Family]:
    """Every family ditmeter knows, by its ``model.family`` name (registered here, explicitly)."""
    from ditmeter.models.wan21 import WAN21

    return {f.name: f for f in (WAN21,)}


def family(name: object) -> Family:
    """The family called ``name``; an unknown name is a one-line error naming ``model.family``."""
    known = families()
    if not isinstance(name, str) or name not in known:
        raise ConfigError("model.family", f"{name!r} not allowed; allowed: {', '.join(known)}")
    return known[name]
