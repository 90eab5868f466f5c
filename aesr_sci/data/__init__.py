"""Data by role: degradation, normalisation, where to sample, the pair source, item assembly, the dataset.

``degrade.py`` (the degradation models, stored in checkpoints), ``normalize.py`` (reversible
normalisation and :func:`~aesr_sci.data.normalize.fit_statistics`, the one place statistics are
fitted), ``positions.py`` (where to sample: random and grid positions, the training step sampler),
``source.py`` (the pair source: reading, caching, windows with margins, degradation, per-file
statistics), ``item.py`` (augmentation, noise and normalisation of one item), ``dataset.py``
(:class:`PairDataset`, composing them), ``feed.py`` (what a recipe's data section feeds training)
and ``template.py`` (the MNI152 template, the default sample). The names below are imported
lazily, so that importing this package does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Degradation": "aesr_sci.data.degrade",
    "add_noise": "aesr_sci.data.degrade",
    "degrade": "aesr_sci.data.degrade",
    "Normalizer": "aesr_sci.data.normalize",
    "PairDataset": "aesr_sci.data.dataset",
    "check_sources": "aesr_sci.data.source",
    "fit_statistics": "aesr_sci.data.normalize",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'aesr_sci.data' has no attribute {name!r}")
