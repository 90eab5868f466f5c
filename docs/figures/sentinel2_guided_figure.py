"""Before and after figure of guided Sentinel-2 super-resolution for the GIS guide.

Upscales a product's 20 m bands with a trained ``sentinel2_guided_x2`` model and its 10 m bands as
the guide (the real 10 m output, no reference exists at that resolution), and draws a crop: the
true-colour composite of the 10 m bands (B4, B3, B2) for context, then one 20 m band (B5 by default)
before (the 20 m pixels, nearest neighbour on the 10 m grid), as bicubic interpolation gives it, and
as the model gives it::

    python docs/figures/sentinel2_guided_figure.py MODEL SCENE_20m.tif SCENE_10m.tif [--band B5]

The PNG is written beside this file as ``sentinel2_guided_before_after.png``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _stretch(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip((x - lo) / max(hi - lo, 1e-6), 0, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("target", help="the 20 m bands")
    parser.add_argument("guide", help="the 10 m bands (B2, B3, B4, B8)")
    parser.add_argument("--band", default="B5")
    parser.add_argument("--crop", type=int, default=240, help="side of the crop in 10 m pixels")
    args = parser.parse_args()

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from scipy import ndimage

    import aesr_sci

    target, guide = aesr_sci.read(args.target), aesr_sci.read(args.guide)
    sharp = aesr_sci.upscale(target, args.model, guide=guide)
    names = list(target.meta.band_names or [])
    b = names.index(args.band) if args.band in names else 0
    low = np.asarray(target.data[b], np.float32)
    nearest = np.kron(low, np.ones((2, 2), np.float32))
    cubic = ndimage.zoom(low, 2, order=3, mode="reflect", grid_mode=True)
    model = np.asarray(sharp.data[b], np.float32)
    h, w = model.shape
    c = args.crop
    r0, c0 = (h - c) // 2, (w - c) // 2
    crop = (slice(r0, r0 + c), slice(c0, c0 + c))
    gnames = list(guide.meta.band_names or ["B2", "B3", "B4", "B8"])
    rgb = np.stack(
        [
            np.asarray(guide.data[gnames.index(k) if k in gnames else i], np.float32)
            for i, k in ((2, "B4"), (1, "B3"), (0, "B2"))
        ],
        -1,
    )[crop]
    rgb = np.stack([_stretch(ch, *np.percentile(ch, [2, 98])) for ch in np.moveaxis(rgb, -1, 0)], -1)
    lo, hi = np.percentile(model[crop], [1, 99])
    panels = [
        ("true colour, 10 m (B4, B3, B2): the guide", rgb),
        (f"{names[b] if names else 'band 1'} at 20 m (input)", _stretch(nearest[crop], lo, hi)),
        (f"{names[b] if names else 'band 1'}, bicubic to 10 m", _stretch(cubic[crop], lo, hi)),
        (f"{names[b] if names else 'band 1'}, guided model to 10 m", _stretch(model[crop], lo, hi)),
    ]
    fig = Figure(figsize=(16, 4.4))
    FigureCanvasAgg(fig)
    for i, (title, img) in enumerate(panels):
        ax = fig.add_subplot(1, 4, i + 1)
        ax.imshow(img, cmap=None if img.ndim == 3 else "gray", interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()
    fig.suptitle(f"{Path(args.target).name}: {c} x {c} pixels at 10 m ({c * 10 / 1000:g} km)", fontsize=11)
    fig.tight_layout()
    out = HERE / "sentinel2_guided_before_after.png"
    fig.savefig(out, dpi=90)
    print(out)


if __name__ == "__main__":
    main()
