"""Hand-written analytic cost rules and model compositions (no torch here)."""

from ditmeter.analytic.cost import Cost
from ditmeter.analytic.spec import ModelSpec, Workload
from ditmeter.analytic.tree import Composite, Leaf, ModuleRow, Repeated, walk

__all__ = ["Composite", "Cost", "Leaf", "ModelSpec", "ModuleRow", "Repeated", "Workload", "walk"]
