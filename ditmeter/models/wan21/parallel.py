"""Wan2.1 on many GPUs (``parallel.*``): what one rank runs, sends and holds, per pipeline.

diffusers (``WanTransformer3DModel._cp_plan`` with ``ContextParallelConfig``), read from
diffusers 0.42 and checked by running it under the fake process group
(``tests/test_parallel_trace.py``, ``docs/parallel.md``): the sequence splits at the first
block's input (it must divide exactly) and the output gathers after ``proj_out``; self-attention
exchanges q, k, v and its output with all-to-alls in the Ulysses group and all-gathers the
concatenated K and V in the ring group before attending (nothing hides it); cross-attention,
the FFN and RoPE are local.

official (``generate.py --ulysses_size U --ring_size R``: xDiT's USP,
``wan/distributed/xdit_context_parallel.py``): the patch embedding runs whole, the sequence is
padded to a multiple of U × R and split (the padded tokens are computed); the same four
all-to-alls per block; the ring passes K and V chunks peer to peer while the previous chunk's
attention runs (ring attention); one all-gather of the head's output. ``--dit_fsdp`` /
``--t5_fsdp``: FSDP1 FULL_SHARD, one unit per block, bf16 gathers of each unit's flat
parameter (padded to a multiple of the GPU count) every forward, the DiT then running on those
bf16 weights (:data:`FSDP_RUN_DTYPE`: no per-call weight casts); with more than one GPU the
model is not offloaded (``offload_model`` defaults to False); T5 encodes on every rank; only
rank 0 decodes (the others wait), unless ``methods.vae_parallel`` spreads the decode as LightX2V
does (every rank its tile, the pieces all-gathered: ``models/wan21/vae_parallel.py``).

``parallel.cfg`` 2 (xDiT's ``--use_cfg_parallel``; neither generate.py nor diffusers 0.42 split
guidance): the conditional and unconditional forwards of a step run on two halves of the
GPUs, which exchange their predictions once per step.
"""

from __future__ import annotations

import math

import attrs

from ditmeter.analytic.analysis import Analysis, Stage
from ditmeter.analytic.cost import DTYPE_BYTES
from ditmeter.analytic.gemm_formats import stored_format
from ditmeter.analytic.memory import Footprint, Offload, Timeline, weights_by_dtype
from ditmeter.analytic.parallel import (
    CollectiveSpec,
    Comm,
    ContextParallel,
    ParallelPlan,
    RankPlan,
    fsdp_weight_bytes,
    split_flops,
)
from ditmeter.analytic.tree import Composite, Repeated
from ditmeter.errors import ConfigError
from ditmeter.models.wan21 import placement, vae_parallel
from ditmeter.models.wan21.dit import SequenceShard, build_dit
from ditmeter.models.wan21.memory import dit_footprint, stage_activation_bytes
from ditmeter.models.wan21.pipeline import available_stages, component_weights
from ditmeter.models.wan21.spec import WanModelSpec
from ditmeter.models.wan21.umt5 import build_umt5

#: The dtype the official DiT's parameters have while an FSDP rank runs them: ``shard_model``
#: wraps the model with ``MixedPrecision(param_dtype=torch.bfloat16, reduce_dtype=torch.float32,
#: buffer_dtype=torch.float32)`` (Wan2.1 and Wan2.2 ``wan/distributed/fsdp.py``; wan22 2.2.11), so
#: each unit's flat parameter is gathered in bf16 and its modules compute with bf16 weights: the
#: Linears under ``autocast(bf16)`` launch no per-call weight cast, the fp32 autocast regions cast
#: them up. The rank still stores its fp32 shard (the memory timeline keeps the stored dtype).
FSDP_RUN_DTYPE = "bf16"

#: Leaves every rank runs whole: before the split (the condition embedder, the image embedding
#: and the patch embedding) and over the unsplit context (each block's cross-attention K and V
#: projections).
REPEATED_PREFIXES = (
    "dit.patch_embedding",
    "dit.time_embedding",
    "dit.time_projection",
    "dit.text_embedding",
    "dit.img_emb",  # image models: the CLIP tokens' MLP
)
REPEATED_SUFFIXES = ("cross_attn.k", "cross_attn.v", "cross_attn.k_img", "cross_attn.v_img")


def repeated_flops(analysis: Analysis) -> int:
    """Tensor FLOPs of the leaves every rank repeats, one forward."""
    return sum(
        r.cost.tensor_flops
        for r in analysis.forward.rows()
        if r.kind == "leaf"
        and (r.module_id.startswith(REPEATED_PREFIXES) or r.module_id.endswith(REPEATED_SUFFIXES))
    )


def reference_collectives(analysis: Analysis, cp: ContextParallel) -> list[CollectiveSpec]:
    """The collectives one forward of the diffusers DiT issues on a rank under ``cp`` (the traced
    reference's plan, whatever ``pipeline=`` says: it does not pad, and its ring all-gathers)."""
    m, g = analysis.model, analysis.geometry
    cp.check(tokens=g.tokens, heads=m.num_heads)
    return sorted(c.spec for c in sequence_comms(analysis, cp, g.tokens, ring_op="all_gather_into_tensor"))


def context_parallel_forward(analysis: Analysis, cp: ContextParallel) -> tuple[int, list[CollectiveSpec]]:
    """(tensor FLOPs, collectives) of one diffusers DiT forward on one rank under ``cp``, from the
    single-GPU ``analysis``."""
    collectives = reference_collectives(analysis, cp)
    flops = split_flops(
        single=analysis.per_forward.tensor_flops, repeated=repeated_flops(analysis), degree=cp.degree
    )
    return flops, collectives


def sequence_comms(
    analysis: Analysis, cp: ContextParallel, padded: int, *, ring_op: str, split_context: bool = False
) -> list[Comm]:
    """One rank's collectives of one forward with the ``padded`` sequence split ``cp`` ways;
    ``ring_op`` names the ring's K/V exchange (diffusers' ``all_gather_into_tensor``, waited for;
    xDiT's peer-to-peer ``send_recv``, hidden under the attention). ``split_context`` (xDiT's patch
    on the diffusers modules): the text context is split the same ways and the cross-attention
    exchanges its q, k, v and output, and gathers its K and V over the ring, as the
    self-attention does."""
    m, w, g = analysis.model, analysis.workload, analysis.geometry
    act, head_dim, b = DTYPE_BYTES[w.dtype], m.dim // m.num_heads, w.batch_size
    rank_tokens = b * padded // cp.degree
    out: list[Comm] = []
    if cp.ulysses > 1:  # q, k, v in and the output back: this rank's [tokens/degree, heads, head_dim]
        size = rank_tokens * m.num_heads * head_dim * act
        spec = CollectiveSpec("all_to_all_single", cp.ulysses, size, size, 4 * m.num_layers)
        out.append(Comm(spec, "q, k, v and the attention output (Ulysses all-to-all)", in_blocks=True))
        if split_context:
            spec = CollectiveSpec("all_to_all_single", cp.ulysses, size, size, 2 * m.num_layers)
            out.append(Comm(spec, "the cross-attention's q and output (Ulysses all-to-all)", in_blocks=True))
            size = b * g.context_len // cp.degree * m.num_heads * head_dim * act
            spec = CollectiveSpec("all_to_all_single", cp.ulysses, size, size, 2 * m.num_layers)
            out.append(Comm(spec, "the context's k and v (Ulysses all-to-all)", in_blocks=True))
    if cp.ring > 1 and split_context:  # the context's K and V chunks, gathered like the sequence's
        size = 2 * (b * g.context_len // cp.ring) * (m.num_heads // cp.ulysses) * head_dim * act
        spec = CollectiveSpec(ring_op, cp.ring, size, cp.ring * size, m.num_layers)
        out.append(Comm(spec, "the context's K and V (ring all-gather)", stride=cp.ulysses, in_blocks=True))
    if cp.ring > 1:  # cat(K, V) of this rank's tokens/ring and heads/ulysses, gathered over the ring
        size = 2 * (b * padded // cp.ring) * (m.num_heads // cp.ulysses) * head_dim * act
        spec = CollectiveSpec(ring_op, cp.ring, size, cp.ring * size, m.num_layers)
        hidden = ring_op == "send_recv"
        what = (
            "K and V around the ring (peer to peer, under the attention)"
            if hidden
            else "K and V (ring all-gather)"
        )
        out.append(
            Comm(spec, what, overlap="attention" if hidden else "none", stride=cp.ulysses, in_blocks=True)
        )
    if cp.degree > 1:  # the head's output, gathered over every rank of the plan
        size = rank_tokens * m.out_dim * math.prod(m.patch_size) * act
        spec = CollectiveSpec("all_gather_into_tensor", cp.degree, size, cp.degree * size, 1)
        out.append(Comm(spec, "the head's output (all-gather)"))
    return out


def block_parameters(m: WanModelSpec) -> list[tuple[int, int]]:
    """(dim 0, elements) of every parameter of one diffusers ``WanTransformerBlock``: q, k, v and
    the output projection (weights [dim, dim] and biases) with q/k RMSNorm weights, for self- and
    cross-attention (image models add the image K and V and their norm), the affine ``norm2``
    (``cross_attn_norm``), the FFN and the ``scale_shift_table`` [1, 6, dim]."""
    d, f = m.dim, m.ffn_dim
    attention = [(d, d * d), (d, d)] * 4 + [(d, d), (d, d)]
    image = [(d, d * d), (d, d)] * 2 + [(d, d)] if m.image_tokens else []
    norm2 = [(d, d), (d, d)] if m.cross_attn_norm else []
    ffn = [(f, f * d), (f, f), (d, d * f), (d, d)]
    return [*attention, *attention, *image, *norm2, *ffn, (1, 6 * d)]


def fsdp_block_gather(m: WanModelSpec, ranks: int, param_bytes: int = 2) -> CollectiveSpec:
    """FSDP2 ``fully_shard`` per block, forward: each block's parameters all-gathered once, in
    ``param_bytes`` (the mixed-precision policy's dtype); every parameter's dim 0 is padded to a
    multiple of ``ranks`` (the [1, 6, dim] modulation table grows to [ranks, 6, dim])."""
    gathered = sum(-(-dim0 // ranks) * ranks * (numel // dim0) for dim0, numel in block_parameters(m))
    out = gathered * param_bytes
    return CollectiveSpec("_allgather_base_", ranks, out // ranks, out, m.num_layers)


def _fsdp1_comms(
    tree: Composite, gpus: int, per: str, count: int, what: str, hide: str = "block"
) -> list[Comm]:
    """FSDP1 FULL_SHARD per block: each unit's flat parameter (padded to a multiple of ``gpus``)
    all-gathered in bf16 ``count`` times per ``per``; the blocks' gathers hide under the block
    before them (``hide``: the DiT's blocks; T5's are too short to count on), the root unit's
    (everything outside the blocks) is waited for."""
    (blocks,) = [c for c in tree.children if isinstance(c, Repeated)]
    block = blocks.template.total.params
    root = tree.total.params - blocks.total.params
    bf16 = DTYPE_BYTES["bf16"]

    def gather(params: int, n: int) -> CollectiveSpec:
        shard = -(-params // gpus) * bf16
        return CollectiveSpec("_allgather_base_", gpus, shard, shard * gpus, n)

    return [
        Comm(
            gather(block, blocks.count * count),
            f"{what} block weights (FSDP all-gather)",
            per,
            hide,
            in_blocks=True,
        ),
        Comm(gather(root, count), f"{what} weights outside the blocks (FSDP all-gather)", per),
    ]


def rank_plan(
    analysis: Analysis,
    plan: ParallelPlan,
    offload: Offload,
    *,
    weight_dtype: str | None = None,
    placed: placement.Placed | None = None,
) -> RankPlan:
    """What rank 0 runs, sends and holds for one video under ``plan`` (the module docstring);
    ``weight_dtype`` and ``placed`` as for the family's analysis (Wan2.2's cast and placement).

    Per-token timesteps (Wan2.2): the official code embeds them for the whole padded sequence on
    every rank and keeps those tensors whole (the ranks take views); diffusers splits them at the
    model's input with the latents."""
    m, w, g = analysis.model, analysis.workload, analysis.geometry
    cp, tokens = plan.sequence, g.tokens
    official = w.pipeline == "official"
    xdit = plan.runtime == "xdit"
    notes: list[str] = []
    if xdit:
        notes.append(_check_xdit(analysis, plan))
    cp.check(tokens=tokens, heads=m.num_heads, exact_split=not (official or xdit))  # both of these pad
    padded = -(-tokens // cp.degree) * cp.degree
    time_tokens = padded if official else padded // cp.degree
    if padded != tokens:
        notes.append(
            f"The sequence of {tokens:,} tokens is padded to {padded:,} (a multiple of ulysses × ring = "
            f"{cp.degree}); the {padded - tokens:,} padded tokens are computed on every block."
        )
    per_token = m.per_token_timesteps(w.pipeline)
    shard = None
    if cp.degree > 1:
        shard = SequenceShard(
            tokens=padded // cp.degree,
            heads=m.num_heads // cp.ulysses,
            calls=cp.ring,
            q_tokens=padded // cp.ring,
            kv_tokens=padded // cp.ring,
            full_tokens=padded,
            time_tokens=time_tokens,
            code="xdit" if xdit else m.sequence_parallel_code(w.pipeline),
            context_split=cp.degree if xdit else 1,
        )
        forward = build_dit(m, w, g, shard, per_token_timesteps=per_token, weight_dtype=weight_dtype)
    else:
        forward = analysis.forward.tree
    timed = forward  # what the rank runs; ``forward`` is what it stores
    if official and plan.dit_fsdp:  # FSDP gathers every unit's parameters in bf16 (FSDP_RUN_DTYPE)
        timed = build_dit(m, w, g, shard, per_token_timesteps=per_token, weight_dtype=FSDP_RUN_DTYPE)
    ring_op = "send_recv" if official else "all_gather_into_tensor"
    comms = sequence_comms(analysis, cp, padded, ring_op=ring_op, split_context=xdit)
    if plan.dit_fsdp:
        if official:
            comms += _fsdp1_comms(forward, plan.gpus, "forward", 1, "DiT")
        else:
            spec = fsdp_block_gather(m, plan.gpus)
            comms.append(
                Comm(spec, "DiT block weights (FSDP2 all-gather)", "forward", "block", in_blocks=True)
            )
    umt5 = build_umt5(m.text_encoder, 1, 1)
    encodes = {s.name: s.runs_per_video for s in analysis.stages}.get("text_encoder", 0)
    if plan.t5_fsdp and not official:
        raise ConfigError(
            "parallel.t5_fsdp", "an official generate.py flag (diffusers has no T5 FSDP); allowed: false"
        )
    if plan.t5_fsdp and offload.t5_cpu:
        raise ConfigError(
            "parallel.t5_fsdp", "T5 never reaches the GPU under offload.t5_cpu=true; allowed: false"
        )
    if plan.t5_fsdp and encodes:
        comms += _fsdp1_comms(umt5, plan.gpus, "video", encodes, "T5", hide="none")
    if plan.cfg > 1:  # the two halves exchange their noise predictions once per step
        size = w.batch_size * m.out_dim * math.prod(g.latent_shape) * DTYPE_BYTES[w.dtype]
        spec = CollectiveSpec("all_gather_into_tensor", plan.cfg, size, plan.cfg * size, 1)
        comms.append(Comm(spec, "the noise predictions of the two CFG halves", "step", stride=cp.degree))
    stages: tuple[Stage, ...] = ()
    decode = next((s for s in analysis.stages if s.name == "vae_decode"), None)
    if w.vae_parallel and decode is not None and plan.gpus > 1:  # one GPU (the scaling's): whole
        stage, gather, note = _spread_decode(analysis, decode, plan.gpus)
        stages, comms = (stage,), [*comms, gather]
        notes.append(note)
    footprint, memory = _rank_memory(analysis, plan, forward, padded, offload, umt5, ring_op, placed)
    return RankPlan(
        plan,
        timed,
        tuple(comms),
        tokens,
        padded,
        memory,
        footprint,
        "blocks.*",
        "blocks.*.self_attn.attn_core",
        tuple(notes),
        m.sequence_parallel_attention(w.pipeline),
        stages,
    )


def _check_xdit(analysis: Analysis, plan: ParallelPlan) -> str:
    """Refuse what xDiT's patch on the diffusers modules does not run (the ML.ENERGY benchmark's
    ``_parallelize_wan_transformer``, ml-energy/benchmark @ 14571a8), and the report's note on it.
    Any pipeline but diffusers is refused when the config loads (``config.load``, on one GPU too)."""
    m, g = analysis.model, analysis.geometry
    if m.image_tokens:
        raise ConfigError(
            "parallel.runtime",
            "xdit: xDiT's patch leaves an image model's context whole (its cross-attention is then not "
            "costed); allowed for this model: own",
        )
    for key, on, allowed in (
        ("cfg", plan.cfg > 1, "1"),
        ("dit_fsdp", plan.dit_fsdp, "false"),
        ("t5_fsdp", plan.t5_fsdp, "false"),
    ):
        if on:
            raise ConfigError(
                f"parallel.{key}",
                f"parallel.runtime=xdit (xDiT's patch on diffusers) splits only the sequence; "
                f"allowed: {allowed}",
            )
    if g.context_len % plan.sequence.degree:
        raise ConfigError(
            "parallel",
            f"parallel.runtime=xdit: the {g.context_len}-token context does not split ulysses × ring = "
            f"{plan.sequence.degree} ways",
        )
    return (
        "xDiT's USP patched onto the diffusers modules (parallel.runtime=xdit, xDiT 0.4.5's "
        f"xFuserWanAttnProcessor): the {g.context_len}-token text context is split {plan.sequence.degree} "
        "ways too, so the cross-attention goes through the all-to-alls and the ring like the "
        "self-attention; copies around every all-to-all; the ring all-gathers K and V and merges in fp32."
    )


def _spread_decode(analysis: Analysis, decode: Stage, gpus: int) -> tuple[Stage, Comm, str]:
    """``methods.vae_parallel``: rank 0's share of LightX2V's parallel decode (its tile, the copies
    around it), the all-gather of every rank's piece once per video, and what the report says
    (models/wan21/vae_parallel.py)."""
    m, b = analysis.model, analysis.workload.batch_size
    frames, h, w = analysis.geometry.latent_shape
    s = vae_parallel.split(h, w, gpus)
    tree = vae_parallel.build_rank_decode(m.vae, b, frames, s)
    tile = (
        f"rank 0's {s.tile_h}x{s.tile_w}-latent tile ({s.chunk_h}x{s.chunk_w} and a "
        f"{vae_parallel.PADDING}-latent halo) of LightX2V's {s.rows}x{s.cols} grid"
    )
    piece = vae_parallel.piece_bytes(m.vae, b, frames, s)
    spec = CollectiveSpec("all_gather_into_tensor", gpus, piece, gpus * piece, 1)
    what = "the decoded video's pieces (LightX2V's parallel VAE decode)"
    note = (
        f"VAE decode spread over the {gpus} GPUs (methods.vae_parallel, LightX2V's parallel decode): {tile}; "
        f"each GPU's {piece / 2**20:.1f} MiB piece all-gathered once per video. The decode keeps the "
        "pipeline's VAE dtype (LightX2V runs its own in the run's dtype)."
    )
    run = f"{decode.run}: {tile}, the pieces all-gathered"
    return attrs.evolve(decode, tree=tree, run=run), Comm(spec, what, "video"), note


def _rank_memory(
    analysis: Analysis,
    plan: ParallelPlan,
    forward: Composite,
    padded: int,
    offload: Offload,
    umt5: Composite,
    ring_op: str,
    placed: placement.Placed | None = None,
) -> tuple[Footprint, Timeline]:
    """Rank 0's DiT footprint and memory timeline: the DiT's activations for its sequence shard
    (plus the Ulysses exchange's second copy of q, k and v, and the ring's K and V: diffusers'
    whole gathered sequence, xDiT's current and next chunk), sharded weights where FSDP shards them
    (the gathered units count as live bytes of their stage only); T5, CLIP and the VAE whole; the
    decode on rank 0."""
    m, w, g = analysis.model, analysis.workload, analysis.geometry
    cp, b, a = plan.sequence, w.batch_size, w.act_bytes
    rank_tokens = padded // cp.degree
    per_token = w.pipeline if m.per_token_timesteps(w.pipeline) else None
    time_tokens = padded if w.pipeline == "official" else rank_tokens  # see rank_plan
    footprint = dit_footprint(
        m, w, g, forward, tokens=rank_tokens, per_token=per_token, time_tokens=time_tokens
    )
    fmt = stored_format(analysis.footprint.weights_by_dtype)  # gemm_dtype's quantized weights
    if fmt is not None:
        footprint = attrs.evolve(footprint, weights_by_dtype=weights_by_dtype(forward, w.dtype, fmt.stored))
    extra = 0
    if cp.ulysses > 1:  # the all-to-all's outputs live beside its inputs
        extra += 3 * b * rank_tokens * m.dim * a
    if cp.ring > 1:  # K and V of this rank's heads: the whole sequence, or two chunks in flight
        chunks = 2 if ring_op == "send_recv" else cp.ring
        extra += 2 * b * (padded // cp.ring) * chunks * (m.dim // cp.ulysses) * a
    stages = dict(footprint.stage_bytes)
    stages["self_attention"] += extra
    footprint = attrs.evolve(footprint, stage_bytes=stages)
    components = {"dit": footprint.weights_by_dtype, **component_weights(m)}
    if plan.dit_fsdp:
        components["dit"], gathered = fsdp_weight_bytes(forward, footprint.weights_by_dtype, plan.gpus)
        persistent = footprint.persistent_bytes + gathered  # live while the forward runs
        footprint = attrs.evolve(footprint, weights_by_dtype=components["dit"], persistent_bytes=persistent)
    if offload.model is None and plan.gpus > 1:
        offload = attrs.evolve(offload, model=False)  # generate.py: offload_model = world_size == 1
    experts = m.resident_experts(w.pipeline, plan.gpus, bool(offload.model))
    for i in range(2, experts + 1):  # a second expert, as sharded
        components[f"dit_{i}"] = dict(components["dit"])
    activations = stage_activation_bytes(m, w, g, footprint)
    if w.vae_parallel and "vae_decode" in activations and plan.gpus > 1:  # rank 0's share of the decode
        split = vae_parallel.split(*g.latent_shape[1:], plan.gpus)
        activations["vae_decode"] = vae_parallel.rank_decode_bytes(m.vae, b, g.latent_shape[0], split)
    if plan.t5_fsdp:
        components["text_encoder"], gathered = fsdp_weight_bytes(umt5, components["text_encoder"], plan.gpus)
        activations["text_encoder"] += gathered
    swaps = m.expert_swaps(w.pipeline, bool(offload.model)) if experts < 2 else 0  # one at a time
    timeline = placement.timeline(
        w.pipeline, available_stages(m), components, activations, offload, official=placed, expert_swaps=swaps
    )
    return footprint, timeline
