"""How much can any model gain over zero-filled Fourier interpolation on a volume? A noise bound.

k-space truncation by 2 along every axis removes 7/8 of k-space. In the scanner's white noise,
which no model can predict, the removed part carries 7/8 of the noise variance ``sigma^2``, so even
a perfect model keeps a mean squared error of at least ``7/8 sigma^2``; zero-filled Fourier
interpolation's error is that plus all the removed signal. The ceiling on the gain is therefore
``10 log10(MSE_fourier / (7/8 sigma^2))`` dB, on the same foreground voxels that ``evaluate``
scores. ``sigma`` is estimated from the finest 3D Haar detail (the ``+-`` pattern across each
2x2x2 block, whose variance is ``sigma^2`` for white noise and nearly blind to smooth anatomy) as
its median absolute deviation over blocks inside the foreground. Anatomy that is sharp at the voxel
scale inflates that estimate, so the ceiling is a lower bound on the ceiling; on volumes whose
noise was removed (templates, averages) it reads high.

Usage::

    python benchmarks/noise_ceiling.py FILE.nii.gz [...] [--out table.md]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
from _report import emit

from aesr_sci.baselines import upsample
from aesr_sci.data.degrade import Degradation
from aesr_sci.evaluation import degraded_pair
from aesr_sci.io import read


def haar_sigma(volume: np.ndarray, mask: np.ndarray) -> float:
    """Noise standard deviation from the finest 3D Haar detail inside ``mask``."""
    n = [s - s % 2 for s in volume.shape]
    v = volume[: n[0], : n[1], : n[2]].astype(np.float64)
    m = mask[: n[0], : n[1], : n[2]]
    blocks = v.reshape(n[0] // 2, 2, n[1] // 2, 2, n[2] // 2, 2)
    signs = np.array([1.0, -1.0])
    sign = signs[:, None, None] * signs[None, :, None] * signs[None, None, :]
    detail = np.einsum("aibjck,ijk->abc", blocks, sign) / math.sqrt(8.0)
    inside = m.reshape(n[0] // 2, 2, n[1] // 2, 2, n[2] // 2, 2).all(axis=(1, 3, 5))
    d = detail[inside]
    return float(np.median(np.abs(d - np.median(d))) / 0.6745)


def analyse(path: str) -> dict:
    hr = read(path)
    lq, ref, mask = degraded_pair(hr, Degradation("kspace", 2))
    fourier = upsample(lq.data, 2, convention="origin", method="fourier")[0]
    ref0 = ref[0].astype(np.float64)
    mse = float(np.mean((fourier - ref0)[mask] ** 2))
    sigma = haar_sigma(ref0, mask)
    floor = 7.0 / 8.0 * sigma * sigma
    rng = float(np.percentile(ref0[mask], 99.5) - np.percentile(ref0[mask], 0.5))
    return {
        "file": Path(path).name,
        "parent": Path(path).parent.name,
        "sigma_pct": 100 * sigma / rng,
        "fourier_rmse_pct": 100 * math.sqrt(mse) / rng,
        "ceiling_db": 10 * math.log10(mse / floor) if floor > 0 else math.inf,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    lines = [
        "| volume | noise sigma (% of range) | Fourier RMSE (% of range) | ceiling on the gain over Fourier (dB) |",
        "|---|---:|---:|---:|",
    ]
    for f in args.files:
        r = analyse(f)
        lines.append(
            f"| {r['parent']}/{r['file']} | {r['sigma_pct']:.2f} | {r['fourier_rmse_pct']:.2f} | {r['ceiling_db']:+.2f} |"
        )
        print(lines[-1], flush=True)
    emit(lines, args.out)


if __name__ == "__main__":
    sys.exit(main())
