"""One optimisation step: :class:`ContentStep` (the content loss) and :class:`AdversarialStep` (plus a GAN).

A step object owns the networks it trains, their optimisers and gradient scalers. The loop calls
``step.schedule(i, total)`` and then ``step(batch)``, which returns the step's losses as floats.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from ..infer import channels_last
from ..nets.gan import GENERATOR_READS_REAL, GANModel, adversarial_losses
from .device import Placement, Precision

__all__ = ["AdversarialStep", "ContentStep", "content_loss", "lr_at", "make_step"]


def lr_at(step: int, total: int, base: float) -> float:
    """Linear warm-up over 2 % of the steps, then cosine decay to 1 % of ``base``."""
    warm = max(1, int(0.02 * total))
    if step < warm:
        return base * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    return base * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def content_loss(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean ``l1``, ``mse`` or ``charbonnier`` error over the voxels where ``mask`` is set."""
    diff = pred - gt
    if kind == "l1":
        err = diff.abs()
    elif kind == "mse":
        err = diff * diff
    else:  # charbonnier
        err = torch.sqrt(diff * diff + 1e-6)
    weight = mask.expand_as(err)
    return (err * weight).sum() / weight.sum().clamp_min(1.0)


@contextlib.contextmanager
def frozen(module: torch.nn.Module) -> Iterator[None]:
    """No gradient reaches ``module``'s parameters inside the block."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


class ContentStep:
    """Train the generator on the masked content loss (``train.loss``).

    Parameters
    ----------
    generator
        The network; its weights are what the run saves.
    lr, weight_decay, loss, grad_clip
        ``train.lr``, ``train.weight_decay``, ``train.loss``, ``train.grad_clip``.
    placement
        The device, and DistributedDataParallel when distributed.
    precision
        Mixed precision; with float16 the loss is scaled by a gradient scaler.
    """

    def __init__(
        self,
        generator: torch.nn.Module,
        *,
        lr: float,
        weight_decay: float = 0.0,
        loss: str = "l1",
        grad_clip: float | None = None,
        placement: Placement,
        precision: Precision,
    ) -> None:
        self.device = placement.device
        self.spatial_dims = int(getattr(generator, "spatial_dims", 3))
        self.channels_last = precision.channels_last
        self.generator = channels_last(generator.to(self.device), self.channels_last, self.spatial_dims)
        self.forward = placement.wrap(self.generator)
        self.base_lr, self.lr, self.loss, self.grad_clip = lr, lr, loss, grad_clip
        self.precision = precision
        self.optimizer = torch.optim.Adam(self.generator.parameters(), lr=lr, weight_decay=weight_decay)
        self.scaler = precision.scaler(self.device.type)

    # what a checkpoint holds
    @property
    def modules(self) -> dict[str, torch.nn.Module]:
        return {"generator": self.generator}

    @property
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"generator": self.optimizer}

    @property
    def scalers(self) -> dict[str, torch.amp.GradScaler]:
        return {"generator": self.scaler}

    def schedule(self, step: int, total: int) -> None:
        """Set the learning rate of step ``step`` of ``total``."""
        self.lr = lr_at(step, total, self.base_lr)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr

    def __call__(self, batch: Mapping[str, torch.Tensor]) -> dict[str, float]:
        lq, gt, mask = self.inputs(batch)
        with self.precision.autocast(self.device.type):
            pred = self.generate(lq, batch)
        loss = content_loss(pred.float(), gt, mask, self.loss)
        self.update(loss)
        return {"loss": float(loss.detach())}

    def inputs(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The batch's low-resolution input, target and mask on the device."""
        lq, gt, mask = (batch[k].to(self.device, non_blocking=True) for k in ("lq", "gt", "mask"))
        return channels_last(lq, self.channels_last, self.spatial_dims), gt, mask

    def generate(self, lq: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The generator's output for ``lq``: ``net(lq, guide)`` with the batch's guide when it has one
        (on the device, in ``lq``'s memory layout), else ``net(lq)``."""
        if "guide" not in batch:
            return self.forward(lq)
        guide = batch["guide"].to(self.device, non_blocking=True)
        return self.forward(lq, channels_last(guide, self.channels_last, self.spatial_dims))

    def update(self, loss: torch.Tensor) -> None:
        """Scaled backward pass, gradient clipping and the generator's optimiser step."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.generator.parameters(), self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()


class AdversarialStep(ContentStep):
    """Content loss plus ``weight`` x the adversarial loss of :func:`~aesr_sci.nets.gan.adversarial_losses`.

    Before ``start_fraction`` of the steps, a content-only step. After it, each step is a
    generator step (the discriminator frozen, so no gradient reaches it) followed by a
    discriminator step on the detached output, under its own gradient scaler. The discriminator's
    learning rate follows the generator's schedule, scaled to ``disc_lr``.

    The discriminator runs twice a step (``bce``): on the generated batch in the generator step, and
    once on the real and generated batches stacked in its own step, so that its spectral norms and
    weight casts are computed once and its convolutions see one batch twice as large. Two passes
    over the halves, plus one on the real batch that bce's generator loss never reads, made the step
    cost 30 % more CPU time. ``relativistic`` adds a pass over the real batch, without gradients, in
    the generator step.
    """

    def __init__(
        self,
        generator: torch.nn.Module,
        discriminator: torch.nn.Module,
        *,
        disc_lr: float,
        weight: float,
        start_fraction: float,
        kind: str = "bce",
        placement: Placement,
        precision: Precision,
        **content: Any,
    ) -> None:
        super().__init__(generator, placement=placement, precision=precision, **content)
        self.discriminator = channels_last(
            discriminator.to(self.device), self.channels_last, self.spatial_dims
        )
        self.judge = placement.wrap(self.discriminator)  # the discriminator's own step (synchronised)
        self.disc_lr, self.weight, self.start_fraction, self.kind = disc_lr, weight, start_fraction, kind
        self.disc_optimizer = torch.optim.Adam(
            self.discriminator.parameters(), lr=disc_lr, betas=(0.5, 0.999)
        )
        self.disc_scaler = precision.scaler(self.device.type)
        self.adversarial = False

    @property
    def modules(self) -> dict[str, torch.nn.Module]:
        return {**super().modules, "discriminator": self.discriminator}

    @property
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {**super().optimizers, "discriminator": self.disc_optimizer}

    @property
    def scalers(self) -> dict[str, torch.amp.GradScaler]:
        return {**super().scalers, "discriminator": self.disc_scaler}

    def schedule(self, step: int, total: int) -> None:
        super().schedule(step, total)
        self.adversarial = step >= int(self.start_fraction * total)
        for group in self.disc_optimizer.param_groups:
            group["lr"] = self.disc_lr * self.lr / self.base_lr

    def __call__(self, batch: Mapping[str, torch.Tensor]) -> dict[str, float]:
        if not self.adversarial:
            return super().__call__(batch)
        lq, gt, mask = self.inputs(batch)
        with frozen(self.discriminator):  # the generator step: no gradient reaches the discriminator
            with self.precision.autocast(self.device.type):
                pred = self.generate(lq, batch)
                fake = self.logits(self.discriminator, pred)
                if self.kind in GENERATOR_READS_REAL:
                    with torch.no_grad():
                        real = self.logits(self.discriminator, gt)
                else:  # bce's generator loss never reads the real logits: no forward pass for them
                    real = fake.detach()
            content = content_loss(pred.float(), gt, mask, self.loss)
            adversarial = adversarial_losses(real, fake, kind=self.kind).generator
            loss = content + self.weight * adversarial
            self.update(loss)
        with self.precision.autocast(self.device.type):  # the discriminator step: one pass over both
            real, fake = self.logits(self.judge, torch.cat([gt, pred.detach().to(gt.dtype)])).chunk(2)
        disc_loss = adversarial_losses(real, fake, kind=self.kind).discriminator
        self.disc_optimizer.zero_grad(set_to_none=True)
        self.disc_scaler.scale(disc_loss).backward()
        self.disc_scaler.step(self.disc_optimizer)
        self.disc_scaler.update()
        return {
            "loss": float(loss.detach()),
            "adversarial": float(adversarial.detach()),
            "discriminator": float(disc_loss.detach()),
        }

    def logits(self, module: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
        """``module``'s float32 logits on ``images``, laid out in memory as the discriminator is."""
        return module(channels_last(images, self.channels_last, self.spatial_dims)).float()


def make_step(
    network: torch.nn.Module, train: Any, *, placement: Placement, precision: Precision
) -> ContentStep:
    """The step for ``network`` and the recipe's ``train`` section: adversarial for a :class:`GANModel`."""
    content = {
        "lr": train.lr,
        "weight_decay": train.weight_decay,
        "loss": train.loss,
        "grad_clip": train.grad_clip,
    }
    if not isinstance(network, GANModel):
        return ContentStep(network, placement=placement, precision=precision, **content)
    adv = train.adversarial
    return AdversarialStep(
        network.generator,
        network.discriminator,
        disc_lr=adv.lr,
        weight=adv.weight,
        start_fraction=adv.start_fraction,
        kind=adv.kind,
        placement=placement,
        precision=precision,
        **content,
    )
