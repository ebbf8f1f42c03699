"""What one kernel's time is made of, once: the only place a kernel's class, shape and dtype turn
into the terms of its time.

:func:`kernel_terms` reads a kernel (a fused leaf, or one eager launch of it) against a kernel
table and returns device-independent terms::

    compute_s  = numerator / peaks[column] + cuda / cuda_peak
    memory_s   = traffic / bandwidth
    roofline_s = max(tensor / peaks[column] + cuda_all / cuda_peak, moved / bandwidth)

``numerator`` is the tensor FLOPs over the fraction of the peak the kernel's curve gives at its
shape, ``traffic`` its bytes over the share of the bandwidth it reaches; ``peaks`` are a
device's four peaks for the stage (:func:`stage_peaks`: the stage dtype's tensor peak, the GEMM
dtype's, the convolution peak, fp32). ``timing.kernel_time`` evaluates the terms on one device,
``batch_timing`` on many at once: one branching, two evaluations of the same arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import attrs

from ditmeter.analytic.cost import DTYPE_BYTES, Cost
from ditmeter.analytic.device import DeviceSpec
from ditmeter.analytic.eager import KernelCall, eager_calls
from ditmeter.analytic.fabric import FabricTable
from ditmeter.analytic.gemm_formats import (
    curve_dtype,
    gemm_format,
    peak_dtype,
    quantized_linear_calls,
    quantizes,
)
from ditmeter.analytic.host import HostPlan
from ditmeter.analytic.kernels import MAX_FUSED_HEAD_DIM, KernelTable
from ditmeter.analytic.network import NetworkTable
from ditmeter.analytic.tree import ModuleRow

#: Rules whose tensor FLOPs are convolutions (cuDNN): fp32 ones run on TF32 tensor cores.
CONV_RULES = frozenset({"conv", "patch_conv3d"})
#: Kernel class of each rule that is not element-wise.
KERNEL_CLASS = {
    "linear": "gemm",
    "conv": "conv",
    "patch_conv3d": "conv",
    "attention_core": "attention",
    "image_text_attention_core": "attention",
}
#: The columns of :func:`stage_peaks`: the stage dtype's tensor peak, the GEMM dtype's
#: (``gemm_dtype=``), the convolution peak (fp32 convolutions: TF32), fp32 (an eager fp32
#: kernel of a 16-bit stage: CUDA cores), INT8 (SageAttention's quantized attention).
TENSOR, GEMM, CONV, F32, INT8 = 0, 1, 2, 3, 4
#: Attention backends that compute on the INT8 tensor cores (their curves: fractions of that peak).
INT8_BACKENDS = frozenset({"sage"})


@attrs.frozen
class SparseAttention:
    """The DiT's self-attention as a block-sparse kernel (``methods.sparse``): it computes
    ``density`` of the dense FLOPs (averaged over the layers, the dense ones included) at
    ``efficiency`` × the dense kernel's rate per computed block."""

    method: str
    density: float
    efficiency: float
    #: VSA only (set per analysis by ``Analysis.stage_kernels``): the DiT's hidden size (its gate
    #: projection is width x width) and its tiles over the patch grid (:func:`vsa_tiles`)
    width: int = 0
    tiles: int = 0


@attrs.frozen
class TimePlan:
    """How time is predicted: the mode, the kernel table, the attention backend and GEMM dtype
    the user asked for (``attention=``, ``gemm_dtype=``), the execution and the host CPU."""

    mode: str = "predicted"
    kernels: KernelTable | None = None
    attention: str = "auto"
    gemm_dtype: str | None = None
    execution: str = "eager"
    #: the host CPU as a device and its table (``host=``): where ``offload.t5_cpu`` encodes
    host: HostPlan | None = None
    #: the device's achieved collective bandwidth (``configs/fabric/``); None: its datasheet link
    fabric: FabricTable | None = None
    #: the network between the device's nodes (``configs/network/``); None: one node
    network: NetworkTable | None = None
    #: block-sparse self-attention in the denoiser (``methods.sparse``)
    sparse: SparseAttention | None = None
    #: what an fp32 matmul computes in (``time.fp32_matmul``): ``ieee`` (CUDA cores, PyTorch's
    #: default ``matmul.allow_tf32=False``) or ``tf32`` (the TF32 tensor cores: ``allow_tf32=True``,
    #: ``set_float32_matmul_precision("high")``, or NGC containers' ``TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1``)
    fp32_matmul: str = "ieee"

    @property
    def predicted(self) -> bool:
        return self.mode == "predicted" and self.kernels is not None

    def backend(self, impl: str, *, forward: bool) -> str:
        """The attention kernel a stage's code runs. ``impl`` is what the code calls: ``flash``
        (the official ``flash_attention``: FA2, what the Wan2.1 and Wan2.2 ``requirements.txt``
        install; it takes FA3 only where ``flash_attn_interface``, a separate build of
        flash-attention's ``hopper/``, imports: ``attention=fa3``), ``fa2`` (the same function
        pinned to version 2), ``sdpa`` (PyTorch SDPA: its flash kernel for 16-bit) or ``eager``
        (matmul + softmax). ``attention=`` replaces the denoiser's (``forward``)."""
        if impl == "eager":
            return "sdpa_math"
        if forward and self.attention != "auto":
            return self.attention
        have = self.kernels.attention if self.kernels is not None else {}
        wanted = ("fa2",) if impl in ("flash", "fa2") else ("sdpa_flash",)
        # a table without the kernel (a CPU calibration measures SDPA only) costs the one it has
        for backend in (*wanted, "sdpa_flash", *have):
            if backend in have:
                return backend
        return wanted[-1]  # no table: the kernel the code would run


def effective_backend(backend: str, dtype: str, head_dim: int) -> str:
    """fp32 and head dims above 256 take the math path whatever is asked (no fused kernel takes them)."""
    return "sdpa_math" if dtype == "fp32" or head_dim > MAX_FUSED_HEAD_DIM else backend


@attrs.frozen
class StageKernels:
    """What one stage's leaves run: its dtype, its attention implementation, its GEMM dtype, and
    under eager execution whose code's kernels (``flavour``: the pipeline) in which stage."""

    dtype: str
    attention: str = "sdpa_math"  # the backend (TimePlan.backend of the family's implementation)
    gemm_dtype: str | None = None  # None: the stage dtype
    #: eager: ``official`` or ``diffusers``; "" (compiled, or no family recipes): fused leaves
    flavour: str = ""
    stage: str = ""
    sparse: SparseAttention | None = None  # the denoiser's block-sparse self-attention
    fp32_matmul: str = "ieee"  # what an fp32 matmul computes in (TimePlan.fp32_matmul)

    def matmul_dtype(self, dtype: str) -> str:
        """The peak and curve a matmul in ``dtype`` runs at: an fp32 one on TF32 under ``tf32``."""
        return "tf32" if dtype == "fp32" and self.fp32_matmul == "tf32" else dtype

    def is_sparse(self, row: ModuleRow) -> bool:
        """Whether ``row`` is a self-attention kernel this stage runs block-sparse."""
        dims = dict(row.dims)
        return (
            self.sparse is not None
            and kernel_class(row.rule) == "attention"
            and "q_tokens" in dims
            and dims.get("kv_tokens") == dims["q_tokens"]
            and "text_tokens" not in dims
        )

    def computed(self, row: ModuleRow) -> ModuleRow:
        """``row`` as the stage runs it: a block-sparse self-attention computes ``density`` of its
        tensor FLOPs (its bytes as the dense kernel's: K and V are read per kept block)."""
        if not self.is_sparse(row):
            return row
        assert self.sparse is not None
        flops = round(row.cost.tensor_flops * self.sparse.density)
        return attrs.evolve(row, cost=attrs.evolve(row.cost, tensor_flops=flops))

    def calls(self, row: ModuleRow) -> tuple[tuple[ModuleRow, str, int], ...] | None:
        """The eager kernels of leaf ``row``: each as a row the terms read, the dtype it runs in,
        its launch count (None: the leaf is one fused kernel)."""
        half = self.dtype if self.dtype in ("bf16", "fp16") else "bf16"
        vsa = self.sparse is not None and self.sparse.method == "vsa" and self.is_sparse(row)
        # the leaf's id in its stage (as recipes name leaves): a walk may prefix the stage's name
        leaf = row.module_id.removeprefix(self.stage + ".")
        calls = per_call_kernels(self.flavour, self.stage, leaf, row, half) if self.flavour else None
        if calls is None:
            if not vsa:
                return None
            # compiled (or no recipe): the leaf as one fused kernel, VSA's own around it eager still
            # (FastVideo's DistributedAttention_VSA.forward is @torch.compiler.disable)
            assert self.sparse is not None
            own = vsa_calls(dict(row.dims), self.sparse, half)
            return ((row, self.dtype, 1), *((call_row(row, c), _dtype(c), c.count) for c in own))
        fmt = gemm_format(self.gemm_dtype)
        if fmt is not None and quantizes(row.module_id, row.rule) and any(c.kind == "gemm" for c in calls):
            calls = quantized_linear_calls(fmt, calls, dict(row.dims), half)
        if self.attention in INT8_BACKENDS:
            calls = tuple(k for c in calls for k in (*sage_quant(c, half), c))
        if vsa:
            assert self.sparse is not None
            calls = (*calls, *vsa_calls(dict(row.dims), self.sparse, half))
        return tuple((call_row(row, c), _dtype(c), c.count) for c in calls)


def per_call_kernels(
    flavour: str, stage: str, leaf: str, row: ModuleRow, half: str
) -> tuple[KernelCall, ...] | None:
    """The eager kernels of one run of ``row``: its one call's at ``dims``, or where the module is
    called several times per run (``runs``: the VAE's per-chunk calls) each call's at its own dims,
    launched as many times as calls had them (None: no recipe, the leaf stays one fused kernel)."""
    if not row.runs:
        return eager_calls(flavour, stage, leaf, row.rule, dict(row.dims), half)
    out: list[KernelCall] = []
    for dims, n in row.runs:
        calls = eager_calls(flavour, stage, leaf, row.rule, dict(dims), half)
        if calls is None:
            return None
        out.extend(c.launched(n) for c in calls)
    return tuple(out)


#: What SageAttention launches around its kernel (``attention=sage`` under eager execution).
SAGE_QUANT_SOURCE = (
    "thu-ml/SageAttention @ d1a57a5, sageattention/core.py (sageattn_qk_int8_pv_fp8_cuda): K smoothed "
    "(its mean over tokens subtracted), Q and K quantized to INT8 per block, V to FP8 (transposed); the "
    "README's TOPS exclude these ('The TOPS results refer only to the Attention Kernel, excluding the "
    "quantization and smoothing'): three memory-bound passes before the kernel"
)


def sage_quant(call: KernelCall, half: str) -> tuple[KernelCall, ...]:
    """The passes SageAttention runs before an attention kernel ``call`` (:data:`SAGE_QUANT_SOURCE`):
    K smoothed (read, mean subtracted, written), Q and K to INT8, V to FP8, each read in the stage's
    16-bit dtype and written at one byte an element; none before other kernels."""
    if call.kind != "attention" or call.dtype not in ("bf16", "fp16"):
        return ()
    dims = dict(call.dims)
    d, q_tokens, kv_tokens = dims["head_dim"], dims["q_tokens"], dims["kv_tokens"]
    heads = call_batch_heads(dims, call.tensor_flops)
    q, kv, a = heads * q_tokens * d, heads * kv_tokens * d, DTYPE_BYTES[half]
    count = call.count
    return (
        KernelCall("sage_smooth_k", "memory", half, 2 * kv * a, count=count),
        KernelCall("sage_quant_qk_int8", "memory", half, (q + kv) * (a + 1), count=count),
        KernelCall("sage_quant_v_fp8", "memory", half, kv * (a + 1), count=count),
    )


#: Where VSA's own kernels come from (``methods.sparse=vsa``).
VSA_SOURCE = (
    "hao-ai-lab/FastVideo @ 589d32c: fastvideo/models/dits/wanvideo.py WanTransformerBlock_VSA (the gate "
    "projection to_gate_compress, Linear(dim, dim)); fastvideo/attention/layer.py DistributedAttention_VSA."
    "forward, @torch.compiler.disable (q, k, v and the gate concatenated, then tiled by "
    "attention/backends/video_sparse_attn.py: zeros of the padded length, a gather, an index_put; each "
    "transposed contiguous; the output gathered back twice); csrc/attn/vsa/__init__.py video_sparse_attn "
    "(q, k, v mean-pooled per 64-token tile in fp32, the pooled attention in plain matmul + softmax, top-k "
    "of its scores into a block mask, the pooled output repeated over each tile, times the gate, plus the "
    "block-sparse output)"
)
#: VSA's tile over the patch grid (frames, height, width: VSA_TILE_SIZE in FastVideo's backend).
VSA_TILE = (4, 4, 4)
VSA_TILE_TOKENS = math.prod(VSA_TILE)


def vsa_tiles(grid: tuple[int, int, int]) -> int:
    """VSA's tiles over a patch grid, each side rounded up to whole tiles (its padded sequence is
    64 tokens a tile)."""
    return math.prod(-(-side // tile) for side, tile in zip(grid, VSA_TILE, strict=True))


def vsa_calls(dims: Mapping[str, int | bool], sparse: SparseAttention, half: str) -> tuple[KernelCall, ...]:
    """VSA's own kernels around its block-sparse one (:data:`VSA_SOURCE`), for one self-attention
    call of ``dims``, each op FastVideo's code launches: the gate projection (a GEMM, which
    ``torch.compile`` takes with the block), then the attention function that compile leaves out,
    so its ops run eagerly under either execution. The padded sequence is ``sparse.tiles`` × 64
    tokens; the pooled attention runs over the tiles."""
    assert sparse.tiles and sparse.width, "Analysis.stage_kernels sets VSA's grid and width"
    b, h, n, d = (int(dims[k]) for k in ("batch", "heads", "q_tokens", "head_dim"))
    a, f32 = DTYPE_BYTES[half], DTYPE_BYTES["fp32"]
    t, width = sparse.tiles, sparse.width
    e = b * h * n * d  # elements of one of q, k, v, the gate or the output, unpadded
    ep = b * h * t * VSA_TILE_TOKENS * d  # … padded to whole tiles
    pooled, scores = b * h * t * d, b * h * t * t
    gate_flops = 2 * e * width
    qk_flops = 2 * scores * d
    return (
        KernelCall(
            "addmm", "gemm", half, (2 * e + width * width) * a, tensor_flops=gate_flops, call_flops=gate_flops
        ),
        KernelCall("cat", "memory", half, 8 * e * a),  # q, k, v and the gate into one tensor
        KernelCall("zeros", "memory", half, 4 * ep * a),  # the padded qkvg
        KernelCall("index", "memory", half, 8 * e * a),  # qkvg[:, tile_partition_indices]
        KernelCall("index_put_", "memory", half, 8 * e * a),  # x_padded[:, non_pad_index] = …
        KernelCall("clone", "memory", half, 2 * ep * a, count=4),  # .transpose(1, 2).contiguous()
        KernelCall("_to_copy", "memory", "fp32", ep * (a + f32), count=3),  # .float() of q, k, v
        KernelCall("sum", "memory", "fp32", (ep + pooled) * f32, count=3),  # over each tile's 64 tokens
        KernelCall("div", "memory", "fp32", 2 * pooled * f32, count=3),  # / variable_block_sizes
        KernelCall("_to_copy", "memory", "fp32", pooled * (f32 + a), count=3),  # .to(q.dtype)
        KernelCall(
            "bmm", "gemm", half, (2 * pooled + scores) * a, tensor_flops=qk_flops, call_flops=qk_flops
        ),
        KernelCall("div_", "memory", half, 2 * scores * a),  # QK /= sqrt(head_dim)
        KernelCall("_softmax", "memory", half, 2 * scores * a),
        KernelCall(
            "bmm", "gemm", half, (scores + 2 * pooled) * a, tensor_flops=qk_flops, call_flops=qk_flops
        ),
        KernelCall("repeat", "memory", half, (pooled + ep) * a),
        KernelCall("topk", "memory", half, scores * a),
        KernelCall("zeros_like", "memory", half, scores),  # the bool block mask
        KernelCall("scatter_", "memory", half, scores),
        KernelCall("mul", "memory", half, 3 * ep * a),  # output_compress * gate
        KernelCall("add", "memory", half, 3 * ep * a),  # + output_select
        KernelCall("index", "memory", half, 2 * e * a, count=2),  # untile: two gathers
    )


def _dtype(call: KernelCall) -> str:
    return call.dtype if call.dtype in DTYPE_BYTES else "fp32"  # fp64, ints: the CUDA cores


#: The rule a kernel of each kind is timed as (memory-bound kernels: element-wise).
_CALL_RULES = {"gemm": "linear", "attention": "attention_core", "conv": "conv", "memory": None}


def call_row(leaf: ModuleRow, call: KernelCall) -> ModuleRow:
    """One launch of ``call`` as a row of ``leaf``'s id and category."""
    dims: tuple[tuple[str, int | bool], ...] = call.dims
    if call.kind in ("gemm", "conv"):
        dims = (("call_flops", call.call_flops),)
    elif call.kind == "attention":
        dims = (*call.dims, ("batch", 1), ("act_bytes", DTYPE_BYTES.get(call.dtype, 2)))
    cost = Cost(tensor_flops=call.tensor_flops, cuda_flops=call.cuda_flops, bytes_read=call.bytes)
    # attrs.evolve(leaf, rule=..., cost=cost, dims=dims, runs=()), built directly (one per launch)
    return ModuleRow(
        leaf.module_id,
        leaf.parent_id,
        leaf.depth,
        leaf.kind,
        leaf.category,
        _CALL_RULES[call.kind],
        cost,
        leaf.copies,
        dims,
        (),
    )


def conv_call_flops(dims: Mapping[str, int | bool]) -> int:
    """One call's convolution FLOPs from a conv rule's dims (a VAE leaf sums many calls)."""
    outputs = int(dims["outputs"]) if "outputs" in dims else int(dims["batch"]) * int(dims["patches"])
    return 2 * outputs * int(dims["in_channels"]) * int(dims["out_channels"]) * int(dims["kernel_volume"])


def call_flops(dims: Mapping[str, int | bool]) -> int:
    """One GEMM or convolution launch's FLOPs (what the efficiency curves read)."""
    if "call_flops" in dims:
        return int(dims["call_flops"])
    if "in_features" in dims:
        return 2 * int(dims["tokens"]) * int(dims["in_features"]) * int(dims["out_features"])
    return conv_call_flops(dims)


def kernel_class(rule: str | None) -> str:
    return KERNEL_CLASS.get(rule or "", "elementwise")


def row_backend(row: ModuleRow, dtype: str, sk: StageKernels) -> str:
    """The attention kernel an attention row runs under ``sk`` ("" for other rows)."""
    dims = dict(row.dims)
    if kernel_class(row.rule) != "attention" or "head_dim" not in dims:
        return ""
    return effective_backend(sk.attention, dtype, int(dims["head_dim"]))


def peak_column(rule: str | None, dtype: str, stage_dtype: str, backend: str = "") -> int:
    """Which of :func:`stage_peaks` a kernel of ``rule`` running in ``dtype`` computes at (an
    attention kernel: by its ``backend``, :func:`row_backend`)."""
    if backend in INT8_BACKENDS:
        return INT8
    if dtype == "fp32" and stage_dtype != "fp32":
        return F32
    if rule in CONV_RULES:
        return CONV
    return GEMM if kernel_class(rule) == "gemm" else TENSOR


def stage_peaks(device: DeviceSpec, sk: StageKernels) -> tuple[float, float, float, float, float]:
    """``device``'s FLOP/s in each column for a stage of ``sk``'s dtype and GEMM dtype (a device
    without INT8 tensor cores: its stage peak stands in the INT8 column, which no kernel reads there:
    ``attention=sage`` is refused on it)."""
    tensor = device.tensor_flop_per_s(sk.matmul_dtype(sk.dtype))
    return (
        tensor,
        device.tensor_flop_per_s(sk.matmul_dtype(peak_dtype(sk.gemm_dtype or sk.dtype))),
        device.conv_flop_per_s(sk.dtype),
        device.tensor_flop_per_s(sk.matmul_dtype("fp32")),
        device.tensor_flop_per_s("int8") if device.int8_tops is not None else tensor,
    )


@attrs.frozen
class KernelTerms:
    """A kernel's time, device-independent (see the module docstring)."""

    column: int
    numerator: float  # tensor FLOPs / the fraction of the peak the kernel reaches
    cuda: float  # CUDA-core FLOPs timed apart (0 inside a fused attention kernel)
    traffic: float  # bytes / the share of the bandwidth the kernel reaches
    launch_s: float
    overlapped: bool


def _kv(dims: Mapping[str, int | bool]) -> list[int]:
    return [int(dims[k]) for k in ("kv_tokens", "text_tokens", "image_tokens") if k in dims]


def call_batch_heads(dims: Mapping[str, int | bool], tensor_flops: int) -> int:
    """Batch × heads of one fused attention call: a leaf's own dims (its heads count one per ring
    call, ``sp_ring`` of them), else (an eager launch, whose dims fold the heads) its FLOPs over
    4 · q · kv · head dim (0 for a call of no queries or keys)."""
    if "heads" in dims:
        return int(dims["batch"]) * int(dims["heads"]) // max(int(dims.get("sp_ring", 0)), 1)
    per_head = 4 * int(dims["q_tokens"]) * sum(_kv(dims)) * int(dims["head_dim"])
    return tensor_flops // per_head if per_head else 0


def kernel_terms(row: ModuleRow, dtype: str, sk: StageKernels, table: KernelTable) -> KernelTerms:
    """The terms of one kernel (a fused leaf or an eager launch) running in ``dtype`` in a stage of
    ``sk``, under ``table``: the one branching on kernel class, shape and backend."""
    cost, dims = row.cost, dict(row.dims)
    kind = kernel_class(row.rule)
    column = peak_column(row.rule, dtype, sk.dtype, row_backend(row, dtype, sk))
    share = table.bandwidth_fraction(row.rule) if kind == "elementwise" else table.bandwidth.fraction[0]
    moved, cuda = float(cost.moved_bytes), float(cost.cuda_flops)
    numerator = float(cost.tensor_flops)
    if kind == "gemm" and ("in_features" in dims or "call_flops" in dims):
        gemm = sk.matmul_dtype("fp32" if column == F32 else curve_dtype(sk.gemm_dtype or dtype))
        curve = table.eager_gemm_dtype(gemm, sk.dtype) if column == F32 else gemm
        numerator /= table.gemm_fraction(curve, call_flops(dims))
    elif kind == "conv" and ("in_channels" in dims or "call_flops" in dims):
        numerator /= table.conv_fraction(dtype, call_flops(dims))
    elif kind == "attention" and "head_dim" in dims:
        head_dim, kvs = int(dims["head_dim"]), _kv(dims)
        backend = effective_backend(sk.attention, dtype, head_dim)
        if backend == "sdpa_math":
            # QKᵀ and PV as batched GEMMs; the scores are written, read by the softmax, the
            # probabilities written and read by the second matmul: 4 passes over L×L.
            call = 2 * int(dims["q_tokens"]) * sum(kvs) * head_dim  # one head's QKᵀ
            numerator /= table.gemm_fraction(table.eager_gemm_dtype(sk.matmul_dtype(dtype), sk.dtype), call)
            scores = cost.tensor_flops // (4 * head_dim)
            moved += 4 * scores * int(dims.get("act_bytes", DTYPE_BYTES.get(dtype, 4)))
        else:  # the fused kernel: each key/value length (I2V: text and image) at its own fraction;
            # the softmax runs inside it (the published TFLOP/s count the two matmuls only)
            total, q_tokens = sum(kvs), int(dims["q_tokens"])
            sparse = sk.is_sparse(row)
            # each call at its own wave efficiency on the GPU (KernelTable.attention_fraction); a
            # block-sparse kernel: its own rate per kept block
            bh = 0 if sparse else call_batch_heads(dims, cost.tensor_flops)
            numerator = sum(
                cost.tensor_flops * kv / total / table.attention_fraction(backend, head_dim, kv, q_tokens, bh)
                for kv in kvs
            )
            if sparse:
                assert sk.sparse is not None
                numerator /= sk.sparse.efficiency
            cuda = 0.0
    host = table.host
    return KernelTerms(column, numerator, cuda, moved / share, host.per_kernel_s, host.overlapped)
