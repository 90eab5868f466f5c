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
import sys
import types
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
    "to_image": "aesr_sci.io",
    "from_image": "aesr_sci.io",
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
        submodule = sys.modules.get(f"{__name__}.{name}")
        if submodule is not None:  # aesr_sci.train: the module, made callable, stays the attribute
            return submodule
        globals()[name] = value
        return value
    raise AttributeError(f"module 'aesr_sci' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


class _CallableModule(types.ModuleType):
    """A submodule that shares its name with a public function (``aesr_sci.train``): calling it
    calls the function, so ``import aesr_sci.train`` never hides ``aesr_sci.train(...)``."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        name = self.__name__.rpartition(".")[2]
        return getattr(importlib.import_module(_EXPORTS[name]), name)(*args, **kwargs)


class _Package(types.ModuleType):
    """This package's module type: the import system binds a submodule as an attribute of its
    package (``import aesr_sci.train`` sets ``aesr_sci.train``); a submodule named like a public
    function is made callable then."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _EXPORTS and type(value) is types.ModuleType and value.__name__ == f"{__name__}.{name}":
            value.__class__ = _CallableModule
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
