"""The optimisation loop (:func:`run_steps`) and :func:`fit`, training a network on a dataset for a time budget.

:func:`run_steps` is the one loop of the engine: ``aesr-sci train`` runs it with validation and
checkpoints between steps, :func:`fit` runs it on any dataset of ``{"lq", "gt", "mask"}`` items
without a recipe's files (self-supervised training, ``upscale --adapt``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from ..data.positions import GlobalIndex, StepSampler
from ..errors import DataError
from .budget import StepBudget
from .device import mixed_precision, place
from .steps import ContentStep, make_step

__all__ = ["FitResult", "LoopState", "fit", "run_steps"]


@dataclass
class LoopState:
    """Where the loop stands: the steps taken and the running means of the losses."""

    step: int = 0
    running: dict[str, float] = field(default_factory=dict)


def run_steps(
    step: ContentStep,
    batches: Iterator[Mapping[str, torch.Tensor]],
    budget: StepBudget,
    state: LoopState,
    *,
    bar: Any,
    lr_name: str,
    every: int = 0,
    on_every: Callable[[int], None] | None = None,
    postfix: Callable[[], dict[str, str]] | None = None,
) -> None:
    """Optimisation steps from ``state.step`` until the budget's total (or the batches) run out.

    ``on_every(k)`` runs after every ``every`` steps but the last; ``lr_name`` names the learning
    rate in the message of a loss that is no longer finite.
    """
    step.generator.train()
    while state.step < budget.total:
        t0 = time.perf_counter()
        if (batch := next(batches, None)) is None:
            break
        t1 = time.perf_counter()
        step.schedule(state.step, budget.total)
        losses = step(batch)
        # the share of the step spent waiting for data (running mean, logged as data_wait)
        losses["data_wait"] = (t1 - t0) / max(time.perf_counter() - t0, 1e-9)
        if not math.isfinite(losses["loss"]):
            raise DataError(
                f"the loss became {losses['loss']} at step {state.step}: lower {lr_name} "
                f"(now {step.base_lr}) or check the data for outliers"
            )
        for k, v in losses.items():
            state.running[k] = v if k not in state.running else 0.95 * state.running[k] + 0.05 * v
        state.step += 1
        if budget.fitted:  # the steps the time allows are known
            bar.total = budget.total
        bar.update(1)
        bar.set_postfix(postfix() if postfix else {"loss": f"{state.running['loss']:.4f}"}, refresh=False)
        if not budget.after_step(state.step):
            break
        if every and on_every and state.step % every == 0 and state.step < budget.total:
            on_every(state.step)


@dataclass
class FitResult:
    """What :func:`fit` produced: the trained network (in eval mode), its steps, seconds and last loss."""

    network: torch.nn.Module
    steps: int
    seconds: float
    loss: float


def fit(
    network: torch.nn.Module,
    dataset: Dataset,
    *,
    minutes: float | None,
    steps: int = 100_000,
    batch_size: int = 16,
    lr: float = 1e-3,
    loss: str = "l1",
    precision: str = "auto",
    device: str | torch.device | None = None,
    progress: bool = False,
    seed: int = 0,
    num_workers: int = 0,
) -> FitResult:
    """Train ``network`` on ``dataset`` for ``steps`` steps or ``minutes``, whichever ends first.

    The dataset is a map-style dataset of ``{"lq", "gt", "mask"}`` items with ``set_epoch`` (a
    :class:`~aesr_sci.data.dataset.PairDataset` or :class:`~aesr_sci.selfsr.InPlanePairs`); the
    step, learning-rate schedule, precision and step budget are those of ``aesr-sci train``. The
    budget keeps 10 % of ``minutes`` in reserve (see :class:`~aesr_sci.training.StepBudget`), so a
    caller that needs time afterwards subtracts it from ``minutes`` first.

    Examples
    --------
    >>> result = fit(net, pairs, minutes=2, batch_size=16)  # doctest: +SKIP
    >>> result.steps, result.network.training  # doctest: +SKIP
    (812, False)
    """
    placement = place(None if device is None else str(device))
    torch.manual_seed(seed)
    settings = SimpleNamespace(lr=lr, weight_decay=0.0, loss=loss, grad_clip=None)
    step = make_step(
        network, settings, placement=placement, precision=mixed_precision(placement.device, precision)
    )
    budget = StepBudget(max(1, int(steps)), minutes=None if minutes is None else max(minutes, 1e-3))
    loader = DataLoader(
        GlobalIndex(dataset),
        batch_size=batch_size,
        sampler=StepSampler(start=0, stop=budget.total, batch_size=batch_size, rank=0, world=1),
        num_workers=num_workers,
    )
    from tqdm.auto import tqdm

    state = LoopState()
    bar = tqdm(total=None if minutes else budget.total, disable=not progress, unit="step", desc="training")
    try:
        run_steps(step, iter(loader), budget, state, bar=bar, lr_name="the learning rate")
    finally:
        bar.close()
    return FitResult(step.generator.eval(), state.step, budget.elapsed(), state.running.get("loss", math.nan))
