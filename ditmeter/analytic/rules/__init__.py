"""Cost rules: pure functions of integers returning a :class:`Cost`.

Importing this package registers every rule in :mod:`ditmeter.analytic.registry`.
"""

from ditmeter.analytic.rules import attention, dense, elementwise, embedding

__all__ = ["attention", "dense", "elementwise", "embedding"]
