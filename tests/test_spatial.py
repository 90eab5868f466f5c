"""Geometry of resolution changes (aesr_sci.spatial.zoom_affine): world coordinates of centres and corners."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from conftest import oblique_affine

from aesr_sci.spatial import Image, SpatialMeta, voxel_to_world, zoom_affine, zoomed_shape

AFFINES = {
    "oblique": oblique_affine((0.9, 1.1, 2.5)),
    "anisotropic": np.diag([0.8, 0.8, 3.2, 1.0])
    + np.array([[0, 0, 0, -40], [0, 0, 0, 12], [0, 0, 0, 7], [0, 0, 0, 0]]),
    "las": np.array([[-1.0, 0, 0, 90], [0, 1.0, 0, -126], [0, 0, 2.0, -72], [0, 0, 0, 1]]),
}
SHAPE = (6, 4, 4)


def _corners(affine, shape):
    lo_hi = [(-0.5, n - 0.5) for n in shape]
    return voxel_to_world(affine, np.array(list(itertools.product(*lo_hi))))


@pytest.mark.parametrize("name", sorted(AFFINES))
@pytest.mark.parametrize("zoom", [2, (1, 1, 4), (0.5, 0.5, 0.5), (2, 3, 1)])
def test_fov_keeps_corners(name, zoom):
    affine = AFFINES[name]
    new_shape = zoomed_shape(SHAPE, zoom)
    shape = SHAPE
    new = zoom_affine(affine, zoom, convention="fov")
    np.testing.assert_allclose(_corners(new, new_shape), _corners(affine, shape), atol=1e-9)
    factors = np.broadcast_to(np.asarray(zoom, float), (3,))
    np.testing.assert_allclose(
        np.linalg.norm(new[:3, :3], axis=0), np.linalg.norm(affine[:3, :3], axis=0) / factors
    )


@pytest.mark.parametrize("name", sorted(AFFINES))
@pytest.mark.parametrize("zoom", [2, (1, 1, 4)])
def test_origin_keeps_first_centre(name, zoom):
    affine = AFFINES[name]
    new = zoom_affine(affine, zoom, convention="origin")
    np.testing.assert_allclose(voxel_to_world(new, (0, 0, 0)), voxel_to_world(affine, (0, 0, 0)))
    factors = np.broadcast_to(np.asarray(zoom, float), (3,))
    # every old voxel centre is a new voxel centre, at index * zoom
    for idx in [(1, 2, 3), (5, 4, 3)]:
        np.testing.assert_allclose(
            voxel_to_world(new, np.multiply(idx, factors)), voxel_to_world(affine, idx)
        )


def test_fov_centre_moves_by_a_quarter_voxel_for_x2():
    affine = AFFINES["anisotropic"]
    new = zoom_affine(affine, (1, 1, 4), convention="fov")
    # first new centre: old index (1/4 - 1)/2 = -0.375 along z, unchanged along x and y
    np.testing.assert_allclose(voxel_to_world(new, (0, 0, 0)), voxel_to_world(affine, (0, 0, -0.375)))
    assert zoom_affine(np.eye(3), 2, convention="fov")[0, 2] == -0.25


def test_two_d_zoom_and_image_corners():
    meta = SpatialMeta(np.array([[0.0, 20.0, 585010.0], [-20.0, 0.0, 4414990.0], [0, 0, 1]]))
    img = Image(np.zeros((3, 40, 36), np.uint16), meta)
    zoomed = Image(np.zeros((3, 80, 72), np.uint16), meta.zoom(2, convention="fov"))
    np.testing.assert_allclose(zoomed.corners(), img.corners())
    assert zoomed.meta.spacing == (10.0, 10.0)


def test_zoomed_shape_rejects_fractional_sizes():
    from aesr_sci.errors import DataError

    with pytest.raises(DataError, match="crop"):
        zoomed_shape((5, 4), 0.5)


# ------------------------------------------------------------------------- the one per-axis parser
@pytest.mark.parametrize(
    ("value", "dims", "expected"),
    [(2, 3, (2, 2, 2)), ("1,1,4", 3, (1, 1, 4)), ("2x2", 2, (2, 2)), ([3], 2, (3, 3)), (2.0, 2, (2, 2))],
)
def test_per_axis_accepts_one_or_one_per_axis(value, dims, expected):
    from aesr_sci.spatial import per_axis

    assert per_axis(value, dims) == expected
    assert all(isinstance(v, int) for v in per_axis(value, dims))


@pytest.mark.parametrize(
    "value", [0, -2, 2.5, float("nan"), float("inf"), "nan", "two", "", [], [True, 2], None]
)
def test_per_axis_refuses_with_the_packages_value_error(value):
    from aesr_sci.errors import AesrError, ParameterError
    from aesr_sci.spatial import per_axis

    with pytest.raises(ParameterError, match="patch_size must be whole numbers >= 1") as err:
        per_axis(value, 3, name="patch_size")
    assert isinstance(err.value, ValueError) and isinstance(err.value, AesrError)


def test_per_axis_counts_axes_and_zooms_may_be_fractional():
    from aesr_sci.errors import ParameterError
    from aesr_sci.spatial import as_int_scale, as_scale, per_axis

    with pytest.raises(ParameterError, match=r"scale has 2 factors \[1, 4\] but the data has 3 spatial axes"):
        per_axis((1, 4), 3)
    assert per_axis((1, 4)) == (1, 4)  # no dimension given: keep the count
    assert as_scale(0.5, 2) == (0.5, 0.5) and as_int_scale("1,2,2") == (1, 2, 2)
    with pytest.raises(ParameterError, match="finite numbers > 0"):
        as_scale(-0.5, 2)
    with pytest.raises(ParameterError, match="zoom"):
        zoom_affine(np.eye(4), 0, convention="fov")
    with pytest.raises(ParameterError, match="grid convention"):
        zoom_affine(np.eye(4), 2, convention="corner")


def test_one_table_of_methods_and_their_conventions():
    from aesr_sci.data.degrade import PARAMS, Degradation
    from aesr_sci.recipe import DegradationSection
    from aesr_sci.spatial import METHODS

    assert set(PARAMS) == set(METHODS)
    for name, method in METHODS.items():
        assert Degradation(name, 2).convention == method.convention
        DegradationSection(method=name)  # the recipe schema accepts exactly the table's names
    assert METHODS["kspace"].convention == "origin" and METHODS["kspace"].noise == "rician"


# ------------------------------------------------------------------------------------ orientation
@pytest.mark.parametrize("name", sorted(AFFINES))
def test_axis_codes_agree_with_nibabel(name):
    import nibabel as nib

    from aesr_sci.spatial import axis_codes

    assert axis_codes(AFFINES[name]) == tuple(nib.aff2axcodes(AFFINES[name]))
    rng = np.random.default_rng(0)
    for _ in range(50):  # strongly oblique affines too
        affine = np.eye(4)
        affine[:3, :3] = rng.normal(size=(3, 3))
        assert axis_codes(affine) == tuple(nib.aff2axcodes(affine))


def test_axis_codes_of_a_raster_and_opposites():
    from aesr_sci.spatial import axis_codes, opposite

    north_up = np.array([[0.0, 20.0, 585010.0], [-20.0, 0.0, 4414990.0], [0, 0, 1]])
    assert axis_codes(north_up) == ("S", "E")
    assert axis_codes(np.array([[0.0, -20.0, 0], [20.0, 0.0, 0], [0, 0, 1]])) == ("N", "W")
    assert opposite("S", 2) == "N" and opposite("S", 3) == "I" and opposite("R", 3) == "L"
