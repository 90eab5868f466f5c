"""Quality benchmark: train each shipped recipe on real data and score it on held-out files.

Files are split by subject (MRI) or scene (satellite), never by slices or tiles of one image. Each
recipe trains within a CPU budget (``--minutes``, overriding the recipe's ``train.max_minutes``),
then ``aesr_sci.evaluate`` degrades each held-out file with the model's own degradation, upscales
it and compares with nearest, linear, cubic, Lanczos (and zero-filled Fourier for k-space models)
interpolation on the same grid.

Guided recipes (``sentinel2_guided_x2``, ``sentinel2_guided_x6``) train with their guides
(``GUIDES``, file patterns beside each split's targets, in the same order) and are scored under
Wald's protocol against bicubic and the ``hpf`` and ``brovey`` pansharpening baselines, with RMSE
and the spectral angle. x2 trains on the aligned 18SVG product and holds out T49JGM. x6 trains on
the aligned 18SVG product too, but the only held-out scene with the same three 60 m bands (B1, B9,
B10) is T33UUU, whose source is LOSSY (coarsely re-quantised JP2s: T49JGM has only B1 and B9):
its x6 numbers check the pipeline and are no quality claim. ``landsat_pan_x2`` is not here: the
data holds no Landsat scene with its panchromatic band.

Usage::

    python benchmarks/quality.py --minutes 25 [--recipes mri_x2 sentinel2_x2] [--data ../shared/data]

Writes ``benchmarks/results/quality.md`` (the table), ``quality.json`` and one figure per recipe in
``docs/figures/``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

MRI_TRAIN = [
    "mri/brats/pat0003/T1c_subtrMeanDivStd.nii.gz",
    "mri/brats/pat0004/T1c_subtrMeanDivStd.nii.gz",
    "mri/brats/pat0005/T1c_subtrMeanDivStd.nii.gz",
    "mri/colin27/antspy_ch2.nii.gz",
]
MRI_VAL = ["mri/stroke/T1.nii.gz"]
MRI_TEST = ["mri/brats/pat0006/T1c_subtrMeanDivStd.nii.gz", "mri/clinical/MR.nii.gz"]
S2_TRAIN = ["sat/sentinel2_18SVG/*_20m_*.tif"]
S2_VAL = ["sat/sentinel2_T49JGM/*_20m.tif"]
S2_ALIGNED = "sat/sentinel2_18SVG/aligned/S2_T18SVG_20160112_L1C"
S2_LOSSY = "sat/sentinel2_T33UUU/S2A_MSIL1C_20170216_T33UUU"  # lossy: pipeline checks, no quality claims
SPLITS = {
    "mri_x2": (MRI_TRAIN, MRI_VAL, MRI_TEST),
    "mri_x2_gan": (MRI_TRAIN, MRI_VAL, MRI_TEST),
    "mri_slice_x4": (MRI_TRAIN, MRI_VAL, MRI_TEST),
    "sentinel2_x2": (S2_TRAIN, S2_VAL, S2_VAL),
    "sentinel2_x4": (S2_TRAIN, S2_VAL, S2_VAL),
    "landsat_x2": (
        ["sat/landsat8_224077/*_B2.TIF", "sat/landsat8_224077/*_B3.TIF"],
        ["sat/landsat8_224077/*_B4.TIF"],
        ["sat/small/L7_ETMs.tif"],
    ),
    # model selection on T33UUU (lossy, but only to pick the checkpoint), scored on T49JGM only
    "sentinel2_guided_x2": ([f"{S2_ALIGNED}_20m.tif"], [f"{S2_LOSSY}_20m.tif"], S2_VAL),
    "sentinel2_guided_x6": ([f"{S2_ALIGNED}_60m.tif"], [f"{S2_LOSSY}_60m.tif"], [f"{S2_LOSSY}_60m.tif"]),
}
GUIDES = {  # per split, one guide pattern (or list of patterns, finest first) per target pattern
    "sentinel2_guided_x2": (
        [f"{S2_ALIGNED}_10m.tif"],
        [f"{S2_LOSSY}_10m.tif"],
        ["sat/sentinel2_T49JGM/*_10m.tif"],
    ),
    "sentinel2_guided_x6": tuple(
        [[f"{prefix}_10m.tif", f"{prefix}_20m.tif"]] for prefix in (S2_ALIGNED, S2_LOSSY, S2_LOSSY)
    ),
}


def _guides(data: Path, name: str, split: int) -> list:
    """The guide files of split ``split`` (0 train, 1 validation, 2 test), one entry per target file."""
    if name not in GUIDES:
        return []
    entries = GUIDES[name][split]
    return [_expand(data, e) if isinstance(e, list) else _expand(data, [e])[0] for e in entries]


def _expand(data: Path, patterns: list[str]) -> list[str]:
    out: list[str] = []
    for p in patterns:
        matches = sorted(str(m) for m in data.glob(p))
        if not matches:
            sys.exit(f"{data / p}: no such file (is --data right?)")
        out += matches
    return out


def _copy_figure(report: dict, name: str, figures: Path | None) -> None:
    if figures is None:
        return
    figures.mkdir(parents=True, exist_ok=True)
    first = report["files"][0].get("figure")
    if first:
        shutil.copy(first, figures / f"{name}.png")


def run(
    name: str,
    data: Path,
    minutes: float,
    out_root: Path,
    results_dir: Path,
    evaluate_only: bool = False,
    extra: list[str] = (),
    figures: Path | None = ROOT / "docs" / "figures",
) -> dict:
    import aesr_sci
    from aesr_sci.evaluation import evaluate, format_table

    train_p, val_p, test_p = (_expand(data, s) for s in SPLITS[name])
    train_g, val_g, test_g = (_guides(data, name, i) for i in range(3))
    guided = [f"data.guides={json.dumps(train_g)}", f"data.val_guides={json.dumps(val_g)}"] if train_g else []
    recipe = ROOT / "recipes" / f"{name}.yaml"
    run_dir = out_root / name
    t0 = time.perf_counter()
    if evaluate_only:  # score an existing run again (e.g. after a change to the metrics)
        old = json.loads((results_dir / "quality.json").read_text())[name]
        report = evaluate(run_dir, test_p, figures=run_dir / "figures", overwrite=True, guides=test_g or None)
        print(format_table(report), flush=True)
        _copy_figure(report, name, figures)
        return {**old, "test": report}
    result = aesr_sci.train(
        str(recipe),
        out_dir=run_dir,
        overwrite=True,
        overrides=[
            f"data.paths={json.dumps(train_p)}",
            f"data.val_paths={json.dumps(val_p)}",
            f"train.max_minutes={minutes}",
            *guided,
            *extra,
        ],
    )
    train_s = time.perf_counter() - t0
    report = evaluate(run_dir, test_p, figures=run_dir / "figures", overwrite=True, guides=test_g or None)
    print(format_table(report), flush=True)
    _copy_figure(report, name, figures)
    return {
        "recipe": name,
        "minutes": minutes,
        "train_s": train_s,
        "steps": result.steps,
        "validation": result.best,
        "train_files": train_p,
        "val_files": val_p,
        "guide_files": [train_g, val_g, test_g] if train_g else None,
        "overrides": list(extra),
        "device": result.device,
        "test": report,
    }


def table(results: list[dict]) -> str:
    rows = [
        "| recipe | steps (CPU min) | validation: model / baseline (dB) | held-out: model PSNR | best baseline (dB) "
        "| gain (dB) | SSIM model / baseline | HF energy model / baseline | consistency |",
        "|---|---:|---|---:|---|---:|---|---|---:|",
    ]
    for r in results:
        v, m = r["validation"], r["test"]["mean"]
        best = m["best_baseline"]
        b = m["baselines"][best]
        rows.append(
            f"| `{r['recipe']}` | {r['steps']} ({r['train_s'] / 60:.1f}) | {v.get('val_psnr', float('nan')):.2f} / "
            f"{v.get('baseline_psnr', float('nan')):.2f} ({v.get('baseline', '')}) | {m['model']['psnr']:.2f} | "
            f"{best} {b['psnr']:.2f} | {m['gain_db']:+.2f} | {m['model']['ssim']:.3f} / {b['ssim']:.3f} | "
            f"{m['model']['hf_energy_ratio']:.2f} / {b['hf_energy_ratio']:.2f} | {m['model']['consistency']:.1e} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=Path(os.environ.get("AESR_SCI_DATA", ROOT.parent / "shared" / "data"))
    )
    parser.add_argument("--recipes", nargs="*", default=list(SPLITS))
    parser.add_argument("--minutes", type=float, default=25.0, help="training budget per recipe")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "quality")
    parser.add_argument("--evaluate-only", action="store_true", help="score existing runs again, no training")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="extra recipe override"
    )
    parser.add_argument("--results", type=Path, default=HERE / "results", help="where quality.md/json go")
    parser.add_argument(
        "--figures",
        type=Path,
        default=ROOT / "docs" / "figures",
        help="where each recipe's first figure is copied ('none': not copied, for side experiments)",
    )
    args = parser.parse_args()
    figures = None if str(args.figures) == "none" else args.figures
    if not args.data.is_dir():
        sys.exit(f"no data folder at {args.data}: pass --data or set AESR_SCI_DATA")
    results_dir = args.results
    results_dir.mkdir(parents=True, exist_ok=True)
    json_path = results_dir / "quality.json"
    previous = json.loads(json_path.read_text()) if json_path.exists() else {}
    for name in args.recipes:
        previous[name] = run(
            name, args.data, args.minutes, args.runs, results_dir, args.evaluate_only, args.set, figures
        )
        json_path.write_text(json.dumps(previous, indent=2))
        (results_dir / "quality.md").write_text(table([previous[k] for k in SPLITS if k in previous]) + "\n")
    print(table([previous[k] for k in SPLITS if k in previous]))


if __name__ == "__main__":
    main()
