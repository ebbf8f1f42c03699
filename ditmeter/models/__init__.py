"""Model families, one folder each, and the registry keyed by ``model.family``.

A family is a subpackage of ``ditmeter.models`` whose ``__init__`` names its
family object ``FAMILY``; adding one is one new folder plus its configs (see
docs/architecture.md). Families are read when asked for, not on import.
"""

from __future__ import annotations

import importlib
import pkgutil

from ditmeter.errors import ConfigError
from ditmeter.models.family import Family


def families() -> dict[str, Family]:
    """Every family ditmeter knows, by its ``model.family`` name: each folder's ``FAMILY``."""
    out: dict[str, Family] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.ispkg:
            fam: Family = importlib.import_module(f"{__name__}.{info.name}").FAMILY
            if fam.name in out:
                raise ValueError(f"two model families are called {fam.name!r}")
            out[fam.name] = fam
    return out


def family(name: object) -> Family:
    """The family called ``name``; an unknown name is a one-line error naming ``model.family``."""
    known = families()
    if not isinstance(name, str) or name not in known:
        raise ConfigError("model.family", f"{name!r} not allowed; allowed: {', '.join(known)}")
    return known[name]
