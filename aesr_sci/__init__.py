"""aesr-sci: learned super-resolution of 3D MRI volumes (NIfTI) and multiband rasters (GeoTIFF).

The public API is re-exported here and imported lazily, so ``import aesr_sci`` and
``aesr-sci --help`` stay fast; torch, nibabel and rasterio load on first use.

Examples
--------
>>> import aesr_sci
>>> aesr_sci.__version__  # doctest: +SKIP
'0.1.0'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "Image": "aesr_sci.spatial",
    "SpatialMeta": "aesr_sci.spatial",
    "zoom_affine": "aesr_sci.spatial",
    "read": "aesr_sci.io",
    "read_meta": "aesr_sci.io",
    "write": "aesr_sci.io",
    "info": "aesr_sci.io",
    "degrade": "aesr_sci.data.degrade",
    "build_model": "aesr_sci.nets",
    "train": "aesr_sci.train",
    "load_model": "aesr_sci.checkpoint",
    "upscale": "aesr_sci.infer",
    "evaluate": "aesr_sci.evaluation",
    "load_recipe": "aesr_sci.recipe",
    "selfsr": "aesr_sci.selfsupervised",
    "adapt": "aesr_sci.selfsupervised",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:  # pragma: no cover
    from .spatial import Image, SpatialMeta, zoom_affine  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'aesr_sci' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
