"""Who feeds whom in YOLOv3: the channel dependencies pruning must respect.

Three kinds of dependency matter:

- residual additions tie the output channels of ``s{i}.down`` and every ``s{i}.b{j}.expand``
  together: one keep/remove decision per channel for the whole group ``s{i}``;
- concatenations (the SPP block, and the upsample routes into heads 1 and 2) turn the
  channels of several producers into slices of one consumer's input;
- the three output convolutions have fixed widths and are never pruned.

:func:`input_sources` says, for every convolution, which producers make up its input and
in what order, so that slimming can slice input channels and fold constants correctly.
"""

from __future__ import annotations

from dataclasses import dataclass

from models.layout import (
    HEAD_STRIDES,
    ROUTED_STAGES,
    SPP_KERNELS,
    STAGE_DEPTHS,
    ConvSpec,
    conv_layout,
    head_conv_names,
)

IMAGE = "image"


@dataclass(frozen=True)
class Source:
    """One concatenated block of a convolution's input.

    ``tensor`` names a feature map: ``"image"``, a convolution's output, or a stage's
    running tensor ``"s{i}@{j}"`` (after ``j`` residual blocks of stage ``i``). ``repeat``
    is how many copies are concatenated (the SPP block concatenates four views).
    """

    tensor: str
    repeat: int = 1


def stage_tensor(stage: int, blocks_done: int) -> str:
    return f"s{stage}@{blocks_done}"


def stage_output(stage: int) -> str:
    return stage_tensor(stage, STAGE_DEPTHS[stage - 1])


def input_sources(spp: bool) -> dict[str, list[Source]]:
    """Producer blocks of each convolution's input, in channel order."""
    src: dict[str, list[Source]] = {"stem": [Source(IMAGE)]}
    previous = "stem"
    for i, depth in enumerate(STAGE_DEPTHS, start=1):
        src[f"s{i}.down"] = [Source(previous)]
        for j in range(depth):
            src[f"s{i}.b{j}.reduce"] = [Source(stage_tensor(i, j))]
            src[f"s{i}.b{j}.expand"] = [Source(f"s{i}.b{j}.reduce")]
        previous = stage_output(i)
    head_input = [Source(stage_output(5))]
    for k in range(len(HEAD_STRIDES)):
        names = head_conv_names(k, spp)
        prev_sources = head_input
        for m, name in enumerate(names):
            src[name] = prev_sources
            prev_sources = [Source(name, len(SPP_KERNELS) + 1)] if (spp and k == 0 and m == 2) else [Source(name)]
        route = names[-1]
        src[f"h{k}.pre"] = [Source(route)]
        src[f"h{k}.out"] = [Source(f"h{k}.pre")]
        if k < len(HEAD_STRIDES) - 1:
            src[f"h{k}.lateral"] = [Source(route)]
            head_input = [Source(f"h{k}.lateral"), Source(stage_output(ROUTED_STAGES[k]))]
    return src


def coupling_groups(spp: bool) -> dict[str, list[str]]:
    """Prunable groups: group key -> member convolutions (outputs excluded)."""
    groups: dict[str, list[str]] = {}
    for spec in conv_layout(spp):
        if not spec.is_output:
            groups.setdefault(spec.coupling, []).append(spec.name)
    return groups


def producer_group(tensor: str) -> str | None:
    """The coupling group whose channels a tensor carries (``None`` for the image)."""
    if tensor == IMAGE:
        return None
    if "@" in tensor:
        return tensor.split("@")[0]
    spec = _SPECS[tensor]
    return spec.coupling


_SPECS: dict[str, ConvSpec] = {s.name: s for spp in (False, True) for s in conv_layout(spp)}
