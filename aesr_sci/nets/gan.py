"""Adversarial training: a patch discriminator, the generator/discriminator pair and their losses.

The training engine (:class:`aesr_sci.training.AdversarialStep`) trains ``model.generator`` on
its content loss alone for the first ``train.adversarial.start_fraction`` of the steps, then on
the content loss plus ``train.adversarial.weight`` times :attr:`AdversarialLosses.generator`
(the discriminator frozen), and after each generator step trains ``model.discriminator`` on
:attr:`AdversarialLosses.discriminator` of the detached output. ``train.adversarial.kind``
chooses the loss (``bce`` by default, or ``relativistic``). Inference and export use the
generator alone.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from monai.networks.layers import Conv
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from ..errors import ModelError
from .blocks import SRNetwork, check_positive

__all__ = [
    "ADVERSARIAL_KINDS",
    "GENERATOR_READS_REAL",
    "AdversarialLosses",
    "GANModel",
    "PatchDiscriminator",
    "adversarial_losses",
]

ADVERSARIAL_KINDS: tuple[str, ...] = ("relativistic", "bce")
# the kinds whose generator loss compares with the real logits (bce's judges the fakes alone)
GENERATOR_READS_REAL: frozenset[str] = frozenset({"relativistic"})


class PatchDiscriminator(nn.Module):
    """PatchGAN-like discriminator for 2D or 3D images: a map of real-versus-fake logits.

    ``layers`` stride-2 convolutions (kernel 4, channels doubling from ``features`` up to
    ``8 * features``, LeakyReLU 0.2), then a stride-1 convolution and a one-channel stride-1
    convolution. No normalisation layers; spectral normalisation on every convolution keeps the
    discriminator 1-Lipschitz-like and the adversarial game stable (Miyato et al., 2018). A
    ``(N, C, *S)`` input gives ``(N, 1, *ceil(S / 2 ** layers))`` logits, each seeing a patch.

    Parameters
    ----------
    spatial_dims
        2 or 3.
    in_channels
        Channels of the high-resolution images it judges.
    features
        Channels of the first layer.
    layers
        Number of stride-2 convolutions.
    spectral_norm
        Wrap each convolution in spectral normalisation.

    Examples
    --------
    >>> d = PatchDiscriminator(2, 3, features=8, layers=2)
    >>> d(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 1, 8, 8])
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        *,
        features: int = 32,
        layers: int = 3,
        spectral_norm: bool = True,
    ) -> None:
        super().__init__()
        check_positive("gan discriminator", features=features, layers=layers)
        conv_type = Conv[Conv.CONV, spatial_dims]

        def wrap(module: nn.Module) -> nn.Module:
            return _spectral_norm(module) if spectral_norm else module

        modules: list[nn.Module] = []
        channels = in_channels
        for i in range(layers):
            width = features * 2 ** min(i, 3)
            modules += [
                wrap(conv_type(channels, width, 4, stride=2, padding=1)),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            channels = width
        width = features * 2 ** min(layers, 3)
        modules += [
            wrap(conv_type(channels, width, 3, stride=1, padding=1)),
            nn.LeakyReLU(0.2, inplace=True),
            wrap(conv_type(width, 1, 3, stride=1, padding=1)),
        ]
        self.net = nn.Sequential(*modules)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image)


class GANModel(nn.Module):
    """A super-resolution generator and the discriminator that trains it; ``forward`` is the generator's.

    Build it with ``build_model("gan", generator="residual", discriminator={...}, ...)``.

    Parameters
    ----------
    generator
        Any network of the family (``seed``, ``residual``, ``multiscale``, ``attention``).
    discriminator
        Judges high-resolution images of ``generator.out_channels`` channels.
    """

    def __init__(self, generator: SRNetwork, discriminator: nn.Module) -> None:
        super().__init__()
        self.generator = generator
        self.discriminator = discriminator
        self.config: dict = {}

    # the geometry of the generator, so that callers can treat a GANModel like any network
    @property
    def spatial_dims(self) -> int:
        return self.generator.spatial_dims

    @property
    def in_channels(self) -> int:
        return self.generator.in_channels

    @property
    def out_channels(self) -> int:
        return self.generator.out_channels

    @property
    def scale(self) -> list[int]:
        return self.generator.scale

    @property
    def convention(self) -> str:
        return self.generator.convention

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        return self.generator(lq)


class AdversarialLosses(NamedTuple):
    """The two adversarial losses; each is a scalar tensor."""

    discriminator: torch.Tensor
    generator: torch.Tensor


def adversarial_losses(
    real_logits: torch.Tensor, fake_logits: torch.Tensor, *, kind: str = "relativistic"
) -> AdversarialLosses:
    """Discriminator and generator losses from the discriminator's logits on real and generated images.

    Parameters
    ----------
    real_logits
        ``discriminator(gt)``.
    fake_logits
        ``discriminator(generator(lq))``.
    kind
        ``"relativistic"`` (default): relativistic average GAN (ESRGAN, Wang et al., 2018); the
        discriminator estimates whether a real image is more realistic than the average fake one
        and vice versa, and the generator gets gradients from both terms.
        ``"bce"``: the standard non-saturating GAN with binary cross-entropy on logits.

    Returns
    -------
    AdversarialLosses
        ``discriminator`` and ``generator`` losses (means over the patch maps).

    Notes
    -----
    Use two calls per training step. For the discriminator step, pass logits of the *detached*
    generator output and optimise ``.discriminator``. For the generator step, pass logits of the
    attached output (``real_logits`` may be detached) and optimise ``.generator``, usually
    weighted by about 1e-3 against the reconstruction loss.

    Examples
    --------
    >>> real, fake = torch.full((2, 1, 4, 4), 3.0), torch.full((2, 1, 4, 4), -3.0)
    >>> losses = adversarial_losses(real, fake, kind="bce")
    >>> bool(losses.discriminator < losses.generator)
    True
    """
    if kind == "bce":
        ones, zeros = torch.ones_like(real_logits), torch.zeros_like(fake_logits)
        d_loss = F.binary_cross_entropy_with_logits(real_logits, ones) + F.binary_cross_entropy_with_logits(
            fake_logits, zeros
        )
        g_loss = F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
        return AdversarialLosses(d_loss, g_loss)
    if kind == "relativistic":
        real_rel = real_logits - fake_logits.mean()
        fake_rel = fake_logits - real_logits.mean()
        ones, zeros = torch.ones_like(real_rel), torch.zeros_like(fake_rel)
        d_loss = 0.5 * (
            F.binary_cross_entropy_with_logits(real_rel, ones)
            + F.binary_cross_entropy_with_logits(fake_rel, zeros)
        )
        g_loss = 0.5 * (
            F.binary_cross_entropy_with_logits(real_rel, zeros)
            + F.binary_cross_entropy_with_logits(fake_rel, ones)
        )
        return AdversarialLosses(d_loss, g_loss)
    raise ModelError(f"unknown adversarial loss {kind!r}: choose one of {', '.join(ADVERSARIAL_KINDS)}")
