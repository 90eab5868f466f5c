"""The training engine behind ``aesr-sci train RECIPE``.

One run directory holds everything about an experiment::

    runs/mri_x2/
      recipe.yaml          the resolved recipe (after --set overrides, paths expanded)
      run.json             package version, git commit, device, train/validation files
      log.csv              step, learning rate, loss, validation PSNR/SSIM, baseline PSNR, time
      model/model.json     what inference needs (network, scale, degradation, normalisation...)
      model/model.safetensors   the best weights (by validation PSNR)
      state.json, state.safetensors   the last checkpoint, for --resume

Determinism: the patch drawn for global sample ``g`` depends only on the seed and ``g``, and the
learning rate only on the step, so an interrupted run resumed with ``--resume`` reaches the same
weights as an uninterrupted one (on the same device and thread count). A wall-clock budget
(``train.max_minutes``) fixes the number of steps once, after timing the first steps, and that
number is stored in the checkpoint.

Distributed training uses PyTorch's own launcher: ``torchrun --nproc_per_node N -m aesr_sci.cli
train RECIPE``. Each rank draws its own share of the global sample indices, gradients are averaged
by DistributedDataParallel, and rank 0 validates and writes files.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from . import __version__
from .checkpoint import load_state, save_model, save_state, write_json
from .data.feed import build_dataset as _dataset
from .data.feed import build_degradation as _degradation
from .data.feed import build_normalizer as _normalizer
from .data.feed import check_content, check_data_files, resolve_files
from .data.positions import GlobalIndex as _GlobalIndex
from .data.positions import StepSampler as _StepSampler
from .errors import DataError, MismatchError, OutputExistsError
from .fileutil import atomic_output
from .recipe import Recipe, load_recipe

__all__ = ["train", "check_data", "check_data_files", "TrainResult", "resolve_files"]

log = logging.getLogger(__name__)

_WARMUP_STEPS = 5  # steps not timed when fitting the budget (file loading, first batches)
_TIMED_STEPS = 20  # steps timed to fit train.max_minutes
_RUN_FILES = ("recipe.yaml", "run.json", "log.csv", "state.json", "state.safetensors", "model")
_LOG_FIELDS = [
    "step",
    "lr",
    "loss",
    "val_psnr",
    "val_ssim",
    "baseline",
    "baseline_psnr",
    "gain_db",
    "elapsed_s",
]


def check_data(recipe: Recipe | str) -> str:
    """Validate the recipe's data (files exist and read whole, band counts agree, sizes fit the
    patch, no file empty or constant) and its model."""
    recipe = load_recipe(recipe) if not isinstance(recipe, Recipe) else recipe
    train_files, val_files = resolve_files(recipe)
    summary = check_data_files(recipe, train_files, val_files)
    # the pixels too (guides included): a truncated file fails now, not in an hour
    check_content([*train_files, *val_files, *summary["guide_files"]])
    channels = int(summary["channels"])
    _build_network(recipe, channels, summary["guide_channels"])  # a wrong model name or argument fails here
    return f"{len(train_files)} training and {len(val_files)} validation file(s), {channels} channel(s)"


def _build_network(recipe: Recipe, channels: int, guide_channels: int = 0) -> torch.nn.Module:
    from .nets import build_model

    return build_model(
        recipe.model.name,
        spatial_dims=recipe.data.spatial_dims,
        in_channels=channels,
        guide_channels=guide_channels or None,
        scale=list(recipe.data.scale_tuple()),
        convention=_degradation(recipe).convention,
        **recipe.model.kwargs(),
    )


# ---------------------------------------------------------------------------------- helpers
def _lr_at(step: int, total: int, base: float) -> float:
    """Linear warm-up over 2 % of the steps, then cosine decay to 1 % of ``base``."""
    warm = max(1, int(0.02 * total))
    if step < warm:
        return base * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    return base * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def _content_loss(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, kind: str) -> torch.Tensor:
    diff = pred - gt
    if kind == "l1":
        err = diff.abs()
    elif kind == "mse":
        err = diff * diff
    else:  # charbonnier
        err = torch.sqrt(diff * diff + 1e-6)
    weight = mask.expand_as(err)
    return (err * weight).sum() / weight.sum().clamp_min(1.0)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _prepare_run_dir(out: Path, *, resume: bool, overwrite: bool) -> None:
    if resume:
        if not (out / "state.json").is_file():
            raise OutputExistsError(f"nothing to resume in {out}: no state.json there (run without --resume)")
        return
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise OutputExistsError(
                f"{out} is not empty: pass --resume to continue that run, --overwrite to start it again, "
                "or choose another --out"
            )
        for name in _RUN_FILES:  # only what a run writes: never a user's other files
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)


@dataclass
class _ValItem:
    case: Any  # aesr_sci.evaluation.Case: the reference, mask and PSNR peak, as evaluate scores them
    lq: torch.Tensor  # (1, C, *S) normalised: case.inputs
    baseline: np.ndarray  # (C, *S*s) normalised


@dataclass
class TrainResult:
    """What a training run produced."""

    run_dir: Path
    steps: int
    minutes: float
    best_step: int | None
    best: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    keep: str = "best"

    def summary(self) -> str:
        """One paragraph for the terminal."""
        lines = [
            f"model: {self.run_dir / 'model'}  ({self.steps} steps in {self.minutes:.1f} min on {self.device})"
        ]
        if self.best:
            b = self.best
            lines.append(
                f"validation: model {b['val_psnr']:.2f} dB (SSIM {b['val_ssim']:.3f}) vs {b['baseline']} "
                f"{b['baseline_psnr']:.2f} dB: {b['gain_db']:+.2f} dB ({self.keep} at step {self.best_step})"
            )
        return "\n".join(lines)


# ------------------------------------------------------------------------------------ train
def train(
    recipe: Recipe | str | os.PathLike[str] | dict[str, Any],
    *,
    out_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    device: str | None = None,
    overwrite: bool = False,
    progress: bool = False,
    overrides: Sequence[str] = (),
) -> TrainResult:
    """Train a super-resolution model from a recipe.

    Parameters
    ----------
    recipe
        A recipe file, mapping or :class:`~aesr_sci.recipe.Recipe`.
    out_dir
        Run directory (default ``runs/<recipe name>``).
    resume
        Continue the interrupted run in ``out_dir`` from its last checkpoint.
    device
        ``cpu``, ``cuda``, ``cuda:N``; default CUDA when available.
    overwrite
        Start again in a non-empty ``out_dir`` (only the files a run writes are removed).
    progress
        Show a progress bar.
    overrides
        ``KEY=VALUE`` recipe overrides.

    Returns
    -------
    TrainResult
        The run directory, the steps and time taken, and the best validation scores.

    Raises
    ------
    RecipeError, DataError, OutputExistsError
        Before training starts, for every problem found in the recipe, the data or the run directory.

    Examples
    --------
    >>> result = train("recipes/mri_x2.yaml", overrides=["train.max_minutes=2"])  # doctest: +SKIP
    >>> print(result.summary())  # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    from .infer import predict, select_device

    recipe = (
        load_recipe(recipe, overrides=overrides) if overrides or not isinstance(recipe, Recipe) else recipe
    )
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    distributed = world > 1
    dev = select_device(device)
    if distributed:
        import torch.distributed as dist

        local = int(os.environ.get("LOCAL_RANK", "0"))
        if dev.type == "cuda" and local >= torch.cuda.device_count():
            raise MismatchError(
                f"torchrun started process {local} on a node with {torch.cuda.device_count()} GPU(s): "
                "use --nproc_per_node at most the number of GPUs, or --device cpu"
            )
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        if dev.type == "cuda":
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(dev)
    if dev.type == "cpu" and not distributed:
        torch.set_num_threads(max(1, os.cpu_count() or 1))
    recipe = recipe.for_device(dev.type)
    t_cfg, d_cfg = recipe.train, recipe.data
    out = Path(out_dir) if out_dir is not None else Path("runs") / recipe.name

    # ---- everything that can be wrong is checked before any training
    train_files, val_files = resolve_files(recipe)
    summary = check_data_files(recipe, train_files, val_files)
    channels = int(summary["channels"])
    _build_network(recipe, channels)  # a wrong model name or argument fails before the run directory is made
    if rank == 0:
        _prepare_run_dir(out, resume=resume, overwrite=overwrite)
    if distributed:
        torch.distributed.barrier()

    torch.manual_seed(t_cfg.seed)
    network = _build_network(recipe, channels)  # rebuilt after seeding: same init on every rank and run
    train_set = _dataset(recipe, train_files, mode="random", seed=t_cfg.seed)
    val_items = _validation_items(recipe, val_files[: t_cfg.val_max_files]) if rank == 0 else []

    from .nets.gan import GANModel

    is_gan = isinstance(network, GANModel)
    generator = network.generator if is_gan else network
    generator.to(dev)
    if dev.type == "cuda" and d_cfg.spatial_dims == 2:
        generator.to(memory_format=torch.channels_last)
    opt_g = torch.optim.Adam(generator.parameters(), lr=t_cfg.lr, weight_decay=t_cfg.weight_decay)
    modules: dict[str, torch.nn.Module] = {"generator": generator}
    optimizers: dict[str, torch.optim.Optimizer] = {"generator": opt_g}
    if is_gan:
        disc = network.discriminator.to(dev)
        opt_d = torch.optim.Adam(disc.parameters(), lr=t_cfg.adversarial.lr, betas=(0.5, 0.999))
        modules["discriminator"], optimizers["discriminator"] = disc, opt_d
    train_net: torch.nn.Module = generator
    if distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        train_net = DDP(generator, device_ids=[dev.index] if dev.type == "cuda" else None)
        if is_gan:
            disc = DDP(disc, device_ids=[dev.index] if dev.type == "cuda" else None)

    use_amp = dev.type == "cuda" if t_cfg.amp == "auto" else bool(t_cfg.amp) and dev.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    start_step, total_steps, best_psnr, best_step, best = 0, t_cfg.max_steps, -math.inf, None, {}
    elapsed_before = 0.0
    if resume:
        meta = load_state(out, modules=modules, optimizers=optimizers)
        start_step, total_steps = int(meta["step"]), int(meta["total_steps"])
        best_psnr = float(meta.get("best_psnr", -math.inf))
        best_step, best = meta.get("best_step"), meta.get("best", {})
        elapsed_before = float(meta.get("elapsed_s", 0.0))
        log.info("resuming %s at step %d of %d", out, start_step, total_steps)
    budget_s = t_cfg.max_minutes * 60.0 if t_cfg.max_minutes else None
    budget_fixed = resume
    t_warm = 0.0

    if rank == 0 and not resume:
        resolved = recipe.model_copy(
            update={"data": d_cfg.model_copy(update={"paths": train_files, "val_paths": val_files})}
        )
        _write_text_atomic(out / "recipe.yaml", resolved.to_yaml())
        write_json(
            out / "run.json",
            {
                "aesr_sci_version": __version__,
                "git_commit": _git_commit(),
                "torch_version": torch.__version__,
                "device": str(dev),
                "world_size": world,
                "recipe_source": recipe.source,
                "train_files": train_files,
                "val_files": val_files,
                "channels": channels,
            },
        )
    model_config = _model_config(recipe, network, channels, summary)

    loader = DataLoader(
        _GlobalIndex(train_set),
        batch_size=t_cfg.batch_size,
        sampler=_StepSampler(
            start=start_step, stop=total_steps, batch_size=t_cfg.batch_size, rank=rank, world=world
        ),
        num_workers=t_cfg.num_workers,
        pin_memory=dev.type == "cuda",
        persistent_workers=False,
        drop_last=False,
    )
    log_path = out / "log.csv"
    if rank == 0 and not log_path.exists():
        with log_path.open("w", newline="") as fh:
            csv.DictWriter(fh, fieldnames=_LOG_FIELDS).writeheader()

    t0 = time.perf_counter()
    step = start_step
    bar = tqdm(
        total=total_steps,
        initial=start_step,
        disable=not progress or rank != 0,
        unit="step",
        dynamic_ncols=True,
    )
    adv_start = int(t_cfg.adversarial.start_fraction * total_steps)
    keep = t_cfg.keep if t_cfg.keep != "auto" else ("last" if is_gan else "best")
    running = None
    interrupted = False
    last_val: dict[str, Any] = {}

    def checkpoint(step_now: int, *, validate: bool) -> None:
        nonlocal best_psnr, best_step, best, last_val
        if rank != 0:
            return
        row: dict[str, Any] = {
            "step": step_now,
            "lr": opt_g.param_groups[0]["lr"],
            "loss": running,
            "elapsed_s": round(elapsed_before + time.perf_counter() - t0, 2),
        }
        if validate and val_items:
            scores = _validate(generator, val_items, recipe, dev, predict)
            row.update(scores)
            last_val = scores
            if keep == "best" and scores["val_psnr"] > best_psnr:
                best_psnr, best_step, best = scores["val_psnr"], step_now, scores
                save_model(
                    out / "model", generator, {**model_config, "training": {"step": step_now, **scores}}
                )
        with log_path.open("a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=_LOG_FIELDS).writerow({k: _fmt(row.get(k)) for k in _LOG_FIELDS})
        save_state(
            out,
            modules=modules,
            optimizers=optimizers,
            meta={
                "step": step_now,
                "total_steps": total_steps,
                "best_psnr": best_psnr,
                "best_step": best_step,
                "best": best,
                "elapsed_s": elapsed_before + time.perf_counter() - t0,
            },
        )

    try:
        generator.train()
        it = iter(loader)
        while step < total_steps:
            try:
                batch = next(it)
            except StopIteration:  # total_steps shrank to fit the budget after the loader was made
                break
            lr = _lr_at(step, total_steps, t_cfg.lr)
            for g in opt_g.param_groups:
                g["lr"] = lr
            lq = batch["lq"].to(dev, non_blocking=True)
            gt = batch["gt"].to(dev, non_blocking=True)
            mask = batch["mask"].to(dev, non_blocking=True)
            if dev.type == "cuda" and d_cfg.spatial_dims == 2:
                lq = lq.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device_type=dev.type, dtype=amp_dtype, enabled=use_amp):
                pred = train_net(lq)
                loss = _content_loss(pred.float(), gt, mask, t_cfg.loss)
                if is_gan and step >= adv_start:
                    fake_logits = disc(pred)
                    adv = F.binary_cross_entropy_with_logits(
                        fake_logits.float(), torch.ones_like(fake_logits.float())
                    )
                    loss = loss + t_cfg.adversarial.weight * adv
            opt_g.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if t_cfg.grad_clip:
                scaler.unscale_(opt_g)
                torch.nn.utils.clip_grad_norm_(generator.parameters(), t_cfg.grad_clip)
            scaler.step(opt_g)
            scaler.update()
            if is_gan and step >= adv_start:
                for g in opt_d.param_groups:
                    g["lr"] = t_cfg.adversarial.lr * lr / t_cfg.lr
                with torch.autocast(device_type=dev.type, dtype=amp_dtype, enabled=use_amp):
                    real = disc(gt).float()
                    fake = disc(pred.detach()).float()
                    d_loss = F.binary_cross_entropy_with_logits(
                        real, torch.ones_like(real)
                    ) + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
            value = float(loss.detach())
            if not math.isfinite(value):
                raise DataError(
                    f"the loss became {value} at step {step}: lower train.lr (now {t_cfg.lr}) or check the data for outliers"
                )
            running = value if running is None else 0.95 * running + 0.05 * value
            step += 1
            bar.update(1)
            elapsed = elapsed_before + time.perf_counter() - t0
            if budget_s is not None and not budget_fixed and step - start_step == _WARMUP_STEPS:
                t_warm = time.perf_counter()  # the first steps pay for loading files and the first batch
            if (
                budget_s is not None
                and not budget_fixed
                and step - start_step == _WARMUP_STEPS + _TIMED_STEPS
            ):
                # fix the number of steps that fits the budget (10 % left for validation and saving)
                per_step = (time.perf_counter() - t_warm) / _TIMED_STEPS
                fit = step + int((0.9 * budget_s - elapsed) / per_step)
                fit = _agree(max(step, min(total_steps, fit)), distributed)
                if fit < total_steps:
                    log.info(
                        "time budget %.1f min: training for %d steps (%.3f s/step)",
                        budget_s / 60,
                        fit,
                        per_step,
                    )
                    total_steps = fit
                    bar.total = total_steps
                    adv_start = int(t_cfg.adversarial.start_fraction * total_steps)
                budget_fixed = True
            postfix = {"loss": f"{running:.4f}", "lr": f"{lr:.1e}"}
            if last_val:
                postfix["val"] = f"{last_val['val_psnr']:.2f}dB({last_val['gain_db']:+.2f})"
            bar.set_postfix(postfix, refresh=False)
            if step % t_cfg.val_every == 0 and step < total_steps:
                checkpoint(step, validate=True)
            if budget_s is not None and elapsed > budget_s and step < total_steps:
                log.warning("time budget of %.1f min reached at step %d: stopping", budget_s / 60, step)
                total_steps = step
                break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    if interrupted:
        checkpoint(step, validate=False)
        raise KeyboardInterrupt(f"interrupted at step {step}: continue with --resume --out {out}")
    checkpoint(step, validate=True)
    if distributed:
        torch.distributed.barrier()
    minutes = (elapsed_before + time.perf_counter() - t0) / 60
    if rank == 0 and (keep == "last" or best_step is None):  # the final weights are the model
        best_step, best = step, last_val
        save_model(out / "model", generator, {**model_config, "training": {"step": step, **last_val}})
    return TrainResult(
        run_dir=out,
        steps=step,
        minutes=minutes,
        best_step=best_step,
        best=best,
        device=str(dev),
        keep="last" if best_step == step and keep == "last" else "best",
    )


def _agree(value: int, distributed: bool) -> int:
    """The minimum of ``value`` over ranks, so every rank runs the same number of steps."""
    if not distributed:
        return value
    t = torch.tensor([value], dtype=torch.int64)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN)
    return int(t.item())


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else value


def _inference_patch(recipe: Recipe) -> list[int]:
    """The sliding window (low-resolution voxels) for validation and, by default, inference:
    ``train.inference_patch``, else twice the training patch, capped at 48 (3D) or 256 (2D)."""
    d = recipe.data
    patch = recipe.train.inference_patch
    if patch is None:
        cap = 48 if d.spatial_dims == 3 else 256
        return [min(cap, 2 * p // s) for p, s in zip(d.patch_tuple(), d.scale_tuple())]
    return list(patch) if isinstance(patch, list) else [patch] * d.spatial_dims


def _model_config(
    recipe: Recipe, network: torch.nn.Module, channels: int, summary: dict[str, Any]
) -> dict[str, Any]:
    from .nets import model_config

    deg = _degradation(recipe)
    d = recipe.data
    patch = _inference_patch(recipe)
    cfg_net = model_config(network.generator if hasattr(network, "generator") else network)
    return {
        "network": cfg_net,
        "degradation": {**deg.to_dict(), "convention": deg.convention},
        "normalization": recipe.data.normalization.model_dump(),
        "statistics": summary["statistics"],  # the mask policy the normalisation was fitted with
        "band_names": list(summary.get("band_names") or []),
        "dtype": summary.get("dtype"),
        "spatial_dims": d.spatial_dims,
        "slice_axis": d.slice_axis,
        "inference_patch": patch,
        # median voxel or pixel size of the training files: inference warns on inputs far from it
        "training_spacing": np.median(summary["spacings"], axis=0).tolist()
        if summary.get("spacings")
        else None,
        "recipe": recipe.name,
        "recipe_source": recipe.source,
    }


def _validation_items(recipe: Recipe, files: Sequence[str]) -> list[_ValItem]:
    from .evaluation import held_out_case
    from .io import read

    deg = _degradation(recipe)
    normalizer = _normalizer(recipe)
    items = []
    for path in files:
        case = held_out_case(read(path), deg, normalizer, path=str(path))
        lq_t = torch.from_numpy(np.ascontiguousarray(case.inputs))[None]
        items.append(_ValItem(case, lq_t, case.baseline(_val_baseline(recipe))))
    return items


def _val_baseline(recipe: Recipe) -> str:
    """The baseline validation compares with: zero-filled Fourier for k-space models, else cubic."""
    return "fourier" if _degradation(recipe).convention == "origin" else "cubic"


def _validate(
    network: torch.nn.Module, items: Sequence[_ValItem], recipe: Recipe, dev: torch.device, predict: Any
) -> dict[str, Any]:
    patch = _inference_patch(recipe)
    was_training = network.training
    network.eval()
    model_scores, base_scores = [], []
    for item in items:
        pred = predict(network, item.lq, patch_size=patch, overlap=0.25, batch_size=4, device=dev)[0].numpy()
        model_scores.append(item.case.score(pred))
        base_scores.append(item.case.score(item.baseline))
    network.train(was_training)
    val_psnr = float(np.mean([s["psnr"] for s in model_scores]))
    base_psnr = float(np.mean([s["psnr"] for s in base_scores]))
    return {
        "val_psnr": val_psnr,
        "val_ssim": float(np.mean([s["ssim"] for s in model_scores])),
        "baseline": _val_baseline(recipe),
        "baseline_psnr": base_psnr,
        "gain_db": val_psnr - base_psnr,
    }


def _write_text_atomic(path: Path, text: str) -> None:
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text(text)
