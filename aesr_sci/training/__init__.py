"""The parts of the training engine, each under its own name; :func:`aesr_sci.train.train` runs them.

``device``      where a run trains: the device, torchrun's ranks, DistributedDataParallel, precision
``loop``        the one optimisation loop (:func:`run_steps`) and :func:`fit` (a dataset, a time budget)
``budget``      how many steps a run takes: ``train.max_steps`` or what fits ``train.max_minutes``
``steps``       one optimisation step: :class:`ContentStep` and :class:`AdversarialStep`
``rundir``      the run directory: recipe, run.json, log.csv, checkpoints, ``--resume``
``validation``  scoring the network on the held-out files during training
"""

from __future__ import annotations

from .budget import StepBudget
from .device import Placement, Precision, mixed_precision, place
from .loop import FitResult, LoopState, fit, run_steps
from .rundir import Progress, RunDirectory
from .steps import AdversarialStep, ContentStep, content_loss, lr_at, make_step
from .validation import validate

__all__ = [
    "AdversarialStep",
    "ContentStep",
    "FitResult",
    "LoopState",
    "Placement",
    "Precision",
    "Progress",
    "RunDirectory",
    "StepBudget",
    "content_loss",
    "fit",
    "lr_at",
    "make_step",
    "mixed_precision",
    "place",
    "run_steps",
    "validate",
]
