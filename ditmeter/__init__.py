"""ditmeter: where every FLOP and byte of a video diffusion transformer goes.

Analytic cost rules (``ditmeter.analytic``) checked node by node against the
real model traced on the meta device (``ditmeter.tracer``), joined and gated in
``ditmeter.compare`` and written out by ``ditmeter.reports``.
"""

__version__ = "0.1.0"
