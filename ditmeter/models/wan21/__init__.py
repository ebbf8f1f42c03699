"""Wan2.1: everything that knows this family (specs, compositions, names, references, node rules,
pipeline). ``FAMILY`` is the family object the registry finds and the rest of ditmeter receives."""

from ditmeter.models.wan21.family import WAN21

FAMILY = WAN21

__all__ = ["FAMILY", "WAN21"]
