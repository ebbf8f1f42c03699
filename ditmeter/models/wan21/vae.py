"""The Wan-VAE decode as a tree of costed modules, chunk by chunk as the real module runs it.

``AutoencoderKLWan._decode`` (diffusers, the reference we trace) applies
``post_quant_conv`` to all latents, then calls the decoder once per latent
frame with a causal cache. The first call differs: the temporal upsamplers
(``upsample3d``) skip their ``time_conv``, so the first latent frame decodes
to 1 video frame and every later one to 4 (1 + 4·(T−1) frames in all). Each
leaf's cost is the sum over the calls that actually run.

Module ids are the diffusers paths (``decoder.up_blocks.1.resnets.0.conv1``):
the official code's flat ``upsamples.N`` indices carry no meaning of their own.

The calls also differ in their causal caches (each 3×3×3 conv keeps the last frames of its
input for the next call): the first call pads each conv's input in time and clones its one
frame; the second finds that one frame, joins each one-frame clone to it into two and
concatenates the cache in front of the input before the pad; later calls find two
(:meth:`_Decode.cached`). So the first call, the second and the later calls (all alike) are
costed apart, and each leaf keeps every call's dims (``Leaf.runs``: its eager kernels per call,
``eager_vae.py``). The decoded chunks are concatenated into the output one call at a time
(``output_concat``), which copies the output so far each time.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import attrs

from ditmeter.analytic import rules as _rules  # noqa: F401  (registers the rules)
from ditmeter.analytic.cost import DTYPE_BYTES, Cost
from ditmeter.analytic.registry import apply_rule
from ditmeter.analytic.tree import Composite, Dims, Leaf, shared
from ditmeter.models.wan21.vae_memory import decode_activation_bytes, encode_activation_bytes
from ditmeter.models.wan21.vae_spec import VaeSpec


class _Acc:
    """Leaves of one module tree whose costs accumulate over decoder calls, with each call's dims
    (how many calls had each: the eager kernels of every call, ``Leaf.runs``)."""

    def __init__(self) -> None:
        self.costs: dict[str, Cost] = {}
        self.meta: dict[str, tuple[str, str, Dims]] = {}  # category, rule, the first call's dims
        self.runs: dict[str, dict[Dims, int]] = {}  # every call's dims: how many calls had them

    def add(self, module_id: str, category: str, rule: str, **dims: int | bool) -> None:
        cost = apply_rule(rule, **dims)
        old = self.costs.get(module_id)
        key = tuple(dims.items())
        if old is None:
            self.costs[module_id] = cost
            self.meta[module_id] = (category, rule, key)
            self.runs[module_id] = {}
        else:  # params and weights once; work and traffic per call
            self.costs[module_id] = old.plus_calls(cost)
        runs = self.runs[module_id]
        runs[key] = runs.get(key, 0) + 1

    def absorb(self, other: _Acc, calls: int) -> None:
        """Add ``calls`` runs of ``other``'s leaves (one call's costs) at once: the same as adding
        them call by call, without a loop over calls."""
        for module_id, cost in other.costs.items():
            many = cost.called(calls)
            old = self.costs.get(module_id)
            if old is None:
                self.costs[module_id], self.meta[module_id] = many, other.meta[module_id]
                self.runs[module_id] = {}
            else:
                self.costs[module_id] = old.plus_calls(many)
            runs = self.runs[module_id]
            for key, n in other.runs[module_id].items():
                runs[key] = runs.get(key, 0) + n * calls

    def tree(self) -> Composite:
        """Nest the accumulated leaves by their dotted ids (root "")."""
        root: dict[str, Any] = {}
        for module_id in self.costs:
            node = root
            for part in module_id.split(".")[:-1]:
                node = node.setdefault(part, {})
            node[module_id.split(".")[-1]] = module_id

        def build(name: str, node: dict[str, Any]) -> Composite:
            children: list[Leaf | Composite] = []
            for key, value in node.items():
                if isinstance(value, str):
                    category, rule, dims = self.meta[value]
                    runs = tuple(self.runs[value].items())
                    one = len(runs) == 1 and runs[0][1] == 1  # one call: its dims say it all
                    children.append(Leaf(key, category, rule, self.costs[value], dims, () if one else runs))
                else:
                    children.append(build(key, value))
            return Composite(name, tuple(children))

        return build("", root)


class _Decode:
    """Adds one decoder call's work to the accumulated leaves (``batch`` samples, ``dtype`` bytes)."""

    def __init__(self, spec: VaeSpec, batch: int, index: int = 0) -> None:
        self.spec, self.batch, self.acc = spec, batch, _Acc()
        self.a = DTYPE_BYTES[spec.dtype]
        self.wb = {"act_bytes": self.a, "weight_el_bytes": self.a}
        self.dims = [spec.base_dim * m for m in (spec.dim_mult[-1], *spec.dim_mult[::-1])]
        self.upsample_t = spec.temperal_downsample[::-1]
        #: which call this is: 0 the first, 1 the second, 2 any later one (the causal caches differ)
        self.index = index

    def cached(self) -> int:
        """Frames a causal conv's cache holds at this call: none on the first, the one frame the
        first call left on the second, two (``CACHE_T``) after it (both codes' first call runs one
        frame at every layer, and a later call's one-frame clone is joined to the frame before)."""
        return min(self.index, 2)

    def conv(
        self,
        mid: str,
        cin: int,
        cout: int,
        kvol: int,
        thw: tuple[int, int, int],
        pad: tuple[int, int],
        cache: int | None = None,
        stride: int = 1,
        in_frames: int | None = None,
    ) -> None:
        """A conv with ``thw`` output frames × height × width, inputs padded by (time, space)
        (``stride`` 2: the encoder's spatial downsample, reading the padded full-size frames);
        ``cache`` frames of a causal conv's cache concatenated in front of its ``in_frames`` input
        frames (default: as many as it outputs) before the pad (None: :meth:`cached` for a 3×3×3
        causal conv, none else)."""
        t, h, w = thw
        if cache is None:
            cache = self.cached() if kvol == 27 and pad[0] == 2 else 0
        extra = {"cache_elements": self.batch * cache * h * w} if cache else {}
        if cache and in_frames is not None and in_frames != t:
            extra["input_elements"] = self.batch * in_frames * h * w
        self.acc.add(
            mid,
            "conv",
            "conv",
            outputs=self.batch * t * h * w,
            in_channels=cin,
            out_channels=cout,
            kernel_volume=kvol,
            inputs=self.batch * (t + pad[0]) * (stride * h + pad[1]) * (stride * w + pad[1]),
            bias=True,
            **self.wb,
            **extra,
        )

    def cache(self, mid: str, c: int, h: int, w: int, frames: int = 1, *, rep: bool = False) -> None:
        """A causal conv's cache update before it runs on ``frames`` frames of ``c`` channels: the
        last ``min(2, frames)`` cloned; a one-frame clone joined (``cat``) to the previous call's last
        frame into two, or to zeros where the cache holds the upsampler's ``Rep`` marker (``rep``)."""
        one = self.batch * c * h * w
        kept = min(2, frames)
        joined = 2 * one if kept < 2 and self.index > 0 else 0
        extra = {"joined": joined, "zeros": one if rep else 0} if joined else {}
        self.acc.add(mid, "conv", "layout_copy", elements=kept * one, act_bytes=self.a, cloned=True, **extra)

    def resblock(self, p: str, cin: int, cout: int, thw: tuple[int, int, int]) -> None:
        t, h, w = thw
        n = self.batch * t * h * w
        if cin != cout:
            self.conv(f"{p}.conv_shortcut", cin, cout, 1, thw, (0, 0))
        self.acc.add(f"{p}.norm1", "norm_mod", "rms_norm", rows=n, dim=cin, **self.wb)
        self.acc.add(f"{p}.nonlinearity", "norm_mod", "silu", elements=n * cin, act_bytes=self.a)
        self.cache(f"{p}.feat_cache", cin, h, w, t)
        self.conv(f"{p}.conv1", cin, cout, 27, thw, (2, 2))
        self.acc.add(f"{p}.norm2", "norm_mod", "rms_norm", rows=n, dim=cout, **self.wb)
        self.acc.add(f"{p}.nonlinearity", "norm_mod", "silu", elements=n * cout, act_bytes=self.a)
        self.cache(f"{p}.feat_cache", cout, h, w, t)
        self.conv(f"{p}.conv2", cout, cout, 27, thw, (2, 2))
        self.acc.add(f"{p}.add", "norm_mod", "residual_add", elements=n * cout, act_bytes=self.a)

    def attention(self, p: str, c: int, thw: tuple[int, int, int]) -> None:
        t, h, w = thw
        n = self.batch * t * h * w
        self.acc.add(f"{p}.norm", "norm_mod", "rms_norm", rows=n, dim=c, **self.wb)
        self.conv(f"{p}.to_qkv", c, 3 * c, 1, thw, (0, 0))
        core = {"batch": self.batch * t, "heads": 1, "q_tokens": h * w, "kv_tokens": h * w, "head_dim": c}
        self.acc.add(f"{p}.attn_core", "attn_core", "attention_core", act_bytes=self.a, **core)
        self.conv(f"{p}.proj", c, c, 1, thw, (0, 0))
        self.acc.add(f"{p}.add", "norm_mod", "residual_add", elements=n * c, act_bytes=self.a)

    def upsample(self, i: int, c: int, thw: tuple[int, int, int], first: bool) -> tuple[int, int, int]:
        """Up block ``i``'s resampler; returns the new (frames, height, width)."""
        return self.resample_up(
            f"decoder.up_blocks.{i}.upsamplers.0", c, c // 2, thw, self.upsample_t[i], first
        )

    def resample_up(
        self, u: str, c: int, cout: int, thw: tuple[int, int, int], temporal: bool, first: bool
    ) -> tuple[int, int, int]:
        """The resampler ``u``: time conv (``temporal``, from the second call), nearest 2× up, a
        3×3 conv to ``cout``; returns the new (frames, height, width)."""
        t, h, w = thw
        stacked = temporal and not first
        if stacked:  # the first call skips the time conv, leaving ``Rep`` in its cache
            rep = self.index == 1  # its first run: no cache to prepend
            self.cache(f"{u}.reshuffle", c, h, w, t, rep=rep)
            self.conv(f"{u}.time_conv", c, 2 * c, 3, thw, (2, 0), cache=0 if rep else 2)
            t *= 2
        a = self.a
        # the two time halves interleaved (``torch.stack``); one frame: a view
        flag = {"stacked": True} if stacked else {}
        n = self.batch * t * c * h * w
        self.acc.add(f"{u}.reshuffle", "resample", "layout_copy", elements=n, act_bytes=a, **flag)
        h, w = 2 * h, 2 * w
        self.acc.add(
            f"{u}.resample.0", "resample", "layout_copy", elements=self.batch * t * c * h * w, act_bytes=a
        )
        self.conv(f"{u}.resample.1", c, cout, 9, (t, h, w), (0, 2))
        return t, h, w

    def call(self, hw: tuple[int, int], first: bool) -> tuple[int, int, int]:
        """One decoder call on one latent frame; returns its output (frames, height, width)."""
        d, z = self.dims, self.spec.z_dim
        thw = (1, *hw)
        self.cache("decoder.feat_cache", z, *hw)
        self.conv("decoder.conv_in", z, d[0], 27, thw, (2, 2))
        self.mid("decoder", d[0], thw)
        for i, (cin, cout) in enumerate(itertools.pairwise(d)):
            cin = cin if i == 0 else cin // 2
            for j in range(self.spec.num_res_blocks + 1):
                self.resblock(f"decoder.up_blocks.{i}.resnets.{j}", cin if j == 0 else cout, cout, thw)
            if i < len(self.spec.dim_mult) - 1:
                thw = self.upsample(i, cout, thw, first)
        self.head("decoder", d[-1], self.spec.out_channels, thw)
        return thw

    def mid(self, coder: str, c: int, thw: tuple[int, int, int]) -> None:
        """The mid block: resnet, single-head attention, resnet at ``c`` channels."""
        self.resblock(f"{coder}.mid_block.resnets.0", c, c, thw)
        self.attention(f"{coder}.mid_block.attentions.0", c, thw)
        self.resblock(f"{coder}.mid_block.resnets.1", c, c, thw)

    def head(self, coder: str, c: int, cout: int, thw: tuple[int, int, int]) -> None:
        """RMS norm, SiLU and the causal ``conv_out`` (``c`` → ``cout``) with its cache."""
        n = self.batch * thw[0] * thw[1] * thw[2]
        self.acc.add(f"{coder}.norm_out", "norm_mod", "rms_norm", rows=n, dim=c, **self.wb)
        self.acc.add(f"{coder}.nonlinearity", "norm_mod", "silu", elements=n * c, act_bytes=self.a)
        self.cache(f"{coder}.feat_cache", c, thw[1], thw[2], thw[0])
        self.conv(f"{coder}.conv_out", c, cout, 27, thw, (2, 2))

    def tail(self, coder: str, c: int, cout: int, thw: tuple[int, int, int]) -> tuple[int, int, int]:
        """The mid block and the head; returns ``thw``."""
        self.mid(coder, c, thw)
        self.head(coder, c, cout, thw)
        return thw

    def time_convs(self) -> list[tuple[str, int, int]]:
        """(id, in, out channels) of every time conv, whose weights exist even if no later call runs."""
        return [
            (f"decoder.up_blocks.{i}.upsamplers.0.time_conv", self.dims[i + 1], 2 * self.dims[i + 1])
            for i, temporal in enumerate(self.upsample_t)
            if temporal
        ]

    def finish(self, frames: int, h: int, w: int) -> None:
        """What ``_decode`` runs on the whole output after the decoder calls (Wan2.2: unpatchify)."""


def _placeholders(call: _Decode, convs: list[tuple[str, int, int]]) -> None:
    for mid, cin, cout in convs:
        call.conv(mid, cin, cout, 3, (0, 0, 0), (0, 0))
        call.acc.costs[mid] = attrs.evolve(call.acc.costs[mid], bytes_read=0)  # not run yet: nothing read


def build_vae_decode(
    spec: VaeSpec, batch: int, latent_frames: int, latent_h: int, latent_w: int, call: type[_Decode] = _Decode
) -> Composite:
    """The cost tree of decoding ``batch`` × (z_dim, T, h, w) latents into 1 + 4·(T−1) frames
    (``call``: one decoder call's modules; Wan2.2's residual decoder is another)."""
    key = ("vae_decode", spec, batch, latent_frames, latent_h, latent_w, call)  # a sweep builds it once
    return shared(key, lambda: decode_leaves(spec, batch, latent_frames, latent_h, latent_w, call).acc.tree())


def decode_leaves(
    spec: VaeSpec, batch: int, latent_frames: int, latent_h: int, latent_w: int, call: type[_Decode] = _Decode
) -> _Decode:
    """:func:`build_vae_decode`'s leaves, accumulated and not yet nested, for a caller that adds
    its own around the decode (LightX2V's parallel decode: models/wan21/vae_parallel.py)."""
    dec = call(spec, batch)
    acc, a = dec.acc, dec.a
    dec.conv("post_quant_conv", spec.z_dim, spec.z_dim, 1, (latent_frames, latent_h, latent_w), (0, 0))
    _placeholders(dec, dec.time_convs())
    # The first call, the second, then the T−2 later calls (all alike) costed once and multiplied.
    t0, h, w = dec.call((latent_h, latent_w), first=True)
    t1 = 0
    for index, n in later_calls(latent_frames - 1):
        later = call(spec, batch, index)
        t1, _, _ = later.call((latent_h, latent_w), first=False)
        acc.absorb(later.acc, n)
    frames = t0 + t1 * (latent_frames - 1)
    if latent_frames > 1:  # out = cat([out, chunk]): call c copies the t0 + c·t1 frames so far
        frame = batch * spec.out_channels * h * w
        _concats(acc, "output_concat", t0 * frame, t1 * frame, latent_frames - 1, a)
    dec.finish(frames, h, w)
    acc.add("clamp", "resample", "clamp", elements=batch * frames * spec.out_channels * h * w, act_bytes=a)
    return dec


def _concats(acc: _Acc, mid: str, first: int, step: int, chunks: int, act_bytes: int) -> None:
    """The ``chunks`` concatenations of the calls' outputs (the c-th copies ``first + c·step``
    elements) as one leaf, their sum in closed form (no loop over calls: a workload of 10¹² frames
    is refused by its bounds, not built); the eager recipe lays the copies out call by call."""
    total = chunks * first + step * chunks * (chunks + 1) // 2
    acc.add(mid, "resample", "layout_copy", elements=total, act_bytes=act_bytes, chunks=chunks, chunk=step)


def later_calls(calls: int) -> list[tuple[int, int]]:
    """The ``calls`` after the first as (index, how many): the second (its causal caches hold the
    first call's one frame) and the rest, alike (:meth:`_Decode.cached`)."""
    return [(i, n) for i, n in ((1, min(calls, 1)), (2, calls - 1)) if n > 0]


class _Encode(_Decode):
    """One encoder call (1 video frame first, then 4 per call) added to the accumulated leaves."""

    def encode_time_convs(self) -> list[tuple[str, int, int]]:
        """(id, in, out channels) of every time conv, whose weights exist even if no later call runs."""
        spec, index = self.spec, self.spec.num_res_blocks
        dims = [spec.base_dim * m for m in (1, *spec.dim_mult)]
        return [
            (
                f"encoder.down_blocks.{index + i * (spec.num_res_blocks + 1)}.time_conv",
                dims[i + 1],
                dims[i + 1],
            )
            for i, temporal in enumerate(spec.temperal_downsample)
            if temporal
        ]

    def start(self, frames: int, height: int, width: int) -> tuple[int, int]:
        """What ``_encode`` runs on the whole video first (Wan2.2: patchify); the size it encodes."""
        return height, width

    def downsample(
        self, index: int, c: int, thw: tuple[int, int, int], temporal: bool, first: bool
    ) -> tuple[int, int, int]:
        """``down_blocks.index`` (a resampler): stride-2 spatial conv, then on later calls the
        stride-2 causal time conv over the cached last frame + these frames."""
        return self.resample_down(f"encoder.down_blocks.{index}", c, thw, temporal, first)

    def resample_down(
        self, u: str, c: int, thw: tuple[int, int, int], temporal: bool, first: bool
    ) -> tuple[int, int, int]:
        """The resampler ``u`` (see :meth:`downsample`)."""
        t, h, w = thw
        a = self.a
        self.acc.add(
            f"{u}.reshuffle", "resample", "layout_copy", elements=self.batch * t * c * h * w, act_bytes=a
        )
        padded = self.batch * t * c * (h + 1) * (w + 1)  # ZeroPad2d((0, 1, 0, 1))
        n = self.batch * t * c * h * w
        self.acc.add(f"{u}.resample.0", "resample", "layout_copy", elements=n, act_bytes=a, padded=padded)
        h, w = h // 2, w // 2
        self.conv(f"{u}.resample.1", c, c, 9, (t, h, w), (0, 1), stride=2)
        if temporal:  # the first call clones its frame, later ones their last (no join)
            clone = self.batch * c * h * w
            self.acc.add(f"{u}.reshuffle", "conv", "layout_copy", elements=clone, act_bytes=a, cloned=True)
            if not first:  # the cached last frame concatenated in front of the t frames, pad 0
                t_out = (t + 1 - 3) // 2 + 1
                self.conv(f"{u}.time_conv", c, c, 3, (t_out, h, w), (t + 1 - t_out, 0), cache=1, in_frames=t)
                t = t_out
        return t, h, w

    def encode_call(self, thw: tuple[int, int, int], first: bool) -> tuple[int, int, int]:
        spec, dims = self.spec, [self.spec.base_dim * m for m in (1, *self.spec.dim_mult)]
        self.cache("encoder.feat_cache", 3, thw[1], thw[2], thw[0])
        self.conv("encoder.conv_in", 3, dims[0], 27, thw, (2, 2))
        index = 0
        for i, (cin, cout) in enumerate(itertools.pairwise(dims)):
            for _ in range(spec.num_res_blocks):
                self.resblock(f"encoder.down_blocks.{index}", cin, cout, thw)
                cin, index = cout, index + 1
            if i < len(spec.dim_mult) - 1:
                thw = self.downsample(index, cout, thw, spec.temperal_downsample[i], first)
                index += 1
        return self.tail("encoder", dims[-1], 2 * spec.z_dim, thw)


def build_vae_encode(
    spec: VaeSpec, batch: int, frames: int, height: int, width: int, call: type[_Encode] = _Encode
) -> Composite:
    """The cost tree of encoding ``batch`` videos of ``frames`` (1 + 4k) frames of height × width.

    The encoder runs once on the first frame, then once per 4 frames, with a
    causal cache; the temporal downsamplers skip their time conv on the first
    call. ``quant_conv`` then maps the latents to mean and log-variance. ``call``: one encoder
    call's modules (Wan2.2's residual encoder is another).
    """
    key = ("vae_encode", spec, batch, frames, height, width, call)  # a sweep builds it once
    return shared(key, lambda: _encode_tree(spec, batch, frames, height, width, call))


def _encode_tree(
    spec: VaeSpec, batch: int, frames: int, height: int, width: int, call: type[_Encode]
) -> Composite:
    """:func:`build_vae_encode`'s tree, built."""
    enc = call(spec, batch)
    acc, a = enc.acc, enc.a
    _placeholders(enc, enc.encode_time_convs())
    # The first call (1 frame), the second, then the rest (4 frames each, alike) costed once and multiplied.
    calls = 1 + (frames - 1) // 4
    height, width = enc.start(frames, height, width)
    t0, h, w = enc.encode_call((1, height, width), first=True)
    t1 = 0
    for index, n in later_calls(calls - 1):
        later = call(spec, batch, index)
        t1, _, _ = later.encode_call((4, height, width), first=False)
        acc.absorb(later.acc, n)
    latent = t0 + t1 * (calls - 1)
    if calls > 1:  # out = cat([out, chunk]): call c copies the t0 + c·t1 latent frames so far
        frame = batch * 2 * spec.z_dim * h * w
        _concats(acc, "latent_concat", t0 * frame, t1 * frame, calls - 1, a)
    enc.conv("quant_conv", 2 * spec.z_dim, 2 * spec.z_dim, 1, (latent, h, w), (0, 0))
    elements = batch * spec.z_dim * latent * h * w
    acc.add("posterior", "resample", "gaussian_posterior", elements=elements, act_bytes=a)
    return acc.tree()


@attrs.frozen
class VaeRules:
    """A VAE's analytic rules: its encode and decode cost trees and their peak live bytes, each
    called as ``(spec, batch, frames, height, width)`` (decode: latent frames, height, width)."""

    encode: Callable[[VaeSpec, int, int, int, int], Composite]
    decode: Callable[[VaeSpec, int, int, int, int], Composite]
    encode_bytes: Callable[[VaeSpec, int, int, int, int], int]
    decode_bytes: Callable[[VaeSpec, int, int, int, int], int]


#: The Wan2.1 VAE (also the A14B models' VAE in Wan2.2).
WAN21_VAE = VaeRules(build_vae_encode, build_vae_decode, encode_activation_bytes, decode_activation_bytes)
