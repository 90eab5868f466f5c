"""Self-supervised super-resolution from the input alone: its geometry, slice profile and training pairs.

:func:`slice_geometry` reads the thick axis and the scale from the voxel sizes, :func:`output_meta`
places the result on the field-of-view-preserving grid, :func:`estimate_profile` measures the slice
profile from the data, :class:`InPlanePairs` makes (lq, gt) training pairs from the in-plane axes,
and :func:`combine_orientations` applies a 2D super-resolver across the thick axis in both
orthogonal planes. Imported lazily, so that importing this package does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SliceGeometry": "aesr_sci.selfsr.geometry",
    "combine_orientations": "aesr_sci.selfsr.geometry",
    "output_meta": "aesr_sci.selfsr.geometry",
    "slice_geometry": "aesr_sci.selfsr.geometry",
    "SliceProfile": "aesr_sci.selfsr.profile",
    "estimate_profile": "aesr_sci.selfsr.profile",
    "InPlanePairs": "aesr_sci.selfsr.pairs",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'aesr_sci.selfsr' has no attribute {name!r}")
