"""``upscale --adapt`` against the unadapted model on held-out volumes, with the time each took (issue 17).

For each high-resolution volume (default: the BRATS subject pat0006, of the ``mri_x2`` training
protocol, and the clinical MR from another scanner), the held-out pair is made as ``aesr-sci
evaluate`` makes it (:func:`aesr_sci.evaluation.held_out_case`: the model's own degradation, its
statistics fitted on the degraded input), and the script reports, in the voxels ``evaluate`` scores
(:func:`aesr_sci.evaluation.foreground`), in the same normalised units:

* zero-filled Fourier and cubic B-spline interpolation on the model's grid;
* the model as given (PSNR and SSIM) and the seconds its upscale took;
* the model fine-tuned on the degraded input for ``--minutes`` (:func:`aesr_sci.selfsupervised.adapt`,
  what ``upscale --adapt`` does), its gain over the unadapted model, the minutes the fine-tuning
  took against the budget, its steps, and the seconds of the adapted upscale.

The model folder is read, never written.

Usage::

    python benchmarks/adapt.py --model runs/mri_x2 [--minutes 3] [--data ../shared/data] [--report FILE]
    python benchmarks/adapt.py --model runs/mri_x2 --minutes 0.1 --report -      # smoke test
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _report import DATA, emit  # noqa: E402

DEFAULT_FILES = (
    "mri/brats/pat0006/T1c_subtrMeanDivStd.nii.gz",
    "mri/clinical/MR.nii.gz",
)
BASELINES = ("fourier", "cubic")


def _scored(case: Any, loaded: Any) -> tuple[dict[str, Any], float]:
    """The scores of ``loaded``'s upscale of the case's degraded input, and the seconds it took."""
    from aesr_sci.infer import upscale

    t0 = time.perf_counter()
    out = upscale(case.lq, loaded, device="cpu")
    seconds = time.perf_counter() - t0
    return case.score(case.normalize(out.data)), seconds


def run(path: Path, model: Path, minutes: float) -> str:
    """One row of the table: baselines, the model unadapted and adapted, on one held-out volume."""
    from aesr_sci import io
    from aesr_sci.checkpoint import load_model
    from aesr_sci.data.normalize import Normalizer
    from aesr_sci.evaluation import held_out_case
    from aesr_sci.infer import check_fit
    from aesr_sci.selfsupervised import adapt

    loaded = load_model(model, device="cpu")
    hr = io.read(path)
    check_fit(loaded, hr, str(path), thick_slices=False)
    normalizer = Normalizer.from_dict(loaded.normalization)
    case = held_out_case(hr, loaded.degradation, normalizer, path=str(path), statistics=loaded.statistics)
    base = {name: case.score(case.baseline(name))["psnr"] for name in BASELINES}
    plain, plain_s = _scored(case, loaded)
    t0 = time.perf_counter()
    adapted = adapt(loaded, case.lq, minutes=minutes, device="cpu")
    adapt_min = (time.perf_counter() - t0) / 60
    tuned, tuned_s = _scored(case, adapted)
    steps = adapted.config.get("adapted", {}).get("steps", "-")
    cells = [
        f"{path.parent.name}/{path.name}",
        " / ".join(f"{base[n]:.2f}" for n in BASELINES),
        f"{plain['psnr']:.2f} / {plain['ssim']:.4f}",
        f"{tuned['psnr']:.2f} / {tuned['ssim']:.4f}",
        f"{tuned['psnr'] - plain['psnr']:+.2f}",
        f"{tuned['psnr'] - max(base.values()):+.2f}",
        f"{adapt_min:.2f} / {minutes:g}",
        str(steps),
        f"{plain_s:.0f} / {tuned_s:.0f}",
    ]
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a trained mri_x2 run folder (read only)")
    parser.add_argument("--minutes", type=float, default=3.0, help="--adapt's fine-tuning budget (default 3)")
    parser.add_argument("--data", type=Path, default=DATA, help=f"the shared data folder (default {DATA})")
    parser.add_argument(
        "--files", nargs="+", default=None, help="volumes under --data (default: BRATS, clinical)"
    )
    parser.add_argument(
        "--report",
        default=str(HERE / "results" / "adapt.md"),
        help="where to write the table ('-': print only)",
    )
    args = parser.parse_args(argv)
    paths = [args.data / f for f in (args.files or DEFAULT_FILES)]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        sys.exit(f"adapt.py: no such file(s): {', '.join(missing)}: pass --data or set AESR_SCI_DATA")
    if args.minutes <= 0:
        sys.exit(f"adapt.py: --minutes must be > 0 (got {args.minutes})")
    lines = [
        f"`upscale --adapt {args.minutes:g}` against the unadapted model ({args.model}) on held-out volumes "
        "degraded as `aesr-sci evaluate` degrades them; PSNR (dB) and SSIM in evaluate's foreground, "
        "normalised units; times on this machine's CPU",
        "",
        "| file | Fourier / cubic (dB) | unadapted (dB / SSIM) | adapted (dB / SSIM) | gain of adapt | "
        "adapted - best baseline | adapt minutes / budget | steps | upscale s (unadapted / adapted) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [run(path, args.model, args.minutes) for path in paths]
    emit(lines, None if args.report == "-" else Path(args.report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
