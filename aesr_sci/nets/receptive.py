"""The reach of a network: how far an input voxel can change the output, and what a window costs.

Exact tiled inference needs three facts about a network, read here from its layers once by a
forward pass on a small input with hooks on every convolution:

- ``halo``: an upper bound, in input voxels, on how far from an output voxel's position an input
  voxel can still change it. Every convolution adds its one-sided kernel extent times the spacing
  of its input grid (a stride-2 layer's successors see twice as far); transposed convolutions add
  ``ceil(kernel / stride)`` of their coarse input voxels. Summing over *all* layers bounds every
  path through skips and branches. Padding to a multiple and the linear skip add a little more.
- ``multiple``: the product of strides on the coarsest grid. A strided network is not
  translation-equivariant; its windows must start at multiples of this to see the same grid as
  the whole image.
- A guided network (``forward(lq, guide)``, the guide ``scale`` times finer) is probed with its
  :meth:`~aesr_sci.nets.guided.GuidedSRNetwork.example_guide`; its guide-grid layers count in lq
  voxels like any layer after the upsampler, so the halo covers both inputs (the guide window is
  the lq window times the scale).
- ``global_pools``: adaptive average pools to one value per channel (squeeze-excitation gates);
  their output depends on the whole input, so tiled inference computes them over the whole input
  (see :func:`aesr_sci.infer.predict`).

``bytes_per_voxel`` estimates the peak memory of a float32 forward pass per input voxel: four
times the widest layer's output (a residual block holds its input, two convolution outputs and
their sum) plus three copies of the output (sub-pixel convolution, shuffle, skip).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["Reach", "reach"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_DECONVS = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_POOLS = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
_PROBE = 32  # input voxels a side of the probe (a multiple of every stride product used here)


@dataclass(frozen=True)
class Reach:
    """What tiled inference needs to know about a network (see the module docstring)."""

    halo: int
    multiple: int
    bytes_per_voxel: float
    global_pools: tuple[nn.Module, ...] = ()


def _per_side(module: nn.Module, axis: int) -> float:
    """One-sided extent of a layer, in voxels of its input grid, along ``axis``."""
    k = module.kernel_size[axis]
    d = module.dilation[axis]
    s = module.stride[axis]
    if isinstance(module, _DECONVS):
        return math.ceil(((k - 1) * d + 1) / s)
    pad = module.padding[axis] if isinstance(module.padding, tuple) else (k - 1) * d // 2
    return max(pad, (k - 1) * d - pad)


def reach(network: nn.Module, *, spatial_dims: int, in_channels: int) -> Reach:
    """Measure ``network``'s :class:`Reach` with hooks during one forward pass on a small input.

    Examples
    --------
    >>> from aesr_sci.nets import build_model
    >>> net = build_model("residual", spatial_dims=2, in_channels=1, scale=2, blocks=2)
    >>> r = reach(net, spatial_dims=2, in_channels=1)
    >>> r.multiple, r.halo >= 2 * 2 + 3
    (1, True)
    """
    size = _PROBE
    records: list[tuple[nn.Module, tuple[int, ...], int]] = []
    pools: list[nn.Module] = []

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        if isinstance(module, _POOLS):
            pools.append(module)
            return
        records.append((module, tuple(args[0].shape[2:]), out[0].numel() // out.shape[0]))

    handles = [
        m.register_forward_hook(hook) for m in network.modules() if isinstance(m, _CONVS + _DECONVS + _POOLS)
    ]
    x = torch.zeros(1, in_channels, *([size] * spatial_dims))
    guide = network.example_guide(x) if hasattr(network, "example_guide") else None
    try:
        with torch.no_grad():
            out = network(x) if guide is None else network(x, guide)
    finally:
        for h in handles:
            h.remove()
    halo = 0.0
    coarsest = 1.0
    widest = 0
    for module, shape, numel in records:
        jump = size / shape[0]  # input voxels per voxel of this layer's input grid
        halo += _per_side(module, 0) * jump
        coarsest = max(coarsest, jump * module.stride[0] if isinstance(module, _CONVS) else jump)
        widest = max(widest, numel)
    multiple = 2 ** math.ceil(math.log2(round(coarsest)))
    halo = math.ceil(halo) + multiple + 1  # padding to the multiple, the linear skip
    halo = -(-halo // multiple) * multiple  # window starts stay on the coarsest grid
    voxels = size**spatial_dims
    out_per_voxel = out[0].numel() / voxels
    guide_per_voxel = 0.0 if guide is None else guide[0].numel() / voxels
    bytes_per_voxel = 4.0 * (4 * widest / voxels + 3 * out_per_voxel + in_channels + guide_per_voxel)
    return Reach(int(halo), int(multiple), bytes_per_voxel, tuple(dict.fromkeys(pools)))
