"""Shared fixtures: small synthetic NIfTI and GeoTIFF files written with nibabel and rasterio directly.

The factories bypass :mod:`aesr_sci.io` on purpose, so that reader tests do not depend on our
writer. Nothing here reads ``/work/shared/data``.

Fixtures
--------
``make_nifti(path, shape=(20, 18, 16), affine=OBLIQUE_AFFINE, dtype="float32", channels=None, ...)``
    Writes a NIfTI-1 file and returns its path (``channels=T`` writes a 4D ``(X, Y, Z, T)`` file).
``make_geotiff(path, bands=3, height=40, width=36, dtype="uint16", crs="EPSG:32618", nodata=0,
nodata_border=4, band_names=None, ...)``
    Writes a tiled GeoTIFF with a nodata collar of ``nodata_border`` pixels and returns its path.
``nifti_path``
    An oblique, anisotropic float32 3D volume of shape ``(20, 18, 16)``.
``geotiff_path``
    A UTM (EPSG:32618) uint16 3-band raster of 40 x 36 pixels with a 4-pixel nodata (0) collar.
``save_model_dir(folder, spatial_dims=2, channels=1, method="area", ...)``
    Saves a tiny untrained ``residual`` network as a run's ``model/`` folder and returns it.
``pair_source(paths, *, deg, spatial_dims=2, patch=32, guides=None, ...)``
    A :class:`~aesr_sci.data.source.PairSource` of the files (and their guides), for source tests.
``data_dir``
    The real data folder (``$AESR_SCI_DATA`` or ``/work/shared/data``); skips the test when absent.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"


def oblique_affine(
    zooms: Sequence[float] = (0.9, 1.1, 2.5),
    *,
    angles_deg: Sequence[float] = (12.0, -7.0, 20.0),
    origin: Sequence[float] = (-10.5, 22.25, -31.0),
) -> np.ndarray:
    """A 4x4 voxel-centre affine with a rotation about all three axes and anisotropic voxels."""
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    aff = np.eye(4)
    aff[:3, :3] = rz @ ry @ rx @ np.diag(zooms)
    aff[:3, 3] = origin
    return aff


OBLIQUE_AFFINE = oblique_affine()


def synthetic_values(shape: Sequence[int], dtype: str | np.dtype, *, seed: int = 0) -> np.ndarray:
    """A smooth pattern plus noise, inside the range of ``dtype`` (integers avoid 0 = nodata)."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(0, 1, n) for n in shape], indexing="ij")
    smooth = sum(np.sin((k + 2) * np.pi * g) for k, g in enumerate(grids)) / max(len(grids), 1)
    base = 0.5 + 0.35 * smooth + 0.1 * rng.random(shape)  # in (0, 1)
    dt = np.dtype(dtype)
    if np.issubdtype(dt, np.integer):
        info = np.iinfo(dt)
        lo, hi = max(info.min, -2000), min(info.max, 4000)
        lo = max(lo, 1) if info.min >= 0 else lo
        return np.clip(np.round(lo + base * (hi - lo)), lo, hi).astype(dt)
    return (100.0 * base - 20.0).astype(dt)


def write_nifti(
    path: str | os.PathLike[str],
    shape: Sequence[int] = (20, 18, 16),
    affine: np.ndarray | None = None,
    dtype: str = "float32",
    channels: int | None = None,
    *,
    data: np.ndarray | None = None,
    slope: float | None = None,
    inter: float | None = None,
    qform_code: int = 1,
    sform_code: int = 2,
    description: str | None = None,
    extensions: Sequence[tuple[int, bytes]] = (),
    xyzt_units: tuple[str, str] | None = ("mm", "sec"),
    intent: str | None = None,
    seed: int = 0,
) -> Path:
    """Write a NIfTI-1 file with nibabel and return its path.

    ``shape`` is the 3D spatial shape (or any shape, to make 2D or 5D files for error tests);
    ``channels=T`` appends a fourth axis. ``data`` overrides the generated values (on-disk array).
    ``slope``/``inter`` set ``scl_slope``/``scl_inter`` (the stored array is ``data``, unscaled).
    """
    import nibabel as nib

    path = Path(path)
    affine = OBLIQUE_AFFINE if affine is None else np.asarray(affine, dtype=np.float64)
    full_shape = (*shape, channels) if channels is not None else tuple(shape)
    arr = synthetic_values(full_shape, dtype, seed=seed) if data is None else np.asarray(data)
    img = nib.Nifti1Image(arr, affine)
    hdr = img.header
    hdr.set_data_dtype(arr.dtype)
    img.set_qform(affine, code=qform_code)
    img.set_sform(affine, code=sform_code)
    if xyzt_units is not None:
        hdr.set_xyzt_units(*xyzt_units)
    if description is not None:
        hdr["descrip"] = description.encode()
    if intent is not None:
        hdr.set_intent(intent)
    for code, content in extensions:
        hdr.extensions.append(nib.nifti1.Nifti1Extension(code, content))
    if slope is not None or inter is not None:
        # nibabel writes an integer array as is and stores these fields (read back via dataobj)
        hdr.set_slope_inter(1.0 if slope is None else slope, 0.0 if inter is None else inter)
    nib.save(img, path)
    return path


def write_geotiff(
    path: str | os.PathLike[str],
    bands: int = 3,
    height: int = 40,
    width: int = 36,
    dtype: str = "uint16",
    crs: str | None = "EPSG:32618",
    nodata: float | None = 0,
    nodata_border: int = 4,
    band_names: Sequence[str] | None = None,
    *,
    transform: Any = None,
    data: np.ndarray | None = None,
    internal_mask: np.ndarray | None = None,
    scales: Sequence[float] | None = None,
    offsets: Sequence[float] | None = None,
    units: Sequence[str] | None = None,
    tags: Mapping[str, str] | None = None,
    band_tags: Sequence[Mapping[str, str]] | None = None,
    colorinterp: Sequence[Any] | None = None,
    tiled: bool = True,
    seed: int = 0,
) -> Path:
    """Write a GeoTIFF with rasterio and return its path.

    The default transform is a 20 m UTM grid, north up. ``nodata_border`` pixels around the edge
    get ``nodata`` (when ``nodata`` is not None). ``internal_mask`` (``(height, width)`` bool,
    True = valid) writes a GDAL internal dataset mask instead of / besides a nodata value.
    ``band_names`` default to ``B1``, ``B2``...
    """
    import rasterio
    from affine import Affine

    path = Path(path)
    if transform is None:
        transform = Affine(20.0, 0.0, 585000.0, 0.0, -20.0, 4415000.0)  # 20 m, north up
    arr = synthetic_values((bands, height, width), dtype, seed=seed) if data is None else np.asarray(data)
    arr = arr.astype(dtype, copy=True)
    if nodata is not None and nodata_border > 0:
        b = nodata_border
        collar = np.ones((height, width), bool)
        collar[b:-b, b:-b] = False
        arr[:, collar] = nodata
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "height": height,
        "width": width,
        "count": bands,
        "dtype": dtype,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
    }
    if tiled:
        profile.update(tiled=True, blockxsize=16, blockysize=16)
    names = [f"B{i + 1}" for i in range(bands)] if band_names is None else list(band_names)
    env = {"GDAL_TIFF_INTERNAL_MASK": True} if internal_mask is not None else {}
    with rasterio.Env(**env), rasterio.open(path, "w", **profile) as dst:
        dst.write(arr)
        for i, name in enumerate(names, start=1):
            dst.set_band_description(i, name)
        if scales is not None:
            dst.scales = tuple(scales)
        if offsets is not None:
            dst.offsets = tuple(offsets)
        if units is not None:
            dst.units = tuple(units)
        if tags:
            dst.update_tags(**tags)
        for i, bt in enumerate(band_tags or (), start=1):
            dst.update_tags(i, **bt)
        if colorinterp is not None:
            dst.colorinterp = list(colorinterp)
        if internal_mask is not None:
            dst.write_mask(np.where(internal_mask, 255, 0).astype(np.uint8))
    return path


def save_model_dir(
    folder: Path,
    *,
    spatial_dims: int = 2,
    channels: int = 1,
    method: str = "area",
    convention: str | None = None,
    patch: int = 16,
) -> Path:
    """Save a tiny untrained ``residual`` network (4 features, 1 block) with its settings."""
    from aesr_sci.checkpoint import save_model
    from aesr_sci.data.degrade import Degradation
    from aesr_sci.nets import build_model

    deg = Degradation(method, (2,) * spatial_dims)
    convention = convention or deg.convention
    net = build_model(
        "residual",
        spatial_dims=spatial_dims,
        in_channels=channels,
        scale=2,
        convention=convention,
        features=4,
        blocks=1,
    )
    save_model(
        folder / "model",
        net,
        {
            "network": net.config,
            "degradation": {**deg.to_dict(), "convention": convention},
            "normalization": {"method": "percentile"},
            "inference_patch": [patch] * spatial_dims,
        },
    )
    return folder / "model"


def save_guided_model_dir(
    folder: Path,
    *,
    scale: int = 2,
    channels: int = 2,
    guide_bands: Sequence[str] = ("G2", "G3"),
    guide_files: int = 1,
) -> Path:
    """Save a tiny untrained ``guided_residual`` network (it returns the bilinear interpolation of its
    input) with a guided model's settings: ``guide_bands`` named, in ``guide_files`` guide files."""
    from aesr_sci.checkpoint import save_model
    from aesr_sci.nets import build_model

    net = build_model(
        "guided_residual",
        spatial_dims=2,
        in_channels=channels,
        guide_channels=len(guide_bands),
        scale=scale,
        features=4,
        blocks=1,
    )
    policy = {"policy": "valid"}
    config = {
        "network": net.config,
        "degradation": {"method": "area", "scale": [scale, scale], "convention": "fov"},
        "normalization": {"method": "fixed", "scale": 0.0001},
        "statistics": policy,
        "guide_channels": len(guide_bands),
        "guide_band_names": list(guide_bands),
        "guide_statistics": policy,
        "guide_factors": [[1, 1]] + [[2, 2]] * (guide_files - 1),
    }
    save_model(folder / "model", net, config)
    return folder / "model"


def folder_digest(folder: Path) -> dict[str, str]:
    """The SHA-256 of each file directly in ``folder``, by name: a model folder left as it was."""
    import hashlib

    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def pair_source(
    paths: Sequence[Any],
    *,
    deg: Any,
    spatial_dims: int = 2,
    patch: int | Sequence[int] = 32,
    guides: Sequence[Any] | None = None,
    normalizer: Any = None,
    policy: str = "valid",
    threshold: float = 0.01,
    max_cached_bytes: int = 10**9,
) -> Any:
    """A :class:`~aesr_sci.data.source.PairSource` of ``paths`` (and their ``guides``) under ``deg``."""
    from aesr_sci.data.normalize import Normalizer
    from aesr_sci.data.source import PairSource, inspect_sources

    sources = inspect_sources(
        paths,
        spatial_dims=spatial_dims,
        patch_size=patch,
        scale=deg.scale_for(spatial_dims),
        slice_axis=2,
        guides=guides,
    )
    return PairSource(
        sources,
        spatial_dims=spatial_dims,
        slice_axis=2,
        degradation=deg,
        normalizer=normalizer or Normalizer(),
        policy=policy,
        foreground_threshold=threshold,
        max_cached_bytes=max_cached_bytes,
    )


@pytest.fixture
def make_nifti() -> Callable[..., Path]:
    """Factory: ``make_nifti(path, shape=(20, 18, 16), affine=..., dtype=..., channels=None, ...)``."""
    return write_nifti


@pytest.fixture
def make_geotiff() -> Callable[..., Path]:
    """Factory: ``make_geotiff(path, bands=3, height=40, width=36, dtype="uint16", ...)``."""
    return write_geotiff


@pytest.fixture
def nifti_path(tmp_path: Path) -> Path:
    """An oblique, anisotropic (0.9 x 1.1 x 2.5 mm) float32 volume of shape (20, 18, 16)."""
    return write_nifti(tmp_path / "oblique.nii.gz")


@pytest.fixture
def geotiff_path(tmp_path: Path) -> Path:
    """A UTM 18N (EPSG:32618) uint16 3-band 40 x 36 raster with a 4-pixel nodata (0) collar."""
    return write_geotiff(tmp_path / "utm.tif")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` skip, with the reason, on a machine without CUDA (CI has none)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (no GPU on this machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def data_dir() -> Path:
    """The real data folder; skips the test when it is absent."""
    path = Path(os.environ.get("AESR_SCI_DATA", DEFAULT_DATA_DIR))
    if not path.is_dir():
        pytest.skip(f"real data folder {path} not found (set AESR_SCI_DATA to run this test)")
    return path
