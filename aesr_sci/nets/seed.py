"""The founding document's encoder-decoder, with learned upsampling to the target grid."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.layers import Conv
from torch import nn

from ..errors import ModelError
from .blocks import SRNetwork, SubpixelUpsample, conv, crop_to, pad_to_multiple

__all__ = ["SeedAutoencoder"]


class SeedAutoencoder(SRNetwork):
    """Convolutional encoder-decoder trained with MSE: the baseline the other networks must beat.

    Kept close to the founding document: a convolution, two stride-2 convolutions (the encoder,
    features ``(64, 32, 16)`` by default), two stride-2 transposed convolutions back to the input
    grid (the decoder). The document then resized the decoder's output with a fixed resampler;
    here a learned sub-pixel convolution maps the decoder's features to the target grid, and
    there is no final sigmoid (normalised intensities may exceed 1). No skip connection of any
    kind: that is what the ``residual`` network adds. Inputs of any size are replicate-padded to a
    multiple of 4 and the output is cropped back.

    Parameters
    ----------
    spatial_dims, in_channels, scale, out_channels, convention
        See :class:`~aesr_sci.nets.blocks.SRNetwork`.
    features
        Channels after the first convolution and after each downsampling, three integers.

    Examples
    --------
    >>> net = SeedAutoencoder(spatial_dims=2, in_channels=1, scale=2, features=(8, 8, 8))
    >>> net(torch.zeros(1, 1, 7, 9)).shape
    torch.Size([1, 1, 14, 18])
    """

    def __init__(
        self,
        *,
        spatial_dims: int,
        in_channels: int,
        scale: int | Sequence[int],
        out_channels: int | None = None,
        convention: str = "fov",
        features: Sequence[int] = (64, 32, 16),
    ) -> None:
        super().__init__(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            scale=scale,
            out_channels=out_channels,
            convention=convention,
        )
        self.skip_mode = "none"  # no skip of any kind (see above)
        f = [int(v) for v in features]
        if len(f) != 3 or min(f) < 1:
            raise ModelError(f"model 'seed': features must be three positive integers (got {features!r})")
        deconv = Conv[Conv.CONVTRANS, spatial_dims]
        self.encoder = nn.Sequential(
            conv(spatial_dims, self.in_channels, f[0]),
            nn.ReLU(inplace=True),
            conv(spatial_dims, f[0], f[1], stride=2),
            nn.ReLU(inplace=True),
            conv(spatial_dims, f[1], f[2], stride=2),
            nn.ReLU(inplace=True),
        )
        self.decoder = nn.Sequential(
            deconv(f[2], f[1], kernel_size=4, stride=2, padding=1),
            nn.ReLU(inplace=True),
            deconv(f[1], f[0], kernel_size=4, stride=2, padding=1),
            nn.ReLU(inplace=True),
        )
        self.upsample = SubpixelUpsample(spatial_dims, f[0], self.out_channels, self.scale)

    def local(self, lq: torch.Tensor) -> torch.Tensor:
        z = self.encoder(pad_to_multiple(lq, 4))
        features = crop_to(self.decoder(z), lq)
        return self.upsample(features)
