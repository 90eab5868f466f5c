"""One error base class and a few precise subclasses.

Every error that is the *user's* mistake (a missing file, a corrupt file, a recipe with a typo, a
model that does not fit the data) derives from :class:`AesrError`. The command line prints such an
error as one line and exits with status 2; anything else is a bug and keeps its traceback.

Each subclass also inherits the matching builtin, so ``except OSError`` or ``except ValueError``
keep working for callers who do not know this package (the rasterio pattern).
"""

from __future__ import annotations

__all__ = [
    "AesrError",
    "AesrWarning",
    "DataError",
    "FileFormatError",
    "FileReadError",
    "FileWriteError",
    "MismatchError",
    "ModelError",
    "NoCRSWarning",
    "OutputExistsError",
    "ParameterError",
    "RecipeError",
    "ShapeError",
]


class AesrError(Exception):
    """Base class of every error caused by the user's input."""


class FileReadError(AesrError, OSError):
    """A file is missing, unreadable, truncated or corrupt."""


class FileFormatError(AesrError, ValueError):
    """A file is readable but not of a kind this package supports (wrong extension, 2D/5D NIfTI...)."""


class OutputExistsError(AesrError, FileExistsError):
    """The output exists and overwriting was not requested."""


class FileWriteError(AesrError, OSError):
    """The output cannot be written (unwritable directory, full disk...)."""


class DataError(AesrError, ValueError):
    """Array contents are unusable: NaN or Inf, wrong number of dimensions, too small for a patch."""


class ParameterError(AesrError, ValueError):
    """An option's value is invalid: a scale of 0, a negative or fractional patch size, an unknown method."""


class ShapeError(AesrError, ValueError):
    """Arrays that must have the same shape do not (an image and its reference, an image and its mask)."""


class RecipeError(AesrError, ValueError):
    """A recipe or an override is invalid. The message lists one problem per line."""


class ModelError(AesrError, ValueError):
    """A model name or argument is invalid, or a model file cannot be loaded."""


class MismatchError(AesrError, ValueError):
    """A model and its input do not fit (band count, dimensionality, grid convention)."""


class AesrWarning(UserWarning):
    """Base class of this package's warnings."""


class NoCRSWarning(AesrWarning):
    """A GeoTIFF has no coordinate reference system; outputs will not be georeferenced either."""
