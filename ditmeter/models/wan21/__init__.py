"""Wan2.1: everything that knows this family (specs, compositions, names, references, node rules,
pipeline). :data:`WAN21` is the family object the rest of ditmeter receives."""

from ditmeter.models.wan21.family import WAN21

__all__ = ["WAN21"]
