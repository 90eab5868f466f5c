"""Degradation models, intensity normalisation and the shared patch sampler.

``degrade`` (the model applied to an :class:`~aesr_sci.spatial.Image`), :class:`Degradation` (the
linear operator, stored in checkpoints), :class:`Normalizer` (reversible intensity normalisation)
and :class:`PairDataset` (aligned lq/gt patches from NIfTI and GeoTIFF files) are imported lazily,
so that importing this package does not import torch.
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
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'aesr_sci.data' has no attribute {name!r}")
