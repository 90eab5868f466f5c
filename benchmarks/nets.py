"""Size, compute and CPU inference speed of every network at its defaults, against interpolation.

Two configurations: 3D MRI (1 channel, scale 2, a 96^3 low-resolution volume processed in 48^3
windows) and 2D multispectral (6 bands, scale 2, a 512x512 image processed whole). Throughput is
output voxels per second under ``torch.inference_mode`` with a fixed number of threads; the
(bi/tri)linear interpolation baseline is timed in the same run, so compare ratios rather than
absolute numbers across machines. ``gan`` runs its generator, the ``residual`` network, and is
not timed again.

Usage::

    python benchmarks/nets.py [--threads 2] [--out table.md]
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import time
from pathlib import Path

import torch
from _report import emit

from aesr_sci.nets import build_model, interpolate, model_names
from aesr_sci.nets.registry import describe_models, is_guided


def _windows(size: tuple[int, ...], window: int) -> list[tuple[slice, ...]]:
    starts = [range(0, n, window) for n in size]
    return [tuple(slice(s, s + window) for s in corner) for corner in itertools.product(*starts)]


def _time(fn, repeats: int, warmup=None) -> float:
    (warmup or fn)()  # allocations, oneDNN primitive creation
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bench(spatial_dims: int, channels: int, size: int, window: int, repeats: int) -> list[dict]:
    scale = [2] * spatial_dims
    torch.manual_seed(0)
    lq = torch.rand(1, channels, *([size] * spatial_dims))
    out_voxels = math.prod(2 * size for _ in range(spatial_dims))
    windows = _windows(lq.shape[2:], window)
    stats = {r["name"]: r for r in describe_models(spatial_dims=spatial_dims, in_channels=channels, scale=2)}

    def run(net, wins):
        def go():
            with torch.inference_mode():
                for win in wins:
                    net(lq[(slice(None), slice(None), *win)])

        return go

    rows = []
    interp = _time(lambda: interpolate(lq, scale, "fov"), repeats=max(repeats, 3))
    rows.append({"name": "interpolation", "parameters": 0, "macs": 0.0, "seconds": interp})
    timed: dict[str, float] = {}
    for name in sorted(model_names(), key=lambda n: n == "gan"):  # gan reuses residual's timing
        if is_guided(name):
            continue  # a guided network needs a guide on the output grid: not timed here yet
        print(f"{spatial_dims}D {name}...", file=sys.stderr, flush=True)
        if name == "gan":
            seconds = timed["residual"]
        else:
            net = build_model(name, spatial_dims=spatial_dims, in_channels=channels, scale=2).eval()
            seconds = _time(run(net, windows), repeats, warmup=run(net, windows[:1]))
            timed[name] = seconds
        rows.append(
            {
                "name": name,
                "parameters": stats[name]["parameters"],
                "macs": stats[name]["macs_per_output_voxel"],
                "seconds": seconds,
            }
        )
    for r in rows:
        r["throughput"] = out_voxels / r["seconds"]
        r["slowdown"] = r["seconds"] / interp
    rows.sort(key=lambda r: (r["name"] != "interpolation", r["name"]))
    return rows


def table(title: str, rows: list[dict]) -> str:
    lines = [
        f"**{title}**",
        "",
        "| network | parameters | MACs / output voxel | time (s) | output voxels / s | x interpolation time |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['parameters']:,} | {r['macs']:,.0f} | {r['seconds']:.3f} "
            f"| {r['throughput']:.3g} | {r['slowdown']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--repeats", type=int, default=1, help="timed passes per network (best is kept)")
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown table here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    header = f"torch {torch.__version__}, {args.threads} CPU threads, float32, inference_mode, one run"
    parts = [
        header,
        "",
        table(
            "3D, 1 channel, scale 2: 96^3 -> 192^3 in 48^3 windows",
            bench(3, 1, size=96, window=48, repeats=args.repeats),
        ),
        "",
        table(
            "2D, 6 bands, scale 2: 512^2 -> 1024^2 whole",
            bench(2, 6, size=512, window=512, repeats=args.repeats),
        ),
    ]
    emit(parts, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
