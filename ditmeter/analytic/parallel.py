"""Context parallelism of one DiT forward, per rank: the FLOPs each rank runs and the collectives
it issues (groundwork for the multi-GPU plans; ``docs/parallel.md``).

A plan of ``ulysses`` × ``ring`` ranks splits the sequence ``degree`` = ulysses × ring ways.
Work after the split is divided exactly; the work every rank repeats (a family states which
leaves: what runs before the split, or over the unsplit context) is whole on every rank::

    tensor FLOPs per rank = (single − repeated) / degree + repeated

The collectives are the family's plan (:class:`CollectiveSpec`, one row per kind and size, with
how many a forward issues); ``ditmeter.compare.parallel`` holds them against a traced run.
"""

from __future__ import annotations

import attrs

from ditmeter.errors import ConfigError


@attrs.frozen
class ContextParallel:
    """``ulysses`` × ``ring`` ranks on the sequence (``parallel.ulysses``, ``parallel.ring``)."""

    ulysses: int = 1
    ring: int = 1

    @property
    def degree(self) -> int:
        return self.ulysses * self.ring

    def check(self, *, tokens: int, heads: int) -> None:
        """Refuse what the parallel code refuses: heads not divisible by ``ulysses`` (each rank
        takes whole heads) and a sequence not divisible by the degree (diffusers' sharder asserts)."""
        for name, value in (("ulysses", self.ulysses), ("ring", self.ring)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"parallel.{name}", f"must be a positive integer, got {value!r}")
        if heads % self.ulysses:
            raise ConfigError("parallel.ulysses", f"{self.ulysses} does not divide the model's {heads} heads")
        if tokens % self.degree:
            raise ConfigError(
                "parallel",
                f"{tokens:,} tokens do not split {self.degree} ways (ulysses × ring); the "
                "sharder needs an exact split",
            )


@attrs.frozen(order=True)
class CollectiveSpec:
    """Collectives of one kind and size on one rank: ``count`` of them per forward."""

    op: str  # the functional collective's name (``all_to_all_single``, ``all_gather_into_tensor``)
    group_size: int
    input_bytes: int
    output_bytes: int
    count: int


def split_flops(*, single: int, repeated: int, degree: int) -> int:
    """Tensor FLOPs one rank runs (see the module docstring); the split part must divide exactly."""
    if not 0 <= repeated <= single or (single - repeated) % degree:
        raise ValueError(f"{single - repeated} split FLOPs do not divide {degree} ways")
    return (single - repeated) // degree + repeated
