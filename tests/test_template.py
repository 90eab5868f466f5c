"""The default sample: two slabs of nilearn's MNI152 T1 that share no voxels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("nilearn")

from aesr_sci.data.template import sample_paths
from aesr_sci.io import read


def test_sample_slabs_are_disjoint_and_fade_at_the_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AESR_SCI_CACHE", str(tmp_path))
    train, val = sample_paths("all")
    assert sample_paths("train") == [train] and sample_paths("val") == [val]
    a, b = read(train), read(val)
    assert a.spatial_shape[:2] == b.spatial_shape[:2]
    za = a.world([[0, 0, 0], [0, 0, a.spatial_shape[2] - 1]])[:, 2]
    zb = b.world([[0, 0, 0], [0, 0, b.spatial_shape[2] - 1]])[:, 2]
    assert za.max() < zb.min()  # world positions: the validation slab lies entirely above
    assert zb.min() - za.max() == pytest.approx(1.0)  # neighbouring voxels, nothing skipped
    # both fade to background at the cut face, so k-space truncation does not ring there
    assert np.abs(a.data[0, :, :, -1]).max() < 0.02 * a.data.max()
    assert np.abs(b.data[0, :, :, 0]).max() < 0.02 * b.data.max()
    assert b.data[0, :, :, 20].max() > 0.5 * b.data.max()
