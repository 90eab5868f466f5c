"""Training steps per second per recipe, float32 against the precision ``auto`` picks (a skeleton).

For every recipe in ``recipes/``: the recipe's network, batch size and patch size, random patches in
memory (no data loading), one step = forward, L1 loss, backward and an Adam update; steps per second
in float32 and under :func:`aesr_sci.infer.resolve_precision` ``("auto")`` (bfloat16 autocast with
channels-last on CPUs with native bfloat16 and on CUDA). The share of a real step spent waiting for
data needs the training loop's sampler and is left to the training engine's own timing (a TODO
for when ``train.py`` exposes its step).

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
    from aesr_sci.infer import autocast, channels_last, resolve_precision
    from aesr_sci.nets import build_model
    from aesr_sci.recipe import load_recipe

    recipe = load_recipe(recipe_path)
    data, model_section = recipe.data, recipe.model
    dims = data.spatial_dims
    scale, hr_patch = list(data.scale_tuple()), list(data.patch_tuple())
    if quick:
        hr_patch = [max(s * 4, 8) for s in scale]
    lq_patch = [p // s for p, s in zip(hr_patch, scale)]
    channels = data.channels or (6 if recipe_path.stem.startswith("sentinel2") else 1)  # the data decide
    torch.manual_seed(0)
    net = build_model(
        model_section.name, spatial_dims=dims, in_channels=channels, scale=scale, **model_section.kwargs()
    )
    generator = getattr(net, "generator", net).train()
    dtype, layout = resolve_precision(precision, "cpu")
    channels_last(generator, layout, dims)
    optimizer = torch.optim.Adam(generator.parameters(), lr=1e-4)
    batch = 2 if quick else recipe.train.batch_size
    lq = channels_last(torch.rand(batch, channels, *lq_patch), layout, dims)
    hr = torch.rand(batch, channels, *hr_patch)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast("cpu", dtype):
            loss = torch.nn.functional.l1_loss(generator(lq).float(), hr)
        loss.backward()
        optimizer.step()

    step()  # warm-up
    t = time.perf_counter()
    for _ in range(steps):
        step()
    label = f"{model_section.name}, batch {batch}, patch {'x'.join(map(str, hr_patch))}"
    return steps / (time.perf_counter() - t), label


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="tiny patches, two steps: a smoke test")
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
        fp32, label = _steps_per_second(recipe, "float32", args.steps, args.quick)
        auto, _ = _steps_per_second(recipe, "auto", args.steps, args.quick)
        lines.append(f"| {recipe.stem} | {label} | {fp32:.2f} | {auto:.2f} | {auto / fp32:.2f} |")
        print(lines[-1], flush=True)
    emit(lines, args.out)


if __name__ == "__main__":
    main()
