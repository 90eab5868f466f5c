"""Training steps per second per recipe, float32 against the precision ``auto`` picks.

For every recipe in ``recipes/``: the recipe's network, batch size and patch size, random patches in
memory (no data loading), through the training engine's own step (forward, loss, backward, Adam;
for a GAN the generator and the discriminator steps), in float32 and under ``train.precision:
auto`` (bfloat16 autocast with channels-last on CPUs with native bfloat16 and on CUDA). The share
of a real step spent waiting for data is what a run logs as ``data_wait`` in ``log.csv``.

Usage::

    python benchmarks/train_speed.py [--steps 20] [--out results.md]
    python benchmarks/train_speed.py --quick     # a smoke test: tiny patches, two steps
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from _report import emit

HERE = Path(__file__).resolve().parent


def _steps_per_second(recipe_path: Path, precision: str, steps: int, quick: bool) -> tuple[float, str]:
    """Steps per second of the training engine's own step (``aesr_sci.training.make_step``)."""
    from aesr_sci.nets import build_model
    from aesr_sci.recipe import load_recipe
    from aesr_sci.training import Placement, make_step, mixed_precision

    recipe = load_recipe(recipe_path)
    data, model_section = recipe.data, recipe.model
    scale, hr_patch = list(data.scale_tuple()), list(data.patch_tuple())
    if quick:
        hr_patch = [max(s * 4, 8) for s in scale]
    lq_patch = [p // s for p, s in zip(hr_patch, scale)]
    channels = data.channels or (6 if recipe_path.stem.startswith("sentinel2") else 1)  # the data decide
    torch.manual_seed(0)
    net = build_model(
        model_section.name,
        spatial_dims=data.spatial_dims,
        in_channels=channels,
        scale=scale,
        **model_section.kwargs(),
    )
    cpu = torch.device("cpu")
    step = make_step(net, recipe.train, placement=Placement(cpu), precision=mixed_precision(cpu, precision))
    step.schedule(steps, steps + 1)  # past a GAN's start fraction: generator and discriminator steps
    batch_size = 2 if quick else recipe.train.batch_size
    batch = {
        "lq": torch.rand(batch_size, channels, *lq_patch),
        "gt": torch.rand(batch_size, channels, *hr_patch),
        "mask": torch.ones(batch_size, 1, *hr_patch),
    }
    step(batch)  # warm-up
    t = time.perf_counter()
    for _ in range(steps):
        step(batch)
    label = f"{model_section.name}, batch {batch_size}, patch {'x'.join(map(str, hr_patch))}"
    return steps / (time.perf_counter() - t), label


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="tiny patches, two steps: a smoke test")
    parser.add_argument("--recipes", nargs="*", default=None, help="recipe names (default: all)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.steps = 2
    torch.set_num_threads(os.cpu_count() or 1)
    lines = [
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"`python benchmarks/train_speed.py{' --quick' if args.quick else ''}`",
        "",
        "| recipe | network, batch, patch | float32 steps/s | auto steps/s | auto / float32 |",
        "|---|---|---:|---:|---:|",
    ]
    for recipe in sorted((HERE.parent / "recipes").glob("*.yaml")):
        if args.recipes and recipe.stem not in args.recipes:
            continue
        if "guided" in recipe.stem or "pan" in recipe.stem:
            continue  # guided steps take a guide batch: measured with the guided training
        fp32, label = _steps_per_second(recipe, "float32", args.steps, args.quick)
        auto, _ = _steps_per_second(recipe, "auto", args.steps, args.quick)
        lines.append(f"| {recipe.stem} | {label} | {fp32:.2f} | {auto:.2f} | {auto / fp32:.2f} |")
        print(lines[-1], flush=True)
    emit(lines, args.out)


if __name__ == "__main__":
    main()
