"""U-Net-like encoder-decoder with skip connections across scales, in low-resolution space."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.layers import Conv
from torch import nn

from .blocks import (
    SKIP_INIT_GAIN,
    ResBlock,
    SRNetwork,
    SubpixelUpsample,
    check_positive,
    conv,
    crop_to,
    pad_to_multiple,
)

__all__ = ["MultiscaleSR"]


class _EncoderStage(nn.Module):
    def __init__(self, spatial_dims: int, features: int, out_features: int, blocks: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*[ResBlock(spatial_dims, features) for _ in range(blocks)])
        self.down = conv(spatial_dims, features, out_features, stride=2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip = self.blocks(x)
        return skip, torch.relu(self.down(skip))


class _DecoderStage(nn.Module):
    def __init__(self, spatial_dims: int, in_features: int, features: int, blocks: int) -> None:
        super().__init__()
        self.up = Conv[Conv.CONVTRANS, spatial_dims](in_features, features, kernel_size=2, stride=2)
        self.fuse = conv(spatial_dims, 2 * features, features, kernel_size=1)
        self.blocks = nn.Sequential(*[ResBlock(spatial_dims, features) for _ in range(blocks)])

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.up(x))
        return self.blocks(self.fuse(torch.cat([x, skip], dim=1)))


class MultiscaleSR(SRNetwork):
    """U-Net on the low-resolution grid, then sub-pixel upsampling and a global interpolated skip.

    The encoder halves the grid ``levels`` times (stride-2 convolutions, doubling the channels),
    the decoder doubles it back with transposed convolutions and fuses the encoder's features of
    the same scale (concatenation and a 1x1 convolution). Residual blocks at every scale see
    context up to ``2 ** levels`` times wider than at the input scale for little extra compute.
    Inputs of any size are replicate-padded to a multiple of ``2 ** levels`` and cropped back
    before upsampling.

    Parameters
    ----------
    spatial_dims, in_channels, scale, out_channels, convention, skip
        See :class:`~aesr_sci.nets.blocks.SRNetwork`.
    features
        Channels at the input scale (doubled at each coarser level).
    levels
        Number of downsamplings.
    blocks
        Residual blocks per scale, in the encoder and in the decoder.

    Examples
    --------
    >>> net = MultiscaleSR(spatial_dims=2, in_channels=3, scale=(1, 2), features=4, blocks=1)
    >>> net(torch.zeros(1, 3, 7, 9)).shape
    torch.Size([1, 3, 7, 18])
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
        levels: int = 2,
        blocks: int = 2,
    ) -> None:
        super().__init__(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            scale=scale,
            out_channels=out_channels,
            convention=convention,
            skip=skip,
        )
        check_positive("multiscale", features=features, levels=levels, blocks=blocks)
        widths = [features * 2**i for i in range(levels + 1)]
        self.multiple = 2**levels
        self.head = conv(spatial_dims, self.in_channels, features)
        self.encoder = nn.ModuleList(
            [_EncoderStage(spatial_dims, widths[i], widths[i + 1], blocks) for i in range(levels)]
        )
        self.bottleneck = nn.Sequential(*[ResBlock(spatial_dims, widths[-1]) for _ in range(blocks)])
        self.decoder = nn.ModuleList(
            [_DecoderStage(spatial_dims, widths[i + 1], widths[i], blocks) for i in reversed(range(levels))]
        )
        self.tail = conv(spatial_dims, features, features)
        self.upsample = SubpixelUpsample(
            spatial_dims, features, self.out_channels, self.scale, init_gain=SKIP_INIT_GAIN
        )

    def local(self, lq: torch.Tensor) -> torch.Tensor:
        x0 = self.head(pad_to_multiple(lq, self.multiple))
        x = x0
        skips: list[torch.Tensor] = []
        for stage in self.encoder:
            skip, x = stage(x)
            skips.append(skip)
        x = self.bottleneck(x)
        n = len(skips)
        for i, stage in enumerate(self.decoder):
            x = stage(x, skips[n - 1 - i])
        x = crop_to(x0 + self.tail(x), lq)
        return self.upsample(x)
