"""ditmeter: where every FLOP and byte of a video diffusion transformer goes.

Analytic cost rules (``ditmeter.analytic``) checked node by node against the
real model traced on the meta device (``ditmeter.tracer``), joined and gated in
``ditmeter.compare`` and written out by ``ditmeter.reports``. ``ditmeter.analyze``,
``predict``, ``trace``, ``ingest``, ``sweep`` and ``diff`` are the Python API
(:mod:`ditmeter.api`, ``docs/api.md``).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

#: The Python API (:mod:`ditmeter.api`), imported on first use so that ``import ditmeter`` stays light.
__all__ = ["analyze", "diff", "ingest", "predict", "sweep", "trace"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from ditmeter import api

        return getattr(api, name)
    raise AttributeError(f"module 'ditmeter' has no attribute {name!r}")
