"""Kernel efficiency: the fraction of a device's peak each kernel class reaches, by shape.

A kernel table (``configs/kernels/<name>.yaml``, or the ``kernels`` section of
a calibration file written by ``ditmeter calibrate``) states, with a source for
every curve:

* ``attention.<backend>``: the forward attention kernel's tensor FLOP/s as a
  fraction of the dense 16-bit peak, by head dim and by key/value length
  (``fa2``, ``fa3``, ``cudnn``, ``sdpa_flash``; ``sdpa_math`` is not a curve: it
  is two GEMMs and a softmax over a materialised L×L score matrix);
* ``gemm.<dtype>``: a matmul's fraction of the dtype's tensor peak (fp32: the
  CUDA-core peak, PyTorch's default ``allow_tf32=False``) by its FLOPs per call
  (2·M·N·K: small GEMMs fill fewer waves of tiles);
* ``conv.<dtype>``: a convolution's fraction of its peak (fp32: TF32, cuDNN's
  default) by its FLOPs per call;
* ``elementwise.bandwidth_fraction``: the share of the memory bandwidth that
  memory-bound kernels (norms, element-wise work, softmax) and every leaf's
  traffic reach; ``elementwise.rules.<rule>`` (optional, a calibration writes it)
  the share one element-wise rule's leaves reach, as the model's eager code runs
  them (its fused-ideal bytes over the measured time);
* ``host.per_kernel_s``: the launch cost of one kernel. On a GPU launches
  overlap the kernels before them (``overlapped: true``: a leaf takes at least
  its launches); on a CPU each op's dispatch adds to its time.

An attention curve may state the shape its benchmark ran (``bench``: heads and a
batch, fixed or as batch × seqlen, on a board of ``sms`` SMs): a fused kernel whose tiling is known
(:data:`ATTENTION_TILING`) then costs a call by how full its last wave of
thread blocks is against the benchmark's (:meth:`KernelTable.attention_fraction`),
on the device's SMs (``DeviceSpec.sms``).

Curves are points ``(x, fraction)``; between two points the fraction is
linear in log2(x), beyond the ends it is the end point's (no extrapolation).
A fraction is in (0, 1], so a prediction is never below the roofline.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from ditmeter.validate import FieldError, as_tuple, boolean, finite_number, positive_int, positive_int_at_most

#: Attention backends a user may pick (``attention=``); ``auto`` is the pipeline's own.
ATTENTION_BACKENDS = ("fa2", "fa3", "fa4", "cudnn", "sdpa_flash", "sage", "sdpa_math")
#: Curves every table gives (``sdpa_math`` is computed from the GEMM curve).
CURVE_BACKENDS = ATTENTION_BACKENDS[:-1]
#: The largest head dim a fused attention kernel takes (FlashAttention 2/3 and cuDNN: 256).
MAX_FUSED_HEAD_DIM = 256


def _fractions(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    ok = isinstance(value, tuple) and len(value) > 0
    if not ok or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        raise FieldError(attribute.name, f"must be a list of numbers, got {value!r}")
    if not all(math.isfinite(v) and 0 < v <= 1 for v in value):
        raise FieldError(attribute.name, f"every fraction must be in (0, 1], got {list(value)}")


def _points(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    ok = isinstance(value, tuple) and len(value) > 0
    if not ok or not all(isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in value):
        raise FieldError(attribute.name, f"must be a list of positive numbers, got {value!r}")
    if list(value) != sorted(set(value)):
        raise FieldError(attribute.name, f"must increase strictly, got {list(value)}")


def _source(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise FieldError(attribute.name, "every curve needs a source (paper figure, benchmark, measurement)")


#: The most SMs a board or a benchmark's board may state: today's largest have under 200 (the B200
#: 148, the RTX 5090 170); ``DeviceSpec.sms`` and ``bench.sms`` share it.
MAX_SMS = 4096
SM_COUNT = positive_int_at_most(MAX_SMS, "no GPU has that many SMs; the largest have under 200")


@attrs.frozen
class BenchShape:
    """The shape an attention curve's benchmark ran at each of its token counts: ``heads`` and a
    batch, either ``batch`` (fixed) or ``batch_tokens`` / seqlen (FlashAttention's scripts hold
    batch × seqlen at 16K), on a board of ``sms`` SMs (the one measured: its waves, not the
    predicted board's), with its source (the script or the command)."""

    heads: int = attrs.field(validator=positive_int)
    sms: int = attrs.field(validator=SM_COUNT)
    batch: int | None = attrs.field(default=None, validator=attrs.validators.optional(positive_int))
    batch_tokens: int | None = attrs.field(default=None, validator=attrs.validators.optional(positive_int))
    source: str = attrs.field(default="", kw_only=True)

    def __attrs_post_init__(self) -> None:
        if (self.batch is None) == (self.batch_tokens is None):
            raise FieldError("batch", "give exactly one of batch and batch_tokens")
        if not self.source.strip():
            raise FieldError("source", "the benchmark's shape needs a source (its script or command)")

    def batch_heads(self, tokens: float) -> float:
        """Batch × heads at ``tokens`` (the sequence length, queries = keys)."""
        batch = self.batch if self.batch is not None else (self.batch_tokens or 0) / tokens
        return batch * self.heads


@attrs.frozen
class Tiling:
    """How a fused attention kernel spreads a call over the GPU: ``query_tile`` query rows per
    thread block (CTA), ``ctas_per_sm`` resident on one SM (a persistent kernel: one, which takes
    tiles round-robin), from the kernel's code."""

    query_tile: int
    ctas_per_sm: int
    source: str


_FA2_TILING = Tiling(
    128,
    2,
    "Dao-AILab/flash-attention @ 0251105, csrc/flash_attn/src/flash_fwd_launch_template.h: "
    "run_mha_fwd_hdim64 Flash_fwd_kernel_traits<64, 128, 128, 4 warps>, run_mha_fwd_hdim128 "
    "<128, 128, 64, 4 warps> (sm80/sm90; sm86/89 <128, 128, 32, 4>: '128 x 32 (48 KB smem) is the "
    "fastest for non-causal since we get 2 CTAs per SM'); csrc/flash_attn/flash_api.cpp: 'We multiply "
    "number of SMs by 2 to hard-code the fact that we're using 128 threads per block'",
)
#: The tiling of each fused kernel by head dim, where its code states it; a backend or head dim not
#: here (cuDNN, FA4, SageAttention: not read) has no wave term: its curve is read as measured.
ATTENTION_TILING: dict[str, dict[int, Tiling]] = {
    "fa2": {64: _FA2_TILING, 128: _FA2_TILING},
    # PyTorch's SDPA flash backend vendors FlashAttention-2's kernels (PyTorch 2.2 release notes)
    "sdpa_flash": {64: _FA2_TILING, 128: _FA2_TILING},
    "fa3": {
        128: Tiling(
            128,
            1,
            "Dao-AILab/flash-attention @ 0251105, hopper/tile_size.h tile_size_fwd_sm90: head dim <= 128, "
            "16-bit, non-causal: {128, 176} (kBlockM x kBlockN); hopper/flash_fwd_kernel_sm90.h: "
            "MinBlocksPerMultiprocessor = 1; hopper/flash_fwd_launch_template.h: non-split runs the "
            "StaticPersistentTileScheduler (non-causal), whose get_grid_shape returns num_sm CTAs that "
            "take the num_blocks x heads x batch tiles in turn",
        )
    },
}


def wave_efficiency(ctas: float, slots: int) -> float:
    """The share of ``slots`` (SMs × resident CTAs) busy over the waves ``ctas`` thread blocks take:
    a partial last wave costs a whole one (NVIDIA Deep Learning Performance Guide, 'Matrix
    Multiplication Background', wave quantization)."""
    waves = ctas / slots
    return waves / math.ceil(waves) if waves > 0 else 1.0


@attrs.frozen
class Curve:
    """Fractions of a peak at increasing ``x`` (key/value tokens, FLOPs per call), with their source."""

    x: tuple[float, ...] = attrs.field(converter=as_tuple, validator=_points)
    fraction: tuple[float, ...] = attrs.field(converter=as_tuple, validator=_fractions)
    source: str = attrs.field(validator=_source)
    #: an attention curve's benchmark shape (None: not stated, or measured at the model's own shapes)
    bench: BenchShape | None = None

    def __attrs_post_init__(self) -> None:
        if len(self.x) != len(self.fraction):
            raise FieldError("fraction", f"has {len(self.fraction)} values for {len(self.x)} points")

    def at(self, x: float) -> float:
        """The fraction at ``x``: linear in log2(x) between points, the end value beyond them."""
        return log_linear(self.x, self.fraction, x)


def log_linear(xs: Sequence[float], ys: Sequence[float], x: float) -> float:
    """``ys`` at ``x`` over strictly increasing ``xs``: linear in log(x) between points, the end
    value beyond them (no extrapolation)."""
    if x <= xs[0]:
        return ys[0]
    if x >= xs[-1]:
        return ys[-1]
    i = bisect.bisect_right(xs, x)
    t = (math.log2(x) - math.log2(xs[i - 1])) / (math.log2(xs[i]) - math.log2(xs[i - 1]))
    return ys[i - 1] + t * (ys[i] - ys[i - 1])


def _curve(raw: Any, where: str, x_key: str) -> Curve:
    """A curve from its file form ``{<x_key>: [...], fraction: [...], source: ...}``."""
    from ditmeter.errors import ConfigError

    if not isinstance(raw, Mapping):
        raise ConfigError(where, f"must be a section with {x_key}, fraction and source, got {raw!r}")
    keys = (x_key, "fraction", "source", *(("bench",) if x_key == "tokens" else ()))
    unknown = [str(k) for k in raw if k not in keys]
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}", f"not a known key; allowed: {', '.join(keys)}")
    bench = None
    if raw.get("bench") is not None:
        from ditmeter.validate import parse

        bench = parse(BenchShape, raw["bench"], f"{where}.bench")
    try:
        return Curve(raw.get(x_key), raw.get("fraction"), raw.get("source") or "", bench)
    except FieldError as exc:
        raise ConfigError(f"{where}.{x_key if exc.field == 'x' else exc.field}", exc.message) from None


@attrs.frozen
class HostOverhead:
    """The launch (GPU) or dispatch (CPU) cost of one kernel."""

    per_kernel_s: float = attrs.field(validator=finite_number(0, maximum=1e-2, hint=" seconds"))
    overlapped: bool = attrs.field(validator=boolean)
    source: str = attrs.field(validator=_source)


@attrs.frozen
class KernelTable:
    """Fractions of peak per kernel class on one device or architecture (see the module docstring)."""

    name: str
    attention: dict[str, dict[int, Curve]]  # backend → head dim → curve over key/value tokens
    gemm: dict[str, Curve]  # dtype → curve over FLOPs per call
    conv: dict[str, Curve]  # dtype → curve over FLOPs per call
    bandwidth: Curve  # one point: the elementwise fraction of the memory bandwidth
    host: HostOverhead
    #: rule → one point: that element-wise rule's own share of the bandwidth (a calibration's)
    elementwise_rules: dict[str, Curve] = attrs.field(factory=dict)
    #: what stands in for curves the table lacks (a calibration's, reported with the prediction)
    notes: tuple[str, ...] = ()
    #: the SMs of the device the table is read for (``DeviceSpec.sms``; set by the time plan):
    #: None, no wave term
    sms: int | None = None

    def bandwidth_fraction(self, rule: str | None = None) -> float:
        """The share of the bandwidth an element-wise leaf of ``rule`` reaches (the table's
        element-wise share where the rule has none of its own)."""
        return self.elementwise_rules.get(rule or "", self.bandwidth).fraction[0]

    @property
    def backends(self) -> tuple[str, ...]:
        """The attention backends this table can cost (``sdpa_math`` always)."""
        return (*(b for b in CURVE_BACKENDS if b in self.attention), "sdpa_math")

    def attention_fraction(
        self, backend: str, head_dim: int, kv_tokens: int, q_tokens: int = 0, batch_heads: float = 0
    ) -> float:
        """The curve of the nearest head dim (in log2; ties to the larger), at ``kv_tokens``.

        Given one call's ``q_tokens`` and ``batch_heads``, the fraction that call reaches: the
        curve's points each divided by the wave efficiency its benchmark ran at
        (:func:`wave_efficiency` of its thread blocks in the kernel's tiling on the device's SMs),
        interpolated, times the call's own wave efficiency on the table's board (at most 1). As
        measured where the table has no SM
        count (``sms``), the kernel no known tiling (:data:`ATTENTION_TILING`) or the curve no
        benchmark shape (``bench``).

        NB: published curves run Lq = Lkv at a fixed total of tokens; a query-heavy
        cross-attention is read at its key/value length, the loop each query tile runs.
        """
        curves = self.attention[backend]
        curve = curves[min(curves, key=lambda d: (abs(math.log2(d / head_dim)), -d))]
        tiling = ATTENTION_TILING.get(backend, {}).get(head_dim)
        if not batch_heads or self.sms is None or tiling is None or curve.bench is None:
            return curve.at(kv_tokens)
        tile, bench, per_sm = tiling.query_tile, curve.bench, tiling.ctas_per_sm
        full = [
            f / wave_efficiency(bench.batch_heads(x) * math.ceil(x / tile), bench.sms * per_sm)
            for x, f in zip(curve.x, curve.fraction, strict=True)
        ]
        call = wave_efficiency(batch_heads * math.ceil(q_tokens / tile), self.sms * per_sm)
        # a fraction stays at most the peak (a curve near it, read off a partial benchmark wave)
        return min(1.0, log_linear(curve.x, full, kv_tokens) * call)

    def gemm_fraction(self, dtype: str, flops: float) -> float:
        return self._by_dtype(self.gemm, "gemm", dtype).at(flops)

    def eager_gemm_dtype(self, dtype: str, stage_dtype: str) -> str:
        """The curve an eager GEMM in ``dtype`` of a ``stage_dtype`` stage reads: its own, else
        (a calibration that measured the stage's dtype only) the stage's, at ``dtype``'s peak."""
        try:
            self._by_dtype(self.gemm, "gemm", dtype)
        except FieldError:
            return stage_dtype
        return dtype

    def conv_fraction(self, dtype: str, flops: float) -> float:
        return self._by_dtype(self.conv, "conv", dtype).at(flops)

    def _by_dtype(self, curves: dict[str, Curve], kind: str, dtype: str) -> Curve:
        if dtype in curves:
            return curves[dtype]
        if dtype in ("bf16", "fp16") and ({"bf16", "fp16"} & set(curves)):
            return curves["bf16" if "bf16" in curves else "fp16"]
        raise FieldError(f"{kind}.{dtype}", f"the kernel table {self.name} has no {dtype} {kind} curve")

    @property
    def sources(self) -> dict[str, str]:
        """Every curve's source, by its path in the table."""
        out = {f"attention.{b}.{d}": c.source for b, cs in self.attention.items() for d, c in cs.items()}
        out |= {f"gemm.{k}": c.source for k, c in self.gemm.items()}
        out |= {f"conv.{k}": c.source for k, c in self.conv.items()}
        out |= {"elementwise": self.bandwidth.source, "host": self.host.source}
        out |= {f"elementwise.rules.{k}": c.source for k, c in self.elementwise_rules.items()}
        return out

    @classmethod
    def from_mapping(cls, raw: Any, section: str = "kernels") -> KernelTable:
        """Validate a kernel table; errors name the field (``kernels.attention.fa3.128.fraction``)."""
        from ditmeter.errors import ConfigError
        from ditmeter.validate import parse

        if not isinstance(raw, Mapping):
            raise ConfigError(section, f"must be a section of keys, got {raw!r}")
        known = {"name", "description", "devices", "attention", "gemm", "conv", "elementwise", "host"}
        unknown = [str(k) for k in raw if k not in known]
        if unknown:
            raise ConfigError(
                f"{section}.{unknown[0]}", f"not a known key; allowed: {', '.join(sorted(known))}"
            )
        for key in ("attention", "gemm", "conv", "elementwise", "host"):
            if not isinstance(raw.get(key), Mapping):
                raise ConfigError(f"{section}.{key}", "missing (required section)")
        attention: dict[str, dict[int, Curve]] = {}
        for backend, curves in raw["attention"].items():
            where = f"{section}.attention.{backend}"
            if backend not in CURVE_BACKENDS:
                raise ConfigError(where, f"not a curve backend; allowed: {', '.join(CURVE_BACKENDS)}")
            if not isinstance(curves, Mapping) or not curves:
                raise ConfigError(where, "must map head dims (64, 128, …) to curves")
            attention[backend] = {}
            for head_dim, curve in curves.items():
                if isinstance(head_dim, bool) or not isinstance(head_dim, int) or head_dim <= 0:
                    raise ConfigError(f"{where}.{head_dim}", "a head dim must be a positive integer")
                attention[backend][head_dim] = _curve(curve, f"{where}.{head_dim}", "tokens")
        elementwise = raw["elementwise"]
        unknown = [str(k) for k in elementwise if k not in ("bandwidth_fraction", "source", "rules")]
        if unknown:
            raise ConfigError(
                f"{section}.elementwise.{unknown[0]}",
                "not a known key; allowed: bandwidth_fraction, source, rules",
            )
        rules = elementwise.get("rules") or {}
        if not isinstance(rules, Mapping):
            raise ConfigError(f"{section}.elementwise.rules", "must map rule names to {fraction, source}")
        rule_curves = {
            str(rule): _curve(
                {"x": [1], **value} if isinstance(value, Mapping) else value,
                f"{section}.elementwise.rules.{rule}",
                "x",
            )
            for rule, value in rules.items()
        }
        bandwidth = _curve(
            {
                "x": [1],
                "fraction": [elementwise.get("bandwidth_fraction")],
                "source": elementwise.get("source"),
            },
            f"{section}.elementwise",
            "x",
        )
        return cls(
            name=str(raw.get("name", section)),
            attention=attention,
            gemm={str(k): _curve(v, f"{section}.gemm.{k}", "flops") for k, v in raw["gemm"].items()},
            conv={str(k): _curve(v, f"{section}.conv.{k}", "flops") for k, v in raw["conv"].items()},
            bandwidth=bandwidth,
            host=parse(HostOverhead, raw["host"], f"{section}.host"),
            elementwise_rules=rule_curves,
        )

    def as_mapping(self) -> dict[str, Any]:
        """The table in its file's form (``from_mapping`` reads it back)."""

        def curve(c: Curve, x_key: str) -> dict[str, Any]:
            given = {} if c.bench is None else attrs.asdict(c.bench, filter=lambda _, v: v is not None)
            bench = {"bench": given} if given else {}
            return {x_key: list(c.x), "fraction": list(c.fraction), "source": c.source, **bench}

        rules = {
            k: {"fraction": list(c.fraction), "source": c.source} for k, c in self.elementwise_rules.items()
        }

        return {
            "name": self.name,
            "attention": {
                b: {d: curve(c, "tokens") for d, c in cs.items()} for b, cs in self.attention.items()
            },
            "gemm": {k: curve(c, "flops") for k, c in self.gemm.items()},
            "conv": {k: curve(c, "flops") for k, c in self.conv.items()},
            "elementwise": {
                "bandwidth_fraction": self.bandwidth.fraction[0],
                "source": self.bandwidth.source,
                **({"rules": rules} if rules else {}),
            },
            "host": attrs.asdict(self.host),
        }
