"""Self-supervised super-resolution from the input alone: its geometry, slice profile and training pairs.

:func:`slice_geometry` reads the thick axis and the scale from the voxel sizes, :func:`output_meta`
places the result on the field-of-view-preserving grid, :func:`estimate_profile` measures the slice
profile from the data, :class:`InPlanePairs` makes (lq, gt) training pairs from the in-plane axes,
and :func:`combine_orientations` applies a 2D super-resolver across the thick axis in both
orthogonal planes. Importing this package imports torch.

The package is also the API function: ``aesr_sci.selfsr(image, ...)`` calls
:func:`aesr_sci.selfsupervised.selfsr`, the orchestration above training and inference (imported
on the call, so these lower parts never import it).
"""

from __future__ import annotations

from .geometry import SliceGeometry, combine_orientations, output_meta, slice_geometry
from .pairs import InPlanePairs
from .profile import SliceProfile, estimate_profile

__all__ = [
    "InPlanePairs",
    "SliceGeometry",
    "SliceProfile",
    "combine_orientations",
    "estimate_profile",
    "output_meta",
    "slice_geometry",
]
