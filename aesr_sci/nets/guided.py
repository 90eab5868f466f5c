"""Guided networks: super-resolve a target with a co-registered image that is already on the output grid.

A guide is an image of the same scene at the output resolution: Sentinel-2's 10 m bands for its
20 m and 60 m bands (DSen2, Lanaras et al. 2018), a Landsat panchromatic band for its multispectral
bands, a high-resolution T1 for a thick-slice T2 or FLAIR. Every network here maps
``(lq, guide) -> sr`` with ``lq`` of shape ``(N, C_in, *S)``, ``guide`` of shape
``(N, G, *(S * scale))`` and ``sr`` of shape ``(N, C_out, *(S * scale))``, in 2D or 3D, with one
integer factor per axis. They hold no global pooling or attention, so their receptive field is
local and a tiled prediction equals the whole-image one away from the tile margins.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .blocks import (
    ResBlock,
    SRNetwork,
    SubpixelUpsample,
    check_positive,
    conv,
    fourier_interpolate,
    interpolate,
)

__all__ = ["GuidedDualSR", "GuidedResidualSR", "GuidedSRNetwork"]


class GuidedSRNetwork(SRNetwork):
    """Base class of the guided networks: the geometry of :class:`SRNetwork` plus ``guide_channels``.

    Subclasses implement ``forward(lq, guide)``. :meth:`upsample` gives the target interpolated to
    the guide's grid (the global skip before any channel projection), and :meth:`example_guide` a
    guide that fits a given ``lq`` (the registry counts MACs with it; export checks with it).

    Parameters
    ----------
    guide_channels
        Bands (or contrasts) of the guide.
    **geometry
        ``spatial_dims``, ``in_channels``, ``scale``, ``out_channels``, ``convention`` and ``skip``
        (keywords only), see :class:`~aesr_sci.nets.blocks.SRNetwork`.
    """

    def __init__(self, *, guide_channels: int, **geometry: Any) -> None:
        super().__init__(**geometry)
        check_positive(type(self).__name__, guide_channels=guide_channels)
        self.guide_channels = int(guide_channels)

    def upsample(self, lq: torch.Tensor) -> torch.Tensor:
        """``lq`` interpolated onto the guide's grid, as the global skip does (no channel projection)."""
        if self.skip_mode == "fourier":
            return fourier_interpolate(lq, self.scale)
        return interpolate(lq, self.scale, self.convention)

    def example_guide(self, lq: torch.Tensor) -> torch.Tensor:
        """A random guide of the shape that fits ``lq``: ``(N, guide_channels, *(S * scale))``."""
        size = [int(n) * s for n, s in zip(lq.shape[2:], self.scale)]
        return torch.rand(lq.shape[0], self.guide_channels, *size, dtype=lq.dtype, device=lq.device)


def _trunk(spatial_dims: int, features: int, blocks: int, res_scale: float) -> nn.Sequential:
    """Residual blocks followed by one convolution (the body of EDSR and DSen2)."""
    return nn.Sequential(
        *[ResBlock(spatial_dims, features, res_scale=res_scale) for _ in range(blocks)],
        conv(spatial_dims, features, features),
    )


def _zero_tail(spatial_dims: int, features: int, out_channels: int) -> nn.Module:
    """The last convolution, zero-initialised: an untrained network returns its global skip exactly."""
    tail = conv(spatial_dims, features, out_channels)
    nn.init.zeros_(tail.weight)
    nn.init.zeros_(tail.bias)
    return tail


class GuidedResidualSR(GuidedSRNetwork):
    """DSen2-like: the target interpolated to the guide's grid, concatenated with the guide, a residual net.

    ``sr = tail(trunk(head([up(lq), guide]))) + skip(lq)`` where ``up`` is (bi/tri)linear
    interpolation on the training grid (see :func:`~aesr_sci.nets.blocks.interpolate`). Every
    convolution runs on the guide's (high-resolution) grid. The last convolution starts at zero, so
    the untrained network returns the interpolated target and learns only the detail the guide adds.

    Parameters
    ----------
    **geometry
        ``spatial_dims``, ``in_channels``, ``guide_channels``, ``scale``, ``out_channels``,
        ``convention`` and ``skip``, see :class:`GuidedSRNetwork`.
    features
        Channels of the residual blocks.
    blocks
        Number of residual blocks.
    res_scale
        Factor on each block's residual branch (DSen2 uses 0.1 for its 32-block network).

    Examples
    --------
    >>> net = GuidedResidualSR(spatial_dims=3, in_channels=1, guide_channels=1, scale=(1, 1, 4),
    ...                        features=4, blocks=1)
    >>> lq, t1 = torch.rand(1, 1, 6, 6, 3), torch.rand(1, 1, 6, 6, 12)
    >>> net(lq, t1).shape
    torch.Size([1, 1, 6, 6, 12])
    """

    def __init__(
        self, *, features: int = 32, blocks: int = 6, res_scale: float = 1.0, **geometry: Any
    ) -> None:
        super().__init__(**geometry)
        check_positive("guided_residual", features=features, blocks=blocks, res_scale=res_scale)
        spatial_dims = self.spatial_dims
        self.head = conv(spatial_dims, self.in_channels + self.guide_channels, features)
        self.trunk = _trunk(spatial_dims, features, blocks, res_scale)
        self.tail = _zero_tail(spatial_dims, features, self.out_channels)

    def forward(self, lq: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        up = self.upsample(lq)
        x = torch.relu(self.head(torch.cat([up, guide], dim=1)))
        return self.tail(self.trunk(x)) + self.skip_proj(up)


class GuidedDualSR(GuidedSRNetwork):
    """Two encoders, one per input, joined on the guide's grid before a shared decoder.

    The target's encoder works on the low-resolution grid and ends in an ICNR sub-pixel upsampler;
    the guide's encoder works on the guide's grid. Their features are concatenated, fused by a 1x1
    convolution and decoded by residual blocks; the last convolution starts at zero and the
    interpolated target is added (``sr = decoder(fuse([enc_t(lq), enc_g(guide)])) + skip(lq)``).
    Cheaper than :class:`GuidedResidualSR` for the target branch, and the guide never mixes with
    the target's raw values before it has been encoded (useful when the guide's contrast differs,
    e.g. a T1 guiding a FLAIR).

    Parameters
    ----------
    **geometry
        ``spatial_dims``, ``in_channels``, ``guide_channels``, ``scale``, ``out_channels``,
        ``convention`` and ``skip``, see :class:`GuidedSRNetwork`.
    features
        Channels of both encoders and of the decoder.
    encoder_blocks
        Residual blocks in each encoder.
    blocks
        Residual blocks in the decoder.

    Examples
    --------
    >>> net = GuidedDualSR(spatial_dims=2, in_channels=6, guide_channels=4, scale=2, features=4,
    ...                    encoder_blocks=1, blocks=1)
    >>> net(torch.rand(2, 6, 5, 7), torch.rand(2, 4, 10, 14)).shape
    torch.Size([2, 6, 10, 14])
    """

    def __init__(
        self, *, features: int = 32, encoder_blocks: int = 2, blocks: int = 4, **geometry: Any
    ) -> None:
        super().__init__(**geometry)
        check_positive("guided_dual", features=features, encoder_blocks=encoder_blocks, blocks=blocks)
        spatial_dims = self.spatial_dims
        self.target_encoder = nn.Sequential(
            conv(spatial_dims, self.in_channels, features),
            _trunk(spatial_dims, features, encoder_blocks, 1.0),
            SubpixelUpsample(spatial_dims, features, features, self.scale),
        )
        self.guide_encoder = nn.Sequential(
            conv(spatial_dims, self.guide_channels, features),
            _trunk(spatial_dims, features, encoder_blocks, 1.0),
        )
        self.fuse = conv(spatial_dims, 2 * features, features, kernel_size=1)
        self.decoder = _trunk(spatial_dims, features, blocks, 1.0)
        self.tail = _zero_tail(spatial_dims, features, self.out_channels)

    def forward(self, lq: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        joined = torch.cat([self.target_encoder(lq), self.guide_encoder(guide)], dim=1)
        x = torch.relu(self.fuse(joined))
        return self.tail(self.decoder(x)) + self.skip(lq)
