"""Benchmark of ``selfsr --guide`` on a held-out Sentinel-2 scene under Wald's protocol (issue 17).

The 20 m bands of a scene (``*_20m.tif``) and their 10 m guide (``*_10m.tif``) are both degraded
by 2 as ``aesr-sci evaluate --guide`` degrades them
(:func:`aesr_sci.evaluation.held_out_guided_case`: DSen2's Gaussian of sigma 1/2 then 2 x 2 block
means), :func:`aesr_sci.selfsr` is run with the guide on the degraded pair alone (40 m bands,
20 m guide) within ``--minutes``, and its output is scored against the real 20 m bands with
evaluation's guided scoring (PSNR and SSIM of reflectance, RMSE in digital numbers, SAM in
degrees, overall and per band) beside bicubic and high-pass injection (HPF,
:mod:`aesr_sci.pansharpen`) on the same grid. The time it took is reported against the budget.

With ``--adapt MODEL`` (a guided model trained on other scenes, e.g. ``sentinel2_guided_x2`` by
``benchmarks/quality.py``), the model is scored as it is and after ``upscale --adapt``
(:func:`aesr_sci.adapt` with the guide: Wald's pairs of the same degraded pair, so the
fine-tuning never sees the reference either) for ``--minutes``, instead of selfsr from scratch.

``--tta`` and ``--consistency`` are the final inference's options (``upscale``'s and ``selfsr``'s);
``--variants`` scores the same trained model with each other combination of the two as well.

The default scene is the DSen2 T49JGM crop (no georeferencing: the two files are matched by
shape, as ``check_guide`` does), never seen by selfsr or the model's training in any other form.

Usage::

    python benchmarks/selfsr_guided.py --minutes 10 [--data ../shared/data/sat/sentinel2_T49JGM] [--out FILE]
    python benchmarks/selfsr_guided.py --minutes 10 --adapt runs/quality/sentinel2_guided_x2
    python benchmarks/selfsr_guided.py --minutes 10 --adapt runs/quality/sentinel2_guided_x2 --tta --consistency --variants
    python benchmarks/selfsr_guided.py --minutes 0.2          # smoke test
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _report import emit  # noqa: E402

DATA = HERE.parent.parent / "shared" / "data" / "sat" / "sentinel2_T49JGM"
SCALE = 2


def held_out(folder: Path):
    """The scene's guided case under Wald's protocol, scored in reflectance (digital numbers x 1e-4)."""
    from aesr_sci.data.degrade import Degradation
    from aesr_sci.data.normalize import Normalizer
    from aesr_sci.evaluation import held_out_guided_case
    from aesr_sci.guide import crop_to_guide, dsen2_sigma
    from aesr_sci.io import read

    target_path, guide_path = (next(folder.glob(f"*_{r}.tif")) for r in ("20m", "10m"))
    target, guide, _ = crop_to_guide(
        read(target_path), [read(guide_path)], SCALE, guide_names=[str(guide_path)]
    )
    degradation = Degradation("gaussian", (SCALE, SCALE), {"sigma": dsen2_sigma(SCALE)})
    return held_out_guided_case(
        target,
        guide,
        degradation,
        Normalizer("fixed", scale=1e-4),
        path=str(target_path),
        statistics={"policy": "valid"},
    )


def run(
    folder: Path,
    minutes: float,
    progress: bool,
    model: Path | None = None,
    variants: bool = False,
    **inference: bool,
) -> tuple[dict, float, int]:
    """The evaluation report of selfsr --guide (or of ``model`` before and after ``--adapt``) and
    the baselines on the scene, the seconds and steps of the training; ``inference``: ``tta`` and
    ``consistency`` for the final inference (the unadapted model is scored without them);
    ``variants``: the same trained model scored with the other combinations of the two as well."""
    import tempfile

    import aesr_sci
    from aesr_sci.evaluation import _best
    from aesr_sci.spatial import Image

    case = held_out(folder)
    # the degraded guide lies on the reference's grid: its metadata says so (as evaluate does)
    guide = Image(case.guide.data, case.meta.replace(band_names=case.guide.meta.band_names), case.guide.mask)
    baselines = {name: case.score(case.baseline(name)) for name in ("cubic", "hpf")}
    with tempfile.TemporaryDirectory() as keep:
        t0 = time.perf_counter()
        if model is None:
            out = aesr_sci.selfsr(
                case.lq, guide=guide, minutes=minutes, progress=progress, save_model=keep, **inference
            )
            steps, trained = int(out.meta.provenance.get("steps", 0)), keep
        else:
            baselines["unadapted"] = case.score(
                case.normalize(aesr_sci.upscale(case.lq, model, guide=guide).data)
            )
            t0 = time.perf_counter()
            trained = aesr_sci.adapt(str(model), case.lq, guide=guide, minutes=minutes, progress=progress)
            out = aesr_sci.upscale(case.lq, trained, guide=guide, **inference)
            steps = int(trained.config["adapted"]["steps"])
        seconds = time.perf_counter() - t0
        chosen = (inference.get("tta", False), inference.get("consistency", False))
        for tta, consistency in VARIANTS if variants else ():
            if (tta, consistency) != chosen:
                y = aesr_sci.upscale(case.lq, trained, guide=guide, tta=tta, consistency=consistency)
                baselines[_flags(tta, consistency) or "neither"] = case.score(case.normalize(y.data))
    entry = {"path": case.path, "model": case.score(case.normalize(out.data)), "baselines": baselines}
    classical = {k: v for k, v in baselines.items() if k in ("cubic", "hpf")}
    entry |= _best({**entry, "baselines": classical})
    report = {"guided": True, "scale": [SCALE, SCALE], "files": [entry], "mean": entry}
    return report, seconds, steps


VARIANTS = ((False, False), (True, False), (False, True), (True, True))  # (tta, consistency)


def _flags(tta: bool, consistency: bool) -> str:
    """The final inference's options as the command line writes them."""
    return " ".join(f for f, on in (("--tta", tta), ("--consistency", consistency)) if on)


def table(
    report: dict,
    seconds: float,
    steps: int,
    minutes: float,
    bands: list[str],
    model: Path | None = None,
    flags: str = "",
) -> list[str]:
    """The markdown table: each method overall and per band, then the time against the budget;
    ``flags``: the final inference's options, as the command line writes them."""
    entry = report["files"][0]
    what = "`selfsr --guide" if model is None else f"`upscale --adapt {minutes:g}"
    what = f"{what}{' ' + flags if flags else ''}`" + ("" if model is None else f" of {model}")
    lines = [
        f"{what} on {Path(entry['path']).name} (Wald's protocol: 40 m bands + 20 m guide -> 20 m)",
        "",
        "| method | PSNR dB | SSIM | RMSE (DN) | SAM deg | " + " | ".join(f"PSNR {b}" for b in bands) + " |",
        "| --- | ---: | ---: | ---: | ---: | " + " | ".join("---:" for _ in bands) + " |",
    ]
    methods = [("selfsr --guide" if model is None else "model + --adapt", entry["model"])]
    methods += [
        (f"the same, with {k}" if k != "neither" else "the same, neither option", v)
        for k, v in entry["baselines"].items()
        if k not in ("cubic", "hpf", "unadapted")
    ]
    if model is not None:
        methods.append(("model (unadapted)", entry["baselines"]["unadapted"]))
    methods += [("bicubic", entry["baselines"]["cubic"]), ("HPF", entry["baselines"]["hpf"])]
    for name, sc in methods:
        per_band = " | ".join(f"{v:.2f}" for v in sc["psnr_per_band"])
        lines.append(
            f"| {name} | {sc['psnr']:.2f} | {sc['ssim']:.4f} | {sc['rmse']:.1f} | {sc['sam']:.2f} | {per_band} |"
        )
    lines += [
        "",
        f"Gain over the best baseline ({entry['best_baseline']}): {entry['gain_db']:+.2f} dB; over bicubic: "
        f"{entry['model']['psnr'] - entry['baselines']['cubic']['psnr']:+.2f} dB. "
        f"Time{'' if model is None else ' of the fine-tuning'}: {seconds / 60:.2f} min for a budget of "
        f"{minutes:g} min ({steps} training steps).",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="folder with one *_20m.tif and its *_10m.tif")
    parser.add_argument(
        "--minutes", type=float, default=10.0, help="selfsr's budget (training and inference)"
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown table here")
    parser.add_argument("--progress", action="store_true", help="show selfsr's progress bar")
    parser.add_argument(
        "--adapt",
        type=Path,
        default=None,
        metavar="MODEL",
        help="score MODEL before and after upscale --adapt",
    )
    parser.add_argument(
        "--tta", action="store_true", help="final inference averaged over flips and rotations"
    )
    parser.add_argument(
        "--consistency",
        action="store_true",
        help="final inference projected so that degrading it gives the input",
    )
    parser.add_argument(
        "--variants",
        action="store_true",
        help="also score the same trained model with the other combinations of --tta and --consistency",
    )
    args = parser.parse_args()
    if not (list(args.data.glob("*_20m.tif")) and list(args.data.glob("*_10m.tif"))):
        parser.error(f"{args.data}: no *_20m.tif and *_10m.tif pair: give --data")
    from aesr_sci.io import read_meta

    report, seconds, steps = run(
        args.data,
        args.minutes,
        args.progress,
        args.adapt,
        args.variants,
        tta=args.tta,
        consistency=args.consistency,
    )
    meta, _ = read_meta(str(next(args.data.glob("*_20m.tif"))))
    bands = [n or f"band {i + 1}" for i, n in enumerate(meta.band_names or [""] * 6)]
    flags = _flags(args.tta, args.consistency)
    emit(table(report, seconds, steps, args.minutes, bands, args.adapt, flags), args.out)


if __name__ == "__main__":
    main()
