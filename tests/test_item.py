"""The assembly of one item: augmentation moves every role alike, noise on lq only, normalisation and masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aesr_sci.data.item import Augmentation, add_noise, assemble
from aesr_sci.data.normalize import Normalizer


def test_augmentation_swaps_only_axes_of_the_same_group_and_flips_only_where_allowed():
    perms, flips = set(), [0, 0, 0]
    for seed in range(60):
        aug = Augmentation.draw(np.random.default_rng(seed), [("a",), ("a",), ("b",)], [True, True, False])
        perms.add(aug.perm)
        flips = [n + f for n, f in zip(flips, aug.flips)]
        assert aug.perm[2] == 2 and not aug.flips[2]
    assert perms == {(0, 1, 2), (1, 0, 2)}
    assert flips[0] > 10 and flips[1] > 10


def test_augmentation_apply_is_a_flip_then_a_transpose():
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    aug = Augmentation((2, 0, 1), (True, False, True))
    expected = np.transpose(x[:, ::-1, :, ::-1], (0, 3, 1, 2))
    np.testing.assert_array_equal(aug.apply(x), expected)
    np.testing.assert_array_equal(Augmentation.identity(3).apply(x), x)


def test_assemble_normalises_masks_and_squeezes():
    gt = np.stack([np.full((4, 1, 6), 10.0), np.full((4, 1, 6), 30.0)]).astype(np.float32)
    gt[1, 0, 0, 0] = 50.0
    lq = gt[:, ::2, :, ::2].copy()
    lq[0, 0, 0, 0] = np.nan  # a nodata pixel of the degraded input
    valid = np.ones((4, 1, 6), bool)
    valid[3] = False
    norm = Normalizer("fixed", scale=0.1, offset=-1.0)
    item = assemble(
        {"gt": gt, "lq": lq, "valid": valid},
        normalizer=norm,
        stats=norm.fit(gt),
        augmentation=Augmentation((1, 0), (False, True)),
        location=[3, 0, 2, 0],
        squeeze_axis=1,
    )
    assert set(item) == {"lq", "gt", "mask", "location"}
    assert item["gt"].shape == (2, 6, 4) and item["lq"].shape == (2, 3, 2) and item["mask"].shape == (1, 6, 4)
    assert item["location"].tolist() == [3, 0, 2, 0] and item["location"].dtype == torch.int64
    mask = item["mask"][0]
    assert mask[:, 3].sum() == 0 and mask[:, :3].all()  # row 3 of the file, flipped and transposed
    assert torch.all(item["gt"][:, mask == 0] == 0)  # the target is 0 where invalid
    assert item["gt"][0, 0, 0] == pytest.approx(0.0) and item["gt"][1, 5, 0] == pytest.approx(4.0)
    assert item["lq"][0, 2, 0] == 0.0  # NaN became 0 (flipped to the last row)
    assert all(t.dtype == torch.float32 and t.is_contiguous() for k, t in item.items() if k != "location")


@pytest.mark.parametrize("kind", ["gaussian", "rician"])
def test_noise_level_is_a_fraction_of_the_robust_scale(kind):
    lq = np.full((2, 64, 64), 100.0, np.float32)
    robust = np.array([100.0, 1000.0], np.float32)
    noisy = add_noise(lq, np.random.default_rng(0), level=0.05, robust=robust, kind=kind)
    assert noisy[0].std() == pytest.approx(5.0, rel=0.1) and noisy[1].std() == pytest.approx(50.0, rel=0.15)
    assert add_noise(lq, np.random.default_rng(0), level=0.0, robust=robust, kind=kind) is lq
