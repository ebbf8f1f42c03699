"""The formats a DiT's matmuls run in under ``gemm_dtype=`` (docs/whatif.md): each a quantized
weight and activation layout, the tensor peak its GEMM computes at, and the kernels it adds.

A format stores each weight element in ``element_bits`` with one scale per weight block, and
quantizes each matmul's activation at run time with one scale per group of ``act_group`` elements
along K (0: one per token; -1: one static scale for the whole tensor). Its GEMM reads both operands
at those sizes, scales included, and runs on the device's ``peak`` at the kernel table's
``gemm.<curve>`` curve (its own name but for ``fp8_tensor``, which runs the kernel the ``fp8`` curve
measured). Bytes by hand, for a linear of ``tokens`` × ``k`` → ``n``:

* weights: ``ceil(k·n·bits/8)`` + the weight scales (plus the per-tensor scales);
* the quantize kernel: ``tokens·k`` read in 16-bit, ``ceil(tokens·k·bits/8)`` written, plus the
  activation scales; DeepGEMM's per-block GEMM also transposes those scales (one more small kernel);
  the per-tensor path first fills its one-element input scale and clamps the 16-bit activation in
  place (``tokens·k`` read and written), then casts it.

NB: the bias stays in its own dtype; the GEMM's output in the stage's 16-bit dtype. Only the
transformer blocks' linears are quantized (:func:`quantizes`): LightX2V's Wan FP8 and NVFP4 paths
register the embeddings, the time projection and the head as ``MM_WEIGHT_REGISTER["Default"]``,
unquantized (``lightx2v/models/networks/wan/weights/pre_weights.py``; the head in
``transformer_weights.py``; @ f8aee98).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

import attrs

from ditmeter.analytic.cost import DTYPE_BYTES
from ditmeter.analytic.device import TENSOR_DTYPES
from ditmeter.analytic.eager import EAGER_DTYPE_BYTES, KernelCall

if TYPE_CHECKING:
    from ditmeter.analytic.tree import ModuleRow


@attrs.frozen
class GemmFormat:
    """A quantized GEMM format (see the module docstring)."""

    name: str
    peak: str  # the device's tensor peak the GEMM computes at (``fp8``, ``fp4``)
    element_bits: int
    act_group: int  # activation elements per scale along K (0: one per token)
    act_scale_bytes: int
    weight_block: tuple[int, int]  # (along N, along K) elements per weight scale; K 0: a whole row
    weight_scale_bytes: int
    tensor_scale_bytes: int  # per-tensor fp32 scales a linear stores besides its block scales
    quant_op: str
    #: DeepGEMM's LHS scales transposed to its TMA-aligned layout before the GEMM ("" for none)
    layout_op: str
    source: str
    #: the kernel table's GEMM curve it reads ("": its own name)
    curve: str = ""
    #: an in-place clamp of the 16-bit activation to the format's range before the cast ("": none)
    clamp_op: str = ""

    @property
    def curve_dtype(self) -> str:
        return self.curve or self.name

    def act_bytes(self, tokens: int, k: int) -> int:
        """The quantized activation and its scales."""
        elements = math.ceil(tokens * k * self.element_bits / 8)
        if self.act_group < 0:  # one static scale for the whole tensor
            return elements + self.act_scale_bytes
        groups = 1 if self.act_group == 0 else math.ceil(k / self.act_group)
        return elements + tokens * groups * self.act_scale_bytes

    def stored(self, row: ModuleRow) -> tuple[str, int, int] | None:
        """Leaf ``row``'s weight as this format stores it (``memory.weights_by_dtype``'s ``quantized``):
        the format, one copy's bytes, the elements they hold; None where it stays unquantized."""
        if not quantizes(row.module_id, row.rule):
            return None
        dims = dict(row.dims)
        k, n = int(dims["in_features"]), int(dims["out_features"])
        return self.name, self.weight_bytes(k, n), k * n

    def weight_bytes(self, k: int, n: int) -> int:
        """A ``k`` → ``n`` weight: its elements, its block scales and its per-tensor scales."""
        along_n, along_k = self.weight_block
        # (0, 0): one scale for the whole weight
        scales = (1 if along_n == 0 else math.ceil(n / along_n)) * (
            1 if along_k == 0 else math.ceil(k / along_k)
        )
        elements = math.ceil(k * n * self.element_bits / 8)
        return elements + scales * self.weight_scale_bytes + self.tensor_scale_bytes

    def quantize_calls(self, tokens: int, k: int, half: str) -> tuple[KernelCall, ...]:
        """The kernels before the GEMM: the activation read in ``half``, written quantized with its
        scales; DeepGEMM's scale transpose (its scales read and written) where the format has one."""
        written = self.act_bytes(tokens, k)
        scales = written - math.ceil(tokens * k * self.element_bits / 8)
        read = tokens * k * DTYPE_BYTES[half]
        if self.clamp_op:  # the static scale filled, the activation clamped in place, then cast
            fill = KernelCall("fill", "memory", "fp32", self.act_scale_bytes)
            clamp = KernelCall(self.clamp_op, "memory", half, 2 * read)
            return fill, clamp, KernelCall(self.quant_op, "memory", half, read + written - scales)
        quant = KernelCall(self.quant_op, "memory", half, read + written)
        if not self.layout_op:
            return (quant,)
        return quant, KernelCall(self.layout_op, "memory", "fp32", 2 * scales)


FP8_SOURCE = (
    "ModelTC/LightX2V @ f8aee98, lightx2v/common/ops/mm/mm_weight.py L626-734, L1812-1875 (fp8-sgl, "
    "fp8-vllm): FP8 weights scaled per output channel (one fp32 each), each matmul's activation quantized "
    "per token at run time (sgl_per_token_quant_fp8, vllm scaled_fp8_quant): one kernel before the GEMM"
)
FP8_BLOCK_SOURCE = (
    "DeepSeek-V3 technical report (arXiv 2412.19437) §3.3.2: activations scaled per 1x128 tile, weights "
    "per 128x128 block; as Wan runs it in ModelTC/LightX2V @ f8aee98, lightx2v/common/ops/mm/mm_weight.py "
    "L1755-1809 (fp8-b128-deepgemm: weights FP8 per 128x128 block with fp32 scales, L596-607; the activation "
    "through sgl_per_token_group_quant_fp8 with group 128 and fp32 scales, L661-675; deep_gemm."
    "gemm_fp8_fp8_bf16_nt), whose LHS scales DeepGEMM transposes to its TMA-aligned layout first "
    "(deepseek-ai/DeepGEMM @ 327ec92, deep_gemm/jit_kernels/gemm.py L185-186: 'may launch a kernel')"
)
FP8_TENSOR_SOURCE = (
    "ComfyUI's fp8 linear as kijai/ComfyUI-WanVideoWrapper runs Wan's linears (fp8_optimization.py, "
    "fp8_linear_forward, 'based on ComfyUI's and MinusZoneAI's fp8_linear optimization'; its "
    "quantization 'fp8_e4m3fn_fast'): FP8 weights with one fp32 scale_weight per tensor (ones where the "
    "checkpoint has none), scale_input = torch.ones(()) per call, torch.clamp(input, -448, 448, out=input) "
    "in place, input.to(torch.float8_e4m3fn), then torch._scaled_mm with both per-tensor scales and the "
    "bias in its epilogue; biases assumed stored in the compute dtype (no per-call cast)"
)
INT8_SOURCE = (
    "W8A8 INT8 as LightX2V's int8-sgl path runs Wan's linears (ModelTC/LightX2V @ f8aee98, "
    "lightx2v/common/ops/mm/mm_weight.py L1876-1940, 'W-int8-channel-sym-A-int8-channel-sym-dynamic-Sgl': "
    "INT8 weights scaled per output channel (fp32, load_int8_perchannel_sym L521-529), each activation "
    "quantized per token at run time, one kernel: sglang's per_token_quant_int8 where sglang imports, else "
    "vLLM's scaled_int8_quant (the class's priority at f8aee98; later versions call vLLM's first), then "
    "sgl_kernel.int8_scaled_mm with both scales and the bias)"
)
NVFP4_SOURCE = (
    "NVFP4: E2M1 elements, one FP8 (E4M3) scale per 16 elements along K and an fp32 per-tensor scale "
    "(ModelTC/LightX2V @ f8aee98, lightx2v_kernel/docs/en_US/nvfp4_quantization_basics.md: 'Both weight "
    "and activation use per-group quantization, with a group size of 16, and quantization scales are "
    "stored in fp8(e4m3) format'; NVIDIA cuTile tutorial 11, 'Inference with NVFP4/MXFP8': 16 values in "
    "8 packed FP4 bytes plus one FP8 scale byte, 9 bytes); as Wan runs it in LightX2V's nvfp4 path "
    "(mm_weight.py L966-1249: input_global_scale and alpha stored per linear, scaled_nvfp4_quant with the "
    "static global scale, then cutlass_scaled_nvfp4_mm): one quantize kernel before the GEMM"
)

#: The quantized formats ``gemm_dtype=`` names, by name.
FORMATS: dict[str, GemmFormat] = {
    "fp8": GemmFormat("fp8", "fp8", 8, 0, 4, (1, 0), 4, 0, "per_token_quant_fp8", "", FP8_SOURCE),
    "fp8_block": GemmFormat(
        "fp8_block",
        "fp8",
        8,
        128,
        4,
        (128, 128),
        4,
        0,
        "per_token_group_quant_fp8",
        "scale_transpose",
        FP8_BLOCK_SOURCE,
    ),
    "int8": GemmFormat("int8", "int8", 8, 0, 4, (1, 0), 4, 0, "per_token_quant_int8", "", INT8_SOURCE),
    "fp8_tensor": GemmFormat(
        "fp8_tensor", "fp8", 8, -1, 4, (0, 0), 4, 0, "to_fp8", "", FP8_TENSOR_SOURCE, "fp8", "clamp_"
    ),
    "nvfp4": GemmFormat("nvfp4", "fp4", 4, 16, 1, (1, 16), 1, 8, "scaled_nvfp4_quant", "", NVFP4_SOURCE),
}
#: Every ``gemm_dtype=`` value: the 16-bit dtypes and the quantized formats.
GEMM_DTYPES = (*TENSOR_DTYPES, *(f for f in FORMATS if f not in TENSOR_DTYPES))


def quantizes(module_id: str, rule: str | None) -> bool:
    """Whether a quantized ``gemm_dtype`` stores and runs leaf ``module_id`` (of ``rule``) quantized:
    the transformer blocks' linears only (the module docstring)."""
    return rule == "linear" and ".blocks." in f".{module_id}"


def stored_format(weights_by_dtype: Mapping[str, int]) -> GemmFormat | None:
    """The quantized format a footprint's weights are stored in (None: none)."""
    return next((f for f in map(gemm_format, weights_by_dtype) if f is not None), None)


def gemm_format(gemm_dtype: str | None) -> GemmFormat | None:
    """The quantized format of ``gemm_dtype`` (None: a 16-bit dtype, or none given)."""
    return FORMATS.get(gemm_dtype or "")


def curve_dtype(gemm_dtype: str) -> str:
    """The kernel table's GEMM curve a matmul in ``gemm_dtype`` reads."""
    fmt = gemm_format(gemm_dtype)
    return fmt.curve_dtype if fmt is not None else gemm_dtype


def peak_dtype(gemm_dtype: str) -> str:
    """The device peak a GEMM in ``gemm_dtype`` computes at."""
    fmt = gemm_format(gemm_dtype)
    return fmt.peak if fmt is not None else gemm_dtype


def quantized_linear_calls(
    fmt: GemmFormat, calls: tuple[KernelCall, ...], dims: Mapping[str, int | bool], half: str
) -> tuple[KernelCall, ...]:
    """A linear's eager kernels in ``fmt``: its activation's quantize kernels first; no per-call cast
    of the weight (the recipe's ``operand="weight"``: the checkpoint stores it quantized); the GEMM
    reads both operands quantized, scales included, instead of at its own width."""
    tokens, k, n = int(dims["tokens"]), int(dims["in_features"]), int(dims["out_features"])

    def gemm(c: KernelCall) -> KernelCall:
        own = (tokens * k + k * n) * EAGER_DTYPE_BYTES[c.dtype]
        return attrs.evolve(c, bytes=c.bytes - own + fmt.act_bytes(tokens, k) + fmt.weight_bytes(k, n))

    kept = tuple(gemm(c) if c.kind == "gemm" else c for c in calls if c.operand != "weight")
    return (*fmt.quantize_calls(tokens, k, half), *kept)
