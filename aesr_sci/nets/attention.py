"""Residual channel-attention network (RCAN-like), with optional spatial attention."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import ChannelSELayer
from torch import nn

from ..errors import ModelError
from .blocks import SKIP_INIT_GAIN, SRNetwork, SubpixelUpsample, check_positive, conv

__all__ = ["AttentionSR", "SpatialAttention"]


class SpatialAttention(nn.Module):
    """Gate each voxel by a sigmoid map computed from the channel mean and maximum (CBAM-like).

    Parameters
    ----------
    spatial_dims
        2 or 3.
    kernel_size
        Size of the convolution over the two pooled maps (7 in 2D and 5 in 3D by default).
    """

    def __init__(self, spatial_dims: int, *, kernel_size: int | None = None) -> None:
        super().__init__()
        k = kernel_size if kernel_size is not None else (7 if spatial_dims == 2 else 5)
        self.conv = conv(spatial_dims, 2, 1, kernel_size=k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(pooled))


class _AttentionBlock(nn.Module):
    """Conv-ReLU-conv, squeeze-excitation channel gate, optional spatial gate, residual add."""

    def __init__(self, spatial_dims: int, features: int, reduction: int, spatial_attention: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            conv(spatial_dims, features, features),
            nn.ReLU(inplace=True),
            conv(spatial_dims, features, features),
            ChannelSELayer(spatial_dims, features, r=reduction),
        ]
        if spatial_attention:
            layers.append(SpatialAttention(spatial_dims))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class _ResidualGroup(nn.Module):
    def __init__(
        self, spatial_dims: int, features: int, blocks: int, reduction: int, spatial_attention: bool
    ) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *[_AttentionBlock(spatial_dims, features, reduction, spatial_attention) for _ in range(blocks)],
            conv(spatial_dims, features, features),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class AttentionSR(SRNetwork):
    """Residual groups of channel-attention blocks (RCAN, Zhang et al., 2018) on the low-resolution grid.

    Each block re-weights its channels by a squeeze-excitation gate computed from global average
    pooling (:class:`monai.networks.blocks.ChannelSELayer`), and optionally its voxels by a
    :class:`SpatialAttention` map; residual connections inside blocks, inside groups and around the
    whole body; sub-pixel upsampling and a global interpolated skip, as in ``residual``.

    Parameters
    ----------
    spatial_dims, in_channels, scale, out_channels, convention, skip
        See :class:`~aesr_sci.nets.blocks.SRNetwork`.
    features
        Channels of the blocks.
    groups
        Number of residual groups.
    blocks
        Attention blocks per group.
    reduction
        Channel reduction of the squeeze-excitation gate (``features // reduction`` hidden units).
    spatial_attention
        Add a spatial gate to every block.

    Examples
    --------
    >>> net = AttentionSR(spatial_dims=2, in_channels=1, scale=2, features=8, groups=1, blocks=1)
    >>> net(torch.zeros(1, 1, 5, 5)).shape
    torch.Size([1, 1, 10, 10])
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
        groups: int = 2,
        blocks: int = 4,
        reduction: int = 8,
        spatial_attention: bool = False,
    ) -> None:
        super().__init__(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            scale=scale,
            out_channels=out_channels,
            convention=convention,
            skip=skip,
        )
        check_positive("attention", features=features, groups=groups, blocks=blocks, reduction=reduction)
        if features // reduction < 1:
            raise ModelError(
                f"model 'attention': reduction ({reduction}) must not exceed features ({features})"
            )
        self.head = conv(spatial_dims, self.in_channels, features)
        self.body = nn.Sequential(
            *[
                _ResidualGroup(spatial_dims, features, blocks, reduction, bool(spatial_attention))
                for _ in range(groups)
            ],
            conv(spatial_dims, features, features),
        )
        self.upsample = SubpixelUpsample(
            spatial_dims, features, self.out_channels, self.scale, init_gain=SKIP_INIT_GAIN
        )

    def local(self, lq: torch.Tensor) -> torch.Tensor:
        x = self.head(lq)
        x = x + self.body(x)
        return self.upsample(x)
