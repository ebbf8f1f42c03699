"""Matmul-class rules: linear layers and the non-overlapping patch convolution."""

from __future__ import annotations

from ditmeter.analytic.cost import Cost
from ditmeter.analytic.registry import register_rule


@register_rule("linear")
def linear(
    *,
    tokens: int,
    in_features: int,
    out_features: int,
    bias: bool,
    act_bytes: int,
    weight_el_bytes: int,
) -> Cost:
    """``y = x Wᵀ + b`` over ``tokens`` rows.

    tensor FLOPs = 2·tokens·in·out (bias excluded, as in FlopCounterMode's addmm);
    the bias add is ``tokens·out`` CUDA-core FLOPs.
    """
    params = in_features * out_features + (out_features if bias else 0)
    weight_bytes = params * weight_el_bytes
    out_bytes = tokens * out_features * act_bytes
    return Cost(
        tensor_flops=2 * tokens * in_features * out_features,
        cuda_flops=tokens * out_features if bias else 0,
        elements=tokens * out_features if bias else 0,
        params=params,
        weight_bytes=weight_bytes,
        activation_bytes=out_bytes,
        bytes_read=tokens * in_features * act_bytes + weight_bytes,
        bytes_written=out_bytes,
    )


@register_rule("patch_conv3d")
def patch_conv3d(
    *,
    batch: int,
    in_channels: int,
    out_channels: int,
    kernel_volume: int,
    patches: int,
    bias: bool,
    act_bytes: int,
    weight_el_bytes: int,
) -> Cost:
    """Conv with stride = kernel (patchify, 3D or 2D): a linear over flattened patches.

    tensor FLOPs = 2·batch·patches·out·(in·kernel volume), as FlopCounterMode's
    ``conv_flop_count`` (bias excluded); the input read is only the covered voxels.
    """
    fan_in = in_channels * kernel_volume
    params = out_channels * fan_in + (out_channels if bias else 0)
    weight_bytes = params * weight_el_bytes
    out_bytes = batch * patches * out_channels * act_bytes
    return Cost(
        tensor_flops=2 * batch * patches * out_channels * fan_in,
        cuda_flops=batch * patches * out_channels if bias else 0,
        elements=batch * patches * out_channels if bias else 0,
        params=params,
        weight_bytes=weight_bytes,
        activation_bytes=out_bytes,
        bytes_read=batch * patches * fan_in * act_bytes + weight_bytes,
        bytes_written=out_bytes,
    )


@register_rule("conv")
def conv(
    *,
    outputs: int,
    in_channels: int,
    out_channels: int,
    kernel_volume: int,
    inputs: int,
    bias: bool,
    act_bytes: int,
    weight_el_bytes: int,
    cache_elements: int = 0,
    input_elements: int = 0,
) -> Cost:
    """A convolution producing ``outputs`` positions (batch·frames·height·width) of ``out_channels``.

    tensor FLOPs = 2·outputs·out·in·kernel volume (FlopCounterMode's ``conv_flop_count``,
    bias excluded). ``inputs`` positions of ``in_channels`` are read once (padding and
    the causal cache frames included) and the weights once. ``cache_elements``: the positions of a
    causal cache the eager code concatenates in front of its ``input_elements`` unpadded input
    positions (default: ``outputs``; both for its kernels only).
    """
    params = out_channels * in_channels * kernel_volume + (out_channels if bias else 0)
    out_bytes = outputs * out_channels * act_bytes
    return Cost(
        tensor_flops=2 * outputs * out_channels * in_channels * kernel_volume,
        cuda_flops=outputs * out_channels if bias else 0,
        elements=outputs * out_channels if bias else 0,
        params=params,
        weight_bytes=params * weight_el_bytes,
        activation_bytes=out_bytes,
        bytes_read=inputs * in_channels * act_bytes + params * weight_el_bytes,
        bytes_written=out_bytes,
    )
