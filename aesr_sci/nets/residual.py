"""Deep residual network in low-resolution space (EDSR-like, no batch norm)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .blocks import SKIP_INIT_GAIN, ResBlock, SRNetwork, SubpixelUpsample, check_positive, conv

__all__ = ["ResidualSR"]


class ResidualSR(SRNetwork):
    """Residual blocks on the low-resolution grid, sub-pixel upsampling and a global interpolated skip.

    ``output = upsample(head(lq) + body(head(lq))) + interpolate(lq)``: the network only learns
    the detail that (bi/tri)linear interpolation on the training grid misses (EDSR, Lim et al.,
    2017, without batch normalisation). All convolutions run at low resolution; the sub-pixel
    upsampler is ICNR-initialised.

    Parameters
    ----------
    spatial_dims, in_channels, scale, out_channels, convention, skip
        See :class:`~aesr_sci.nets.blocks.SRNetwork`.
    features
        Channels of the residual blocks.
    blocks
        Number of residual blocks.
    res_scale
        Factor applied to each block's residual branch (stabilises deep or wide networks).

    Examples
    --------
    >>> net = ResidualSR(spatial_dims=3, in_channels=1, scale=(1, 1, 4), features=8, blocks=2)
    >>> net(torch.zeros(1, 1, 5, 7, 9)).shape
    torch.Size([1, 1, 5, 7, 36])
    """

    def __init__(
        self,
        *,
        spatial_dims: int,
        in_channels: int,
        scale: int | Sequence[int],
        out_channels: int | None = None,
        convention: str = "fov",
        skip: str = "auto",
        features: int = 32,
        blocks: int = 8,
        res_scale: float = 1.0,
    ) -> None:
        super().__init__(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            scale=scale,
            out_channels=out_channels,
            convention=convention,
            skip=skip,
        )
        check_positive("residual", features=features, blocks=blocks, res_scale=res_scale)
        self.head = conv(spatial_dims, self.in_channels, features)
        self.body = nn.Sequential(
            *[ResBlock(spatial_dims, features, res_scale=res_scale) for _ in range(blocks)],
            conv(spatial_dims, features, features),
        )
        self.upsample = SubpixelUpsample(
            spatial_dims, features, self.out_channels, self.scale, init_gain=SKIP_INIT_GAIN
        )

    def local(self, lq: torch.Tensor) -> torch.Tensor:
        x = self.head(lq)
        x = x + self.body(x)
        return self.upsample(x)
