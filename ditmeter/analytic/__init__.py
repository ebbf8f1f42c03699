"""Hand-written analytic cost rules and the machinery every model family composes them with
(no torch here): costs, the rule registry, cost trees, geometry, workloads, rooflines, devices."""

from ditmeter.analytic.cost import Cost
from ditmeter.analytic.tree import Composite, Leaf, ModuleRow, Repeated, walk
from ditmeter.analytic.workload import Workload

__all__ = ["Composite", "Cost", "Leaf", "ModuleRow", "Repeated", "Workload", "walk"]
