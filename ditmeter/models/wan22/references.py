"""Wan2.2's reference modules: Wan2.1's (:mod:`ditmeter.models.wan21.references`), with the VAE
stages' name tables and node rules widened to the Wan2.2 VAE's residual blocks, so one reference
serves both VAEs of the family (the A14B models' Wan2.1 VAE, TI2V-5B's Wan2.2 VAE); the builders
make the VAE the model record describes."""

from __future__ import annotations

import attrs

from ditmeter.models.family import Reference
from ditmeter.models.wan21.references import REFERENCES as WAN21_REFERENCES
from ditmeter.models.wan22.names import VAE22_NAMES
from ditmeter.models.wan22.node_rules import VAE22_DECODE_RULES, VAE22_ENCODE_RULES

REFERENCES: dict[str, Reference] = {
    **WAN21_REFERENCES,
    "vae_encode": attrs.evolve(WAN21_REFERENCES["vae_encode"], names=VAE22_NAMES, rules=VAE22_ENCODE_RULES),
    "vae_decode": attrs.evolve(WAN21_REFERENCES["vae_decode"], names=VAE22_NAMES, rules=VAE22_DECODE_RULES),
}
