"""Real thick-slice scans through ``aesr-sci selfsr``: the output grid checked, figures across the thick axis (issue 17).

These scans have no high-resolution truth, so there is no PSNR here (``benchmarks/selfsr.py``
measures quality on volumes with one). For each scan the script:

* reads the thick axis and the scale from the voxel sizes (:func:`aesr_sci.selfsr.slice_geometry`),
  runs :func:`aesr_sci.selfsr` within ``--minutes`` and writes the output into ``--outputs``;
* checks the grid of the file written, with nibabel, against the field-of-view-preserving rule
  computed here independently of the package: its affine against the input's zoomed by hand, and
  every thick slice's centre against the mean position of the thin slices it covers (the largest
  difference, in mm, is the table's "grid error");
* draws one PNG cut across the thick axis (the cut of :func:`aesr_sci.evaluation.choose_view`, with
  its orientation letters): the input on the output grid by nearest neighbour (its staircase),
  cubic B-spline interpolation, and ``selfsr``, same crop and window; the cut and the crop follow
  the scan's foreground, or its brain mask when one lies beside it (``*_desc-brain_mask.nii.gz``).

Usage::

    python benchmarks/selfsr_figures.py [--minutes 5] [--figures docs/figures] [--outputs runs/selfsr_figures]
    python benchmarks/selfsr_figures.py --minutes 0.1 --figures /tmp/selfsr_fig_smoke --report -   # smoke test
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _report import DATA, emit  # noqa: E402

DEFAULT_SCANS = (
    "mri/tcga_lgg/TCGA-FG-6692/T2_AX_TSE.nii.gz",
    "mri/fetal_mialsrtk/sub-01_run-1_T2w.nii.gz",
    "mri/anisotropic/chris_PD.nii.gz",
)


def scan_name(path: Path) -> str:
    """The scan's name in figure names: its file name without extensions."""
    return path.name.split(".")[0]


# ---------------------------------------------------------------------------------- the grid
def expected_affine(affine: np.ndarray, axis: int, scale: int) -> np.ndarray:
    """The field-of-view-preserving affine, by hand: thin voxel ``j`` along ``axis`` sits at input
    index ``(j + 0.5) / scale - 0.5``, every other axis unchanged."""
    to_input = np.eye(4)
    to_input[axis, axis] = 1.0 / scale
    to_input[axis, 3] = 0.5 / scale - 0.5
    return np.asarray(affine, np.float64) @ to_input


def grid_error(
    in_affine: np.ndarray, out_affine: np.ndarray, in_shape: tuple[int, ...], axis: int, scale: int
) -> float:
    """The largest distance in mm between the output grid and the rule: the output affine against
    :func:`expected_affine` at the corners of the output, and each thick slice's centre (at the
    corners of its plane) against the mean world position of the ``scale`` thin slices it covers."""
    out_shape = list(in_shape)
    out_shape[axis] *= scale
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in out_shape], indexing="ij")).reshape(3, -1)
    homog = np.vstack([corners, np.ones(corners.shape[1])])
    expected = expected_affine(in_affine, axis, scale)
    worst = float(np.abs((out_affine - expected) @ homog)[:3].max())
    for k in range(in_shape[axis]):
        thick = homog.copy()
        thick[axis] = k
        thin = [homog.copy() for _ in range(scale)]
        for i, t in enumerate(thin):
            t[axis] = k * scale + i
        mean = np.mean([out_affine @ t for t in thin], axis=0)
        worst = max(worst, float(np.abs(mean - in_affine @ thick)[:3].max()))
    return worst


# ------------------------------------------------------------------------------------ figure
def _crop(mask: np.ndarray, margin: float = 0.05) -> tuple[slice, slice]:
    """The bounding box of a 2D mask with a margin, the whole picture when the mask is empty."""
    if not mask.any():
        return slice(None), slice(None)
    box = []
    for ax in (0, 1):
        idx = np.flatnonzero(mask.any(axis=1 - ax))
        pad = int(margin * mask.shape[ax]) + 1
        box.append(slice(max(0, idx[0] - pad), min(mask.shape[ax], idx[-1] + pad + 1)))
    return box[0], box[1]


def brain_mask(path: Path) -> Path | None:
    """A brain mask beside the scan (BIDS ``*_desc-brain_mask.nii.gz``, as the fetal stacks have)."""
    mask = path.with_name(path.name.replace(".nii", "_desc-brain_mask.nii"))
    return mask if mask.is_file() else None


def draw(
    target: Path,
    img: Any,
    out: Any,
    geometry: Any,
    titles: tuple[str, str, str],
    heading: str,
    mask: np.ndarray | None = None,
) -> Path:
    """Three panels cut across the thick axis: input (nearest), cubic B-spline, ``selfsr``; cut and
    cropped where ``mask`` (on the input's grid; default the foreground) is largest."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from aesr_sci.baselines import upsample
    from aesr_sci.evaluation import _label_edges, choose_view, foreground
    from aesr_sci.fileutil import atomic_output

    data = np.asarray(img.data[:1], np.float32)
    volumes = [upsample(data, geometry.zoom, convention="fov", method=m) for m in ("nearest", "cubic")]
    volumes.append(np.asarray(out.data[:1], np.float32))
    if mask is None:
        mask = foreground(out.replace(data=volumes[0], mask=None))
    else:
        mask = (
            upsample(np.asarray(mask, np.float32)[None], geometry.zoom, convention="fov", method="nearest")[0]
            > 0
        )
    view = choose_view(out.meta, mask, geometry.zoom)
    rows, cols = _crop(view.picture(mask[None]))
    pictures = [view.picture(v)[rows, cols] for v in volumes]
    vmin, vmax = np.percentile(pictures[0], [0.5, 99.5])
    height = float(np.clip(4.6 * pictures[0].shape[0] * view.aspect / pictures[0].shape[1], 2.0, 8.0))
    fig = Figure(figsize=(15, height + 0.9), layout="constrained")
    FigureCanvasAgg(fig)
    for ax, picture, title in zip(fig.subplots(1, 3).flat, pictures, titles):
        ax.imshow(picture, cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest", aspect=view.aspect)
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        _label_edges(ax, view.edges)
    fig.suptitle(
        f"{heading}, cut at index {view.index} of axis {view.cut_axis} (across thick axis {geometry.axis})"
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(target, overwrite=True) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    return target


# ------------------------------------------------------------------------------------- a scan
def run(path: Path, minutes: float, figures: Path, outputs: Path) -> str:
    """One row of the table, after ``selfsr``, the written output's grid check and the figure."""
    import nibabel as nib

    import aesr_sci
    from aesr_sci import io
    from aesr_sci.selfsr import slice_geometry

    name = scan_name(path)
    img = io.read(path)
    geometry = slice_geometry(img.meta, name=str(path))
    t0 = time.perf_counter()
    out = aesr_sci.selfsr(img, minutes=minutes)
    taken = (time.perf_counter() - t0) / 60
    written = io.write(out, outputs / f"{name}_selfsr.nii.gz", overwrite=True)
    in_file, out_file = nib.load(path), nib.load(written)
    shape = tuple(in_file.shape[:3])
    expected_shape = tuple(n * z for n, z in zip(shape, geometry.zoom))
    if tuple(out_file.shape[:3]) != expected_shape:
        raise SystemExit(f"{path}: selfsr wrote shape {out_file.shape}, expected {expected_shape}")
    error = grid_error(in_file.affine, out_file.affine, shape, geometry.axis, geometry.scale)
    spacing = " x ".join(f"{v:.3g}" for v in geometry.spacing)
    steps = out.meta.provenance.get("steps", "-")
    thin = geometry.spacing[geometry.axis] / geometry.scale
    titles = (
        f"input, nearest neighbour ({geometry.spacing[geometry.axis]:.3g} mm slices)",
        f"cubic B-spline ({thin:.3g} mm)",
        f"selfsr ({thin:.3g} mm; {taken:.1f} min, {steps} training steps)",
    )
    brain = brain_mask(path)
    heading = f"{path.name}: {spacing} mm" + (f", cut and cropped in {brain.name}" if brain else "")
    mask = None if brain is None else np.asarray(nib.load(brain).dataobj) > 0
    draw(figures / f"selfsr_{name}.png", img, out, geometry, titles, heading, mask)
    cells = [
        f"{path.parent.name}/{path.name}",
        f"{spacing} mm",
        f"{geometry.scale} (axis {geometry.axis})",
        " x ".join(map(str, out_file.shape[:3])),
        f"{error:.1e}",
        f"{taken:.2f} / {minutes:g}",
        str(steps),
    ]
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="selfsr's budget per scan (default 5)")
    parser.add_argument("--data", type=Path, default=DATA, help=f"the shared data folder (default {DATA})")
    parser.add_argument(
        "--scans", nargs="+", default=None, help="thick-slice scans under --data (default: three)"
    )
    parser.add_argument("--figures", type=Path, default=HERE.parent / "docs" / "figures", help="PNG folder")
    parser.add_argument("--outputs", type=Path, default=Path("runs/selfsr_figures"), help="selfsr outputs")
    parser.add_argument(
        "--report",
        default=str(HERE / "results" / "selfsr_figures.md"),
        help="where to write the table ('-': print only)",
    )
    args = parser.parse_args(argv)
    paths = [args.data / s for s in (args.scans or DEFAULT_SCANS)]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        sys.exit(
            f"selfsr_figures.py: no such file(s): {', '.join(missing)}: pass --data or set AESR_SCI_DATA"
        )
    if args.minutes <= 0:
        sys.exit(f"selfsr_figures.py: --minutes must be > 0 (got {args.minutes})")
    args.outputs.mkdir(parents=True, exist_ok=True)
    lines = [
        f"Real thick-slice scans through `aesr-sci selfsr` ({args.minutes:g} min each): the output grid "
        "against the field-of-view-preserving rule (largest error in mm; figures docs/figures/selfsr_<scan>.png)",
        "",
        "| scan | voxel size in | scale read | output shape | grid error (mm) | minutes / budget | steps |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [run(path, args.minutes, args.figures, args.outputs) for path in paths]
    emit(lines, None if args.report == "-" else Path(args.report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
