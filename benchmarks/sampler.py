"""Throughput and memory of the patch sampler (:class:`aesr_sci.data.dataset.PairDataset`).

Measures, in one run:

* patches per second for 3D NIfTI patches (64^3 from the BRATS T1c volumes, kspace x2), 2D
  GeoTIFF patches (128^2 from the Sentinel-2 20 m stack, gaussian x2) and guided 2D patches by
  Wald's protocol (96^2 from the aligned Sentinel-2 20 m stack with its 10 m guide, DSen2's
  degradation, as ``recipes/sentinel2_guided_x2.yaml``), with ``num_workers`` 0 and 2;
* the time of one forward and backward pass of a small 3D convolutional network on the same batch,
  to tell whether the sampler limits training on this machine;
* the peak Python-side memory (tracemalloc, which sees numpy buffers) and the process RSS while
  streaming patches from a synthetic GeoTIFF far larger than the cache budget (8000 x 8000 x 4
  uint16 written to a temporary folder).

Usage::

    python benchmarks/sampler.py [--data /work/shared/data] [--out results.md] [--batches 6]

Real data is read from ``--data`` (default ``$AESR_SCI_DATA`` or ``../shared/data``); the sections
that need it are skipped with a message when it is absent.
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch
from _report import emit
from torch.utils.data import DataLoader

from aesr_sci.data.dataset import PairDataset
from aesr_sci.data.degrade import Degradation

logger = logging.getLogger("benchmarks.sampler")

DEFAULT_DATA = Path(os.environ.get("AESR_SCI_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")  # pragma: no cover


def _throughput(ds: PairDataset, *, batch_size: int, workers: int) -> tuple[float, dict]:
    """Patches per second over one epoch, wall clock from creating the iterator (worker start-up included)."""
    loader = DataLoader(ds, batch_size=batch_size, num_workers=workers, shuffle=False)
    t0 = time.perf_counter()
    n, first = 0, None
    for batch in loader:
        first = batch if first is None else first
        n += batch["gt"].shape[0]
    return n / (time.perf_counter() - t0), first


def _train_step_time(batch: dict, *, repeats: int = 3) -> float:
    """Seconds for forward + backward of a small 3D/2D conv net (32 features, 4 convs, x2 upsampling)."""
    lq, gt = batch["lq"], batch["gt"]
    dims = lq.ndim - 2
    conv = torch.nn.Conv3d if dims == 3 else torch.nn.Conv2d
    c = lq.shape[1]
    scale = tuple(g // q for g, q in zip(gt.shape[2:], lq.shape[2:]))
    net = torch.nn.Sequential(
        conv(c, 32, 3, padding=1),
        torch.nn.ReLU(),
        conv(32, 32, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Upsample(scale_factor=scale, mode="trilinear" if dims == 3 else "bilinear"),
        conv(32, 32, 3, padding=1),
        torch.nn.ReLU(),
        conv(32, c, 3, padding=1),
    )
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = ((net(lq) - gt) ** 2 * batch["mask"]).mean()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return min(times)


def _write_big_geotiff(path: Path, size: int, bands: int) -> None:
    """A tiled, compressed uint16 raster written block by block (bounded memory)."""
    import rasterio
    from rasterio.transform import Affine
    from rasterio.windows import Window

    profile = {
        "driver": "GTiff",
        "height": size,
        "width": size,
        "count": bands,
        "dtype": "uint16",
        "crs": "EPSG:32618",
        "transform": Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4400000.0),
        "nodata": 0,
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "deflate",
    }
    rng = np.random.default_rng(0)
    block = 1024
    with rasterio.open(path, "w", **profile) as dst:
        for r in range(0, size, block):
            for c in range(0, size, block):
                h, w = min(block, size - r), min(block, size - c)
                yy, xx = np.mgrid[r : r + h, c : c + w]
                base = 2000 + 1000 * np.sin(yy / 150.0) * np.cos(xx / 210.0)
                tile = np.stack([base * (1 + 0.1 * b) for b in range(bands)])
                tile = tile + rng.integers(0, 50, size=tile.shape)
                if r == 0:
                    tile[:, : min(h, 100)] = 0  # a nodata band at the top
                dst.write(tile.astype(np.uint16), window=Window(c, r, w, h))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="real data folder")
    parser.add_argument("--out", type=Path, default=None, help="write the markdown table here")
    parser.add_argument("--batches", type=int, default=50, help="batches per timed epoch")
    parser.add_argument("--big-size", type=int, default=8000, help="side of the synthetic raster")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    torch.manual_seed(0)

    rows: list[str] = []
    header = [
        f"Sampler benchmark: torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} CPUs.",
        "",
        "| source | patch (HR) | degradation | batch | init (s) | patches/s, 0 workers | patches/s, 2 workers "
        "| net fwd+bwd per batch (s) | net patches/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    configs = [
        (
            "BRATS T1c NIfTI (4 x 240x240x155)",
            sorted(glob.glob(str(args.data / "mri/brats/pat000*/T1c_subtrMeanDivStd.nii.gz"))),
            dict(spatial_dims=3, patch_size=64, degradation=Degradation("kspace", (2, 2, 2))),
            4,
        ),
        (
            "Sentinel-2 20 m GeoTIFF (6 x 973x967)",
            sorted(glob.glob(str(args.data / "sat/sentinel2_18SVG/*_20m_*.tif"))),
            dict(spatial_dims=2, patch_size=128, degradation=Degradation("gaussian", (2, 2))),
            16,
        ),
        (
            "Sentinel-2 20 m guided by 10 m, Wald x2 (aligned 18SVG, 6 + 4 bands)",
            sorted(glob.glob(str(args.data / "sat/sentinel2_18SVG/aligned/*_20m.tif"))),
            dict(
                guides=sorted(glob.glob(str(args.data / "sat/sentinel2_18SVG/aligned/*_10m.tif"))),
                spatial_dims=2,
                patch_size=96,
                degradation=Degradation("gaussian", (2, 2), {"sigma": 0.5}),
                normalizer={"method": "fixed", "scale": 1e-4},
            ),
            8,
        ),
    ]
    mem_lines: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "big.tif"
        t0 = time.perf_counter()
        _write_big_geotiff(big, args.big_size, 4)
        logger.info(
            "wrote %s in %.1f s (%d MB on disk)", big, time.perf_counter() - t0, big.stat().st_size >> 20
        )
        raw_mb = args.big_size**2 * 4 * 2 / 2**20
        rss0 = _rss_mb()
        tracemalloc.start()
        t0 = time.perf_counter()
        ds = PairDataset(
            [big],
            spatial_dims=2,
            patch_size=128,
            degradation=Degradation("gaussian", (2, 2)),
            samples_per_epoch=64,
            max_cached_bytes=64 * 2**20,
            seed=0,
        )
        items = [ds[i] for i in range(len(ds))]
        elapsed = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rss1 = _rss_mb()
        assert all(item["gt"].shape == (4, 128, 128) for item in items)
        mem_lines = [
            "",
            "| streamed raster | raw size (MB) | cache budget (MB) | patches | time (s) | tracemalloc peak (MB) "
            "| RSS before -> after (MB) | peak RSS so far (MB) |",
            "|---|---|---|---|---|---|---|---|",
            f"| {args.big_size}x{args.big_size} x4 uint16, gaussian x2, 128^2 | {raw_mb:.0f} | 64 | {len(items)} | "
            f"{elapsed:.1f} (incl. init) | {peak / 2**20:.1f} | {rss0:.0f} -> {rss1:.0f} | "
            f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} (streaming runs first) |",
        ]
        logger.info(mem_lines[-1])

    for name, paths, kwargs, batch_size in configs:
        if not paths:
            logger.warning("skipping %s: not found under %s", name, args.data)
            continue
        t0 = time.perf_counter()
        ds = PairDataset(paths, samples_per_epoch=batch_size * args.batches, seed=0, **kwargs)
        init = time.perf_counter() - t0
        rate0, batch = _throughput(ds, batch_size=batch_size, workers=0)
        rate2, _ = _throughput(ds, batch_size=batch_size, workers=2)
        step = _train_step_time(batch)
        deg = kwargs["degradation"]
        patch = "x".join([str(kwargs["patch_size"])] * kwargs["spatial_dims"])
        rows.append(
            f"| {name} | {patch} | {deg.method} x{deg.scale[0]} | {batch_size} | {init:.2f} | {rate0:.1f} | "
            f"{rate2:.1f} | {step:.3f} | {batch_size / step:.1f} |"
        )
        logger.info(rows[-1])

    emit(header + rows + mem_lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
