"""The pair source: windows with margins give the cached file's values; one read per judged patch; bad content."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import pair_source

from aesr_sci.data.degrade import Degradation
from aesr_sci.data.normalize import Normalizer
from aesr_sci.data.source import check_content, value_range
from aesr_sci.errors import DataError
from aesr_sci.spatial import Image, SpatialMeta

# rasterio.transform.from_origin (used by the conftest factory) warns under affine >= 3; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")


def _source(paths, *, deg, max_cached_bytes, policy="valid", patch=32):
    return pair_source(paths, deg=deg, max_cached_bytes=max_cached_bytes, policy=policy, patch=patch)


@pytest.mark.parametrize("params", [{}, {"sigma_jitter": 0.3}])
def test_windowed_pairs_equal_the_cached_file(tmp_path, make_geotiff, params):
    path = make_geotiff(tmp_path / "r.tif", bands=2, height=130, width=110, nodata=0, nodata_border=10)
    deg = Degradation("gaussian", (2, 2), params)
    windowed = _source([path], deg=deg, max_cached_bytes=1000)
    cached = _source([path], deg=deg, max_cached_bytes=10**9)
    src_w, src_c = windowed.sources[0], cached.sources[0]
    assert windowed.windowed(src_w) and not cached.windowed(src_c)
    rng = np.random.default_rng(0)
    for start in [(0, 0), (98, 78), (40, 22), (8, 60)]:
        d = deg.randomized(rng) if params else deg
        a, b = windowed.pair(src_w, start, d), cached.pair(src_c, start, d)
        assert windowed.valid_fraction(src_w, start) == cached.valid_fraction(src_c, start)
        assert a.keys() == b.keys() == {"gt", "valid", "good", "lq", "lq_valid"}
        for role in a:
            x, y = a[role], b[role]
            if x is None or y is None:  # a mask is None where every voxel is valid
                assert (x is None or x.all()) and (y is None or y.all()), role
                continue
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-4, equal_nan=True)
        assert a["gt"].shape == (2, 32, 32) and a["lq"].shape == (2, 16, 16)


def test_judging_then_pairing_a_windowed_patch_reads_once(tmp_path, make_geotiff, monkeypatch):
    import aesr_sci.io as aio

    path = make_geotiff(tmp_path / "r.tif", bands=1, height=120, width=120)
    source = _source([path], deg=Degradation("gaussian", (2, 2)), max_cached_bytes=1000)
    reads = []
    real_read = aio.read

    def counting_read(p, *, window=None, **kw):
        reads.append(window)
        return real_read(p, window=window, **kw)

    monkeypatch.setattr(aio, "read", counting_read)
    src = source.sources[0]
    source.valid_fraction(src, (40, 40))
    source.pair(src, (40, 40), source.degradation)
    assert len(reads) == 1 and reads[0] is not None  # one window, not the whole file
    source.pair(src, (60, 40), source.degradation)
    assert len(reads) == 2


def test_statistics_follow_the_policy_and_bad_content_is_refused():
    data = np.zeros((1, 32, 32), np.float32)
    data[:, 8:24, 8:24] = np.random.default_rng(0).uniform(100, 200, (1, 16, 16))
    img = Image(data, SpatialMeta(np.eye(3), format="nifti"))
    deg = Degradation("area", (2, 2))
    fg = _source([img], deg=deg, max_cached_bytes=10**9, policy="foreground", patch=8)
    everything = _source([img], deg=deg, max_cached_bytes=10**9, policy="valid", patch=8)
    assert fg.stats[0]["low"][0] > 100 and everything.stats[0]["low"][0] == 0.0
    assert fg.valid_fraction(fg.sources[0], (0, 0)) == 0.0  # air is not good for the foreground policy
    assert everything.valid_fraction(everything.sources[0], (0, 0)) == 1.0
    zeros = Image(np.zeros((1, 32, 32), np.float32), SpatialMeta(np.eye(3), format="nifti"))
    with pytest.raises(DataError, match=r"<image 1>: every valid value is 0, so there is nothing to learn"):
        _source([img, zeros], deg=deg, max_cached_bytes=10**9, patch=8)
    nodata = Image(data, SpatialMeta(np.eye(3), format="geotiff"), np.zeros((32, 32), bool))
    with pytest.raises(DataError, match="<image 0>: no valid value"):
        _source([nodata], deg=deg, max_cached_bytes=10**9, patch=8)


def test_value_range_and_check_content():
    data = np.array([[[np.nan, 1.0], [3.0, -2.0]]], np.float32)
    assert value_range(data, None) == (3, -2.0, 3.0)
    assert value_range(data, np.array([[True, False], [False, False]])) == (0, np.inf, -np.inf)
    check_content("a.tif", 3, -2.0, 3.0)
    with pytest.raises(DataError, match=r"^a.tif: no valid value"):
        check_content("a.tif", 0, np.inf, -np.inf)


def test_statistics_are_those_inference_fits_on_the_degraded_input(tmp_path, make_geotiff, make_nifti):
    from aesr_sci.data.degrade import degrade
    from aesr_sci.data.normalize import fit_statistics
    from aesr_sci.io import read

    path = make_nifti(tmp_path / "v.nii.gz", shape=(24, 20, 16))
    deg = Degradation("kspace", (2, 2, 2))
    source = pair_source([path], deg=deg, spatial_dims=3, patch=8, policy="foreground", threshold=0.05)
    lq = degrade(read(path), scale=2, method="kspace")  # what evaluate and upscale see
    expected = fit_statistics(lq.data, lq.mask, normalizer=Normalizer(), policy="foreground")
    np.testing.assert_allclose(source.stats[0]["low"], expected["low"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(source.stats[0]["high"], expected["high"], rtol=1e-5, atol=1e-5)
    # a raster read by windows: statistics of a sample of windows, close to those of the whole file
    tif = make_geotiff(tmp_path / "r.tif", bands=2, height=300, width=280, dtype="float32")
    gauss = Degradation("gaussian", (2, 2))
    windowed = _source([tif], deg=gauss, max_cached_bytes=1000, patch=16)
    cached = _source([tif], deg=gauss, max_cached_bytes=10**9, patch=16)
    for key in ("low", "high"):
        np.testing.assert_allclose(windowed.stats[0][key], cached.stats[0][key], rtol=0.05)
