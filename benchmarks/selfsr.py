"""Self-supervised super-resolution of thick-slice volumes with a known truth, against cubic B-spline (issue 17).

For each ``*_thick<F>.nii.gz`` that ``benchmarks/selfsr_data.py`` wrote into FOLDER (beside its
``*_truth.nii.gz``), the script runs :func:`aesr_sci.selfsr` with ``--minutes`` (training and the
final inference) and reports, inside the head foreground of the truth (as ``selfsr_data.py``
scores it):

* the PSNR of cubic B-spline interpolation on the same grid (``scipy.ndimage.zoom``, order 3);
* the PSNR of ``selfsr`` and its gain over cubic (the target: +3 dB), its wall-clock time against
  the budget (the target: within 10 %), the steps it trained and the slice profile it estimated;
* with ``--supervised DIR`` (a trained ``mri_slice_x4`` model folder), that model's PSNR too;
* with ``--oracle``, a ceiling rather than a method: the same network, trained for the same number
  of steps with the same schedule, on pairs cut from the truth's own planes across the thick axis
  (the thick volume's planes as inputs, the truth's as targets: the very pairs it is scored on),
  then applied as ``selfsr`` applies its model. What ``selfsr`` misses of it is what learning from
  the in-plane axes instead of the thick one costs; what the ceiling misses of +3 dB is what this
  network and this many steps cannot reach even told the answer.

Usage::

    python benchmarks/selfsr_data.py /tmp/thick                     # once: the volumes
    python benchmarks/selfsr.py /tmp/thick --minutes 10 [--supervised runs/mri_slice_x4] [--oracle]
    python benchmarks/selfsr.py /tmp/thick --minutes 0.1 --files antspy_ch2 --report -   # smoke test
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _report import emit  # noqa: E402
from selfsr_data import foreground  # noqa: E402


def _cubic(thick: np.ndarray, zoom: tuple[int, ...]) -> np.ndarray:
    from scipy import ndimage

    return ndimage.zoom(thick, zoom, order=3, mode="reflect", grid_mode=True)


class TruthPairs:
    """The oracle's pairs: patches of the planes across the thick axis, the thick volume's as inputs
    and the truth's as targets, half from each orientation, normalised as ``selfsr`` normalises
    (the statistics of :class:`aesr_sci.selfsr.InPlanePairs` on the thick volume); the item format of
    :class:`~aesr_sci.selfsr.InPlanePairs`, drawn the same way (seeded per epoch and item, patches in
    the foreground, starts on multiples of the scale, random flips)."""

    def __init__(self, thick, truth, geometry, profile, patch: int = 48, samples: int = 1000) -> None:
        from aesr_sci.selfsr import InPlanePairs

        own = InPlanePairs(thick, geometry, profile, patch_size=patch, samples_per_epoch=samples)
        self.normalizer, self.stats, self.epoch = own.normalizer, own.stats, 0
        self.scale, self.patch, self.samples = geometry.scale, own.patch_size, samples
        axis = 1 + geometry.axis
        hr = np.moveaxis(np.asarray(truth.data, np.float32), axis, 1)  # (C, thick axis, A, B)
        lq = np.moveaxis(np.asarray(thick.data, np.float32), axis, 1)
        fg = foreground(hr[0])
        # per orientation: planes (N, C, thick axis, other in-plane axis)
        self.hr = [np.ascontiguousarray(np.moveaxis(hr, k, 0)) for k in (2, 3)]
        self.lq = [np.ascontiguousarray(np.moveaxis(lq, k, 0)) for k in (2, 3)]
        self.fg = [np.moveaxis(fg, k - 1, 0) for k in (2, 3)]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.samples

    def __getitem__(self, index: int) -> dict:
        import torch

        rng = np.random.default_rng([0, self.epoch, int(index)])
        d, (p, q), s = int(rng.integers(2)), self.patch, self.scale
        n, _, rows, cols = self.hr[d].shape
        best = (-1.0, 0, 0, 0)
        for _ in range(10):
            t, a, b = (
                int(rng.integers(n)),
                s * int(rng.integers((rows - p) // s + 1)),
                int(rng.integers(cols - q + 1)),
            )
            best = max(best, (float(self.fg[d][t, a : a + p, b : b + q].mean()), t, a, b))
            if best[0] >= 0.5:
                break
        _, t, a, b = best
        gt = self.normalizer.apply(self.hr[d][t, :, a : a + p, b : b + q], self.stats)
        lq = self.normalizer.apply(self.lq[d][t, :, a // s : (a + p) // s, b : b + q], self.stats)
        flips = tuple(1 + k for k in range(2) if rng.integers(2))
        gt, lq = (torch.from_numpy(np.ascontiguousarray(np.flip(x, flips), np.float32)) for x in (gt, lq))
        location = torch.tensor([d, t, a, b], dtype=torch.int64)  # orientation, plane, starts
        return {"lq": lq, "gt": gt, "mask": torch.ones(1, p, q), "location": location}


def oracle(thick, truth, model_dir: Path, steps: int) -> np.ndarray:
    """The ceiling: ``selfsr``'s network (from its saved ``model.json``) trained afresh for ``steps``
    steps on :class:`TruthPairs`, then applied to the thick volume as ``selfsr`` applies it."""
    import torch

    from aesr_sci.checkpoint import LoadedModel, load_model
    from aesr_sci.infer import upscale
    from aesr_sci.nets import model_from_config
    from aesr_sci.selfsr import SliceProfile, slice_geometry
    from aesr_sci.training import fit

    saved = load_model(model_dir)
    profile = SliceProfile.from_dict(saved.config["selfsr"]["profile"])
    pairs = TruthPairs(thick, truth, slice_geometry(thick.meta), profile)
    torch.manual_seed(0)
    result = fit(model_from_config(saved.config["network"]), pairs, minutes=None, steps=steps)
    return upscale(thick, LoadedModel(result.network, saved.config, model_dir)).data[0]


def run(thick_path: Path, minutes: float, supervised: Path | None, with_oracle: bool = False) -> str:
    """One row of the table: cubic, selfsr (and the supervised model) against the truth."""
    import aesr_sci
    from aesr_sci import io
    from aesr_sci.errors import AesrError
    from aesr_sci.metrics import psnr
    from aesr_sci.selfsr import slice_geometry

    stem = thick_path.name.split("_thick")[0]
    thick, truth = io.read(thick_path), io.read(thick_path.with_name(f"{stem}_truth.nii.gz"))
    reference = np.asarray(truth.data[0], np.float32)
    mask = foreground(reference)
    geometry = slice_geometry(thick.meta)
    cubic = psnr(reference, _cubic(np.asarray(thick.data[0], np.float32), geometry.zoom), mask=mask)
    model_dir = Path(tempfile.mkdtemp(prefix="selfsr_model_"))
    t0 = time.perf_counter()
    out = aesr_sci.selfsr(thick, minutes=minutes, save_model=model_dir, overwrite=True)
    seconds = time.perf_counter() - t0
    if out.spatial_shape != reference.shape:
        raise SystemExit(f"{thick_path}: selfsr wrote {out.spatial_shape}, the truth is {reference.shape}")
    ours = psnr(reference, out.data[0], mask=mask)
    provenance = out.meta.provenance
    fitted = provenance.get("slice_profile") or {}
    profile = f"{fitted.get('shape')} {fitted.get('fwhm', 0):.2f} ({fitted.get('source')})" if fitted else "-"
    cells = [
        stem,
        f"{cubic:.2f}",
        f"{ours:.2f}",
        f"{ours - cubic:+.2f}",
        f"{seconds / 60:.2f} / {minutes:g}",
        str(provenance.get("steps", "-")),
        profile,
    ]
    if supervised is not None:
        try:
            sup = psnr(reference, aesr_sci.upscale(thick, supervised).data[0], mask=mask)
            cells.append(f"{sup:.2f} ({sup - cubic:+.2f})")
        except AesrError as exc:  # e.g. a thick axis the supervised model does not take
            cells.append(f"n/a ({exc})")
    if with_oracle:
        ceiling = psnr(reference, oracle(thick, truth, model_dir, int(provenance["steps"])), mask=mask)
        cells.append(f"{ceiling:.2f} ({ceiling - cubic:+.2f})")
    shutil.rmtree(model_dir, ignore_errors=True)
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="the folder benchmarks/selfsr_data.py wrote")
    parser.add_argument("--minutes", type=float, default=10.0, help="selfsr's budget per volume (default 10)")
    parser.add_argument("--supervised", type=Path, default=None, help="a trained mri_slice_x4 model folder")
    parser.add_argument("--files", nargs="+", default=None, help="volume stems to run (default: all)")
    parser.add_argument(
        "--report",
        default=str(HERE / "results" / "selfsr.md"),
        help="where to write the table ('-': print only)",
    )
    parser.add_argument(
        "--oracle",
        action="store_true",
        help="also train the same network for the same steps on the truth's own pairs (a ceiling)",
    )
    args = parser.parse_args(argv)
    thick = sorted(args.folder.glob("*_thick*.nii.gz"))
    if args.files:
        thick = [p for p in thick if p.name.split("_thick")[0] in args.files]
    if not thick:
        print(
            f"selfsr.py: no *_thick*.nii.gz in {args.folder}: run benchmarks/selfsr_data.py first",
            file=sys.stderr,
        )
        return 2
    header = "| volume | cubic (dB) | selfsr (dB) | gain | minutes / budget | steps | slice profile (fine voxels) |"
    rule = "|---|---|---|---|---|---|---|"
    if args.supervised is not None:
        header, rule = header + " supervised (dB) |", rule + "---|"
    if args.oracle:
        header, rule = header + " oracle: trained on the truth's pairs (dB) |", rule + "---|"
    lines = [
        f"Self-supervised super-resolution (aesr-sci selfsr, {args.minutes:g} min per volume) against cubic "
        "B-spline on the same grid; PSNR inside the truth's head foreground",
        "",
        header,
        rule,
    ]
    lines += [run(path, args.minutes, args.supervised, args.oracle) for path in thick]
    emit(lines, None if args.report == "-" else Path(args.report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
