"""Wan2.2: the two-expert A14B models (docs/wan22.md). ``FAMILY`` is the family object the
registry finds; the Wan2.1 machinery (cost trees, names, references, memory rules) is reused
where the code is the same, and only what Wan2.2 changes lives here."""

from ditmeter.models.wan22.family import WAN22

FAMILY = WAN22

__all__ = ["FAMILY", "WAN22"]
