"""Where each Wan2.1 component sits on one GPU at each stage of a video, and the memory timeline.

Official ``generate.py`` on one GPU, the first video of a process
(``wan/text2video.py``, ``image2video.py``, ``first_last_frame2video.py``):
the VAE is built on the GPU and stays; T5 is built on the CPU; T2V moves the
DiT (fp32) to the GPU when the pipeline is built, I2V and FLF2V build it on the
CPU (``init_on_cpu``) and move it to the GPU before the steps; CLIP is built on
the GPU. With ``--offload_model`` (the default on one GPU) T5 goes to the GPU
for the encode and back to the CPU, CLIP back to the CPU after the image
encode, and the DiT to the CPU (``model.cpu()``, ``empty_cache()``) before the
VAE decode. Without it nothing goes back. ``--t5_cpu``: T5 never reaches the
GPU (it encodes on the CPU).

The moves between these placements are the video's host-device transfers
(``Timeline.transfers``, timed in ``analytic/transfer.py``).

diffusers: ``pipe.to("cuda")`` keeps every component on the GPU;
``enable_model_cpu_offload()`` (``offload.model=true``) moves each component
to the GPU when it runs and back when the next one runs, so only the running
component is resident. diffusers has no ``--t5_cpu``: ``offload.t5_cpu`` stands for the text
encoder kept on the CPU by hand (the pipeline loaded with ``text_encoder=None``, the prompts encoded
by a UMT5 on the CPU and passed as ``prompt_embeds``), so it never reaches the GPU under either
placement, and its encode is timed on the host as under the official flag.
"""

from __future__ import annotations

from collections.abc import Callable

from ditmeter.analytic.memory import Offload, Phase, Timeline
from ditmeter.models.wan21.semantics import SEMANTICS

#: The component whose weights each stage runs.
COMPONENT = {
    "text_encoder": "text_encoder",
    "image_encoder": "image_encoder",
    "vae_encode": "vae",
    "dit": "dit",
    "vae_decode": "vae",
}


def dits(present: tuple[str, ...]) -> set[str]:
    """The DiT components: ``dit`` and a second expert's ``dit_2``."""
    return {c for c in present if c == "dit" or c.startswith("dit_")}


def official_on_gpu(
    stage: str, present: tuple[str, ...], offload: bool, t5_cpu: bool, *, dit_on_init: bool = True
) -> set[str]:
    """Components on the GPU during ``stage`` under generate.py (``stage`` "": when the video
    starts, as the pipeline was built); ``dit_on_init`` False: the DiT waits on the CPU until the
    steps (Wan2.2's ``init_on_cpu``, one expert at a time)."""
    images = "image_encoder" in present
    on = {"vae", "image_encoder"} if images else {"vae"} | (dits(present) if dit_on_init else set())
    if not stage:
        return on & set(present)
    for current in COMPONENT:  # the stages in order, up to ``stage``
        if current == "text_encoder" and not t5_cpu:
            on.add("text_encoder")
        if current == "dit":
            on |= dits(present)  # every DiT the pipeline keeps (Wan2.2's two experts under a plan)
        if current == "vae_decode" and offload:
            on -= dits(present)  # model.cpu() and empty_cache() before the decode
        if current == stage:
            break
        if offload and current in ("text_encoder", "image_encoder"):
            on.discard(current)  # back to the CPU after its encode
    return on & set(present)


def _diffusers(stage: str, present: tuple[str, ...], offload: bool, t5_cpu: bool) -> set[str]:
    """Components on the GPU during ``stage`` under diffusers (""; when the video starts: all of them
    after ``pipe.to("cuda")``, none under ``enable_model_cpu_offload()``)."""
    on = ({COMPONENT[stage]} if stage else set()) if offload else set(present)
    if t5_cpu:
        on.discard("text_encoder")
    return on & set(present)


Placed = Callable[[str, tuple[str, ...], bool, bool], set[str]]


def timeline(
    pipeline: str,
    stages: tuple[str, ...],
    components: dict[str, dict[str, int]],
    activations: dict[str, int],
    offload: Offload,
    official: Placed | None = None,
    expert_swaps: int = 0,
) -> Timeline:
    """The memory timeline of one video: ``stages`` in order (every stage the model runs),
    ``components`` the weight bytes by dtype of each (the DiT's included), ``activations`` the
    peak live activations of one run of each stage that has a memory rule; ``official`` replaces
    Wan2.1's official placement (a family whose generate.py places components otherwise)."""
    sem = SEMANTICS[pipeline]
    offload_model = sem.offload_model_default if offload.model is None else offload.model
    present = tuple(components)
    placed = (official or official_on_gpu) if pipeline == "official" else _diffusers
    phases = []
    for stage in stages:
        on = placed(stage, present, offload_model, offload.t5_cpu)
        resident = {c: sum(components[c].values()) for c in present if c in on}
        phases.append(Phase(stage, resident, activations.get(stage)))
    initial = tuple(sorted(placed("", present, offload_model, offload.t5_cpu)))
    return Timeline(
        tuple(phases), components, offload_model, offload.t5_cpu, initial=initial, expert_swaps=expert_swaps
    )
