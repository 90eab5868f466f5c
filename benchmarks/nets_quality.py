"""Tiny quality comparison: every network trained for the same wall time on MRI k-space x2.

Training volume: Colin27 T1 (``--train``); held-out volume: the stroke T1 (``--val``). Both are
normalised by their 99.5th percentile; the low-resolution twin keeps the centre half of the
centred 3D k-space (origin convention: low-resolution voxel ``i`` sits on high-resolution voxel
``2 i``). Each network (defaults, 1 channel, scale 2) trains from the same seed for ``--seconds``
of wall time with Adam (lr 1e-3, L1 loss) on random 32^3 high-resolution patches (batch 4),
then upscales the whole held-out low-resolution volume. PSNR (data range 1) is reported over
the whole volume and over the foreground (reference > 0.1), against trilinear interpolation on
the origin grid and zero-filled k-space (sinc) interpolation. ``gan`` is not trained here: its
generator is ``residual`` and adversarial training trades PSNR for texture.

Usage::

    python benchmarks/nets_quality.py [--seconds 75] [--threads 2] [--out quality.md]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from _report import emit

from aesr_sci.nets import build_model, interpolate

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mri"
NETWORKS = ("seed", "residual", "multiscale", "attention")


def load(path: Path) -> np.ndarray:
    vol = np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)
    vol = vol[tuple(slice(0, n - n % 2) for n in vol.shape)]  # even sizes for an exact x2
    return np.clip(vol / np.percentile(vol, 99.5), 0, None).astype(np.float32)


def _centre(shape_big: tuple[int, ...], shape_small: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(slice(n // 2 - m // 2, n // 2 - m // 2 + m) for n, m in zip(shape_big, shape_small))


def kspace_down(vol: np.ndarray) -> np.ndarray:
    """Keep the centre half of the centred k-space along every axis."""
    spectrum = np.fft.fftshift(np.fft.fftn(vol))
    small = tuple(n // 2 for n in vol.shape)
    crop = spectrum[_centre(vol.shape, small)]
    return (np.fft.ifftn(np.fft.ifftshift(crop)).real * (math.prod(small) / vol.size)).astype(np.float32)


def kspace_up(vol: np.ndarray) -> np.ndarray:
    """Zero-filled k-space interpolation x2: the ideal inverse of :func:`kspace_down` on its passband."""
    big = tuple(2 * n for n in vol.shape)
    spectrum = np.zeros(big, dtype=np.complex128)
    spectrum[_centre(big, vol.shape)] = np.fft.fftshift(np.fft.fftn(vol))
    return (np.fft.ifftn(np.fft.ifftshift(spectrum)).real * (math.prod(big) / vol.size)).astype(np.float32)


def psnr(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None = None) -> float:
    err = (pred - ref) ** 2
    mse = float(err[mask].mean() if mask is not None else err.mean())
    return 10 * math.log10(1.0 / mse)


def train(name: str, hr: np.ndarray, lq: np.ndarray, seconds: float, patch: int = 32, batch: int = 4):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    net = build_model(name, spatial_dims=3, in_channels=1, scale=2, convention="origin")
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    half = patch // 2
    hr_t, lq_t = torch.from_numpy(hr), torch.from_numpy(lq)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        lqs, gts = [], []
        while len(lqs) < batch:
            corner = [int(rng.integers(0, n - half + 1)) for n in lq.shape]
            gt = hr_t[tuple(slice(2 * c, 2 * c + patch) for c in corner)]
            if gt.mean() < 0.1:  # mostly background
                continue
            lqs.append(lq_t[tuple(slice(c, c + half) for c in corner)])
            gts.append(gt)
        loss = F.l1_loss(net(torch.stack(lqs)[:, None]), torch.stack(gts)[:, None])
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
    return net.eval(), steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, default=DATA / "colin27" / "antspy_ch2.nii.gz")
    parser.add_argument("--val", type=Path, default=DATA / "stroke" / "T1.nii.gz")
    parser.add_argument("--seconds", type=float, default=75.0, help="training wall time per network")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown table here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    hr_train = load(args.train)
    hr_val = load(args.val)
    lq_train, lq_val = kspace_down(hr_train), kspace_down(hr_val)
    mask = hr_val > 0.1
    lq_val_t = torch.from_numpy(lq_val)[None, None]

    rows = []
    trilinear = interpolate(lq_val_t, [2, 2, 2], "origin")[0, 0].numpy()
    rows.append(("trilinear (origin grid)", "-", psnr(trilinear, hr_val), psnr(trilinear, hr_val, mask)))
    fourier = kspace_up(lq_val)
    rows.append(("zero-filled k-space", "-", psnr(fourier, hr_val), psnr(fourier, hr_val, mask)))
    for name in NETWORKS:
        print(f"training {name} for {args.seconds:.0f} s...", file=sys.stderr, flush=True)
        net, steps = train(name, hr_train, lq_train, args.seconds)
        with torch.inference_mode():
            pred = net(lq_val_t)[0, 0].numpy()
        rows.append((name, str(steps), psnr(pred, hr_val), psnr(pred, hr_val, mask)))

    lines = [
        f"MRI k-space x2, train {args.train.name} {hr_train.shape}, validate {args.val.name} {hr_val.shape}, "
        f"{args.seconds:.0f} s training per network on {args.threads} CPU threads, one run",
        "",
        "| method | training steps | PSNR all (dB) | PSNR foreground (dB) |",
        "|---|---:|---:|---:|",
        *[f"| {n} | {s} | {a:.2f} | {f:.2f} |" for n, s, a, f in rows],
    ]
    emit(lines, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
