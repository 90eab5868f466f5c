"""The training engine behind ``aesr-sci train RECIPE``: the loop that runs the parts in ``training/``.

:func:`train` checks everything that can be wrong, prepares the run directory
(:class:`~aesr_sci.training.RunDirectory`), places the run on its device and processes
(:func:`~aesr_sci.training.place`), and then repeats one optimisation step
(:class:`~aesr_sci.training.ContentStep` or :class:`~aesr_sci.training.AdversarialStep`) until the
step budget (:class:`~aesr_sci.training.StepBudget`) is spent, validating and saving a checkpoint
every ``train.val_every`` steps.

Determinism: the patch drawn for global sample ``g`` depends only on the seed and ``g``, and the
learning rate only on the step, so an interrupted run resumed with ``--resume`` reaches the same
weights as an uninterrupted one (on the same device and thread count). ``--resume`` with ``--set``
may raise or lower ``train.max_steps`` and ``train.max_minutes`` (the run trains on to the new
total, its learning-rate schedule stretched to it); any other change to what the run learns is
refused. Resuming a finished run with the same limits changes nothing.

Distributed training uses PyTorch's own launcher: ``torchrun --nproc_per_node N -m aesr_sci.cli
train RECIPE``. Each rank draws its own share of the global sample indices, gradients are averaged
by DistributedDataParallel, and rank 0 validates and writes files.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from . import __version__
from .data.feed import build_dataset as _dataset
from .data.feed import build_degradation as _degradation
from .data.feed import build_normalizer as _normalizer
from .data.feed import check_content, check_data_files, resolve_files
from .data.positions import GlobalIndex as _GlobalIndex
from .data.positions import StepSampler as _StepSampler
from .errors import RecipeError
from .recipe import Recipe, load_recipe
from .training import (
    ContentStep,
    LoopState,
    Placement,
    Progress,
    RunDirectory,
    StepBudget,
    make_step,
    mixed_precision,
    place,
    run_steps,
    validate,
)

__all__ = ["train", "check_data", "check_data_files", "TrainResult", "resolve_files"]

log = logging.getLogger(__name__)


def check_data(recipe: Recipe | str) -> str:
    """Validate the recipe's data (files exist and read whole, band counts agree, sizes fit the
    patch, no file empty or constant) and its model."""
    recipe = load_recipe(recipe) if not isinstance(recipe, Recipe) else recipe
    train_files, val_files = resolve_files(recipe)
    summary = check_data_files(recipe, train_files, val_files)
    # the pixels too (guides included): a truncated file fails now, not in an hour
    check_content([*train_files, *val_files, *summary["guide_files"]])
    channels = int(summary["channels"])
    _check_guided(recipe, summary)
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


def _check_guided(recipe: Recipe, summary: dict[str, Any]) -> None:
    """Refuse, in one line, guides for a model that takes none and a guided model without guides."""
    from .nets.registry import is_guided

    source, name = recipe.source or "recipe", recipe.model.name
    if summary["guide_channels"] and not is_guided(name):
        raise RecipeError(
            f"{source}: data.guides are given but model {name!r} takes no guide: use a guided model "
            "(model.name=guided_residual or guided_dual) or remove data.guides"
        )
    if is_guided(name) and not summary["guide_channels"]:
        raise RecipeError(
            f"{source}: model {name!r} is guided but the recipe names no guides: give data.guides "
            "(and data.val_guides), one per entry of data.paths, in the same order"
        )


# ---------------------------------------------------------------------------------- helpers
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


@dataclass
class _ValItem:
    case: Any  # aesr_sci.evaluation.Case (GuidedCase): the reference, mask and PSNR peak, as evaluate scores them
    lq: torch.Tensor  # (1, C, *S) normalised: case.inputs
    baselines: dict[str, np.ndarray]  # name -> (C, *S*s) normalised
    guide: torch.Tensor | None = None  # (1, G, *S*s) normalised: case.guide_inputs of a guided model

    def score(self, image: np.ndarray) -> dict[str, float]:
        """PSNR and SSIM of ``image`` against the reference, in the foreground (as evaluate scores)."""
        return self.case.score(image)


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


@dataclass
class _Session:
    """What the loop and its checkpoints share."""

    recipe: Recipe
    run: RunDirectory
    placement: Placement
    step: ContentStep
    progress: Progress
    budget: StepBudget
    val_items: list[_ValItem]
    model_config: dict[str, Any]
    keep: str
    last_val: dict[str, Any] = field(default_factory=dict)
    running: dict[str, float] = field(default_factory=dict)


# ------------------------------------------------------------------------------------ train
def train(
    recipe: Recipe | str | os.PathLike[str] | dict[str, Any],
    *,
    out_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    device: str | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
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
        Continue the run in ``out_dir`` from its last checkpoint. The recipe may differ from the
        run's only in ``train.max_steps``, ``train.max_minutes``, ``train.val_every`` and
        ``train.num_workers`` (and their ``gpu`` values); a finished run with the same limits is
        left as it is.
    device
        ``cpu``, ``cuda``, ``cuda:N``; default CUDA when available.
    overwrite
        Start again in a non-empty ``out_dir`` (only the files a run writes are removed).
    progress
        Show a progress bar; ``None`` (default): in a terminal or a notebook, not in a log file
        (tqdm's automatic mode).
    overrides
        ``KEY=VALUE`` recipe overrides.

    Returns
    -------
    TrainResult
        The run directory, the steps and time taken, and the best validation scores.

    Raises
    ------
    RecipeError, DataError, OutputExistsError, FileWriteError, ModelError
        Before training starts, for every problem found in the recipe, the data, the run directory
        or the checkpoint to resume; FileWriteError also when the disk fills up during the run.

    Examples
    --------
    >>> result = train("recipes/mri_x2.yaml", overrides=["train.max_minutes=2"])  # doctest: +SKIP
    >>> print(result.summary())  # doctest: +SKIP
    """
    if overrides or not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, overrides=overrides)
    placement = place(device)
    recipe = recipe.for_device(placement.device.type)
    run = RunDirectory(
        out_dir if out_dir is not None else Path("runs") / recipe.name, writes=placement.writes
    )
    plan = _plan(recipe, run, resume=resume, overwrite=overwrite)
    placement.barrier()  # every process has checked the folder before rank 0 writes into it
    if plan.state.done:
        log.warning(
            "%s: the run finished at step %d: nothing to do (raise train.max_steps or train.max_minutes "
            "with --set to train on)",
            run.path,
            plan.state.step,
        )
        return _result(run, plan.state, placement, _keep(recipe))
    with run.removed_on_failure():
        if not resume:
            info = _run_info(recipe, placement, plan.train_files, plan.val_files, plan.channels)
            run.start(plan.resolved.to_yaml(), info, overwrite=overwrite)
        placement.barrier()
        session, loader = _session(recipe, run, placement, plan)
        if resume:  # last, as it restores the random state too
            run.load_checkpoint(session.step)
            log.info("resuming %s at step %d of %d", run.path, plan.state.step, plan.state.total_steps)
            if placement.writes:
                run.write_recipe(plan.resolved.to_yaml())  # any new limits are the run's from now on
        _loop(session, loader, show=progress)
    return _result(run, plan.state, placement, session.keep, minutes=session.budget.elapsed() / 60)


@dataclass
class _Plan:
    """What the checks before training found: the files, their channels, the resolved recipe, the progress."""

    train_files: list[str]
    val_files: list[str]
    summary: dict[str, Any]
    resolved: Recipe
    state: Progress

    @property
    def channels(self) -> int:
        return int(self.summary["channels"])


def _plan(recipe: Recipe, run: RunDirectory, *, resume: bool, overwrite: bool) -> _Plan:
    """Check everything that can be wrong before any training: recipe, data, network, run directory."""
    train_files, val_files = resolve_files(recipe)
    summary = check_data_files(recipe, train_files, val_files)
    _check_guided(recipe, summary)
    _build_network(recipe, int(summary["channels"]), summary["guide_channels"])  # a wrong model fails here
    data = recipe.data.model_copy(update={"paths": train_files, "val_paths": val_files})
    plan = _Plan(
        train_files,
        val_files,
        summary,
        recipe.model_copy(update={"data": data}),
        Progress.start(recipe.train),
    )
    run.prepare(resume=resume, overwrite=overwrite)
    if resume:
        run.check_resume(plan.resolved.model_dump(mode="json"))
        plan.state = run.read_progress().resumed(recipe.train)
    return plan


def _session(
    recipe: Recipe, run: RunDirectory, placement: Placement, plan: _Plan
) -> tuple[_Session, DataLoader]:
    """The network, its step, the validation files and the batches of the steps to take."""
    torch.manual_seed(recipe.train.seed)
    # built after seeding: same init on every rank and run
    network = _build_network(recipe, plan.channels, plan.summary["guide_channels"])
    precision = mixed_precision(placement.device, recipe.train.precision)
    step = make_step(network, recipe.train, placement=placement, precision=precision)
    loader = _loader(recipe, plan.train_files, placement, plan.state)
    val_files = plan.val_files[: recipe.train.val_max_files]
    val_items = _validation_items(recipe, val_files, plan.summary) if placement.writes else []
    config = _model_config(recipe, network, plan.channels, plan.summary)
    state = plan.state
    budget = StepBudget(
        state.total_steps,
        minutes=recipe.train.max_minutes,
        start=state.step,
        elapsed_before=state.elapsed_s,
        fitted=state.budget_fitted,
        agree=placement.agree,
    )
    return _Session(recipe, run, placement, step, state, budget, val_items, config, _keep(recipe)), loader


def _loop(s: _Session, loader: DataLoader, *, show: bool | None) -> None:
    """Optimisation steps from the checkpoint's step until the budget's total, then the last checkpoint."""
    from tqdm.auto import tqdm

    budget, state = s.budget, LoopState(s.progress.step, s.running)
    # show=None: tqdm decides (a bar in a terminal or notebook, none when the output is a file)
    disable = True if show is False or not s.placement.writes else None if show is None else False
    bar = tqdm(total=budget.total, initial=state.step, disable=disable, unit="step")
    try:
        run_steps(
            s.step,
            iter(loader),
            budget,
            state,
            bar=bar,
            lr_name="train.lr",
            every=s.recipe.train.val_every,
            on_every=lambda step: _checkpoint(s, step, validate=True),
            postfix=lambda: _postfix(s),
        )
    except KeyboardInterrupt:
        bar.close()
        _checkpoint(s, state.step, validate=False)
        raise KeyboardInterrupt(
            f"interrupted at step {state.step}: continue with --resume --out {s.run.path}"
        ) from None
    bar.close()
    _checkpoint(s, state.step, validate=True, final=True)
    s.placement.barrier()


def _checkpoint(s: _Session, step: int, *, validate: bool, final: bool = False) -> None:
    """Validate (optionally), keep the model if it is the one to keep, log a row and save the state."""
    p = s.progress
    p.step, p.total_steps, p.budget_fitted, p.finished = step, s.budget.total, s.budget.fitted, final
    if not s.placement.writes:
        return
    row: dict[str, Any] = {
        "step": step,
        "lr": s.step.lr,
        **s.running,
        "elapsed_s": round(s.budget.elapsed(), 2),
    }
    if validate and s.val_items:
        s.last_val = _validate(s)
        row.update(s.last_val)
        if s.keep == "best" and p.improves(s.last_val["val_psnr"]):
            p.best_step, p.best = step, s.last_val
            _save_model(s, step)
    if final and (s.keep == "last" or p.best_step is None):  # the final weights are the model
        p.best_step, p.best = step, s.last_val
        _save_model(s, step)
    s.run.log(row)
    p.elapsed_s = s.budget.elapsed()
    s.run.save_checkpoint(s.step, p)


def _save_model(s: _Session, step: int) -> None:
    s.run.save_model(s.step.generator, {**s.model_config, "training": {"step": step, **s.last_val}})


def _validate(s: _Session) -> dict[str, Any]:
    return validate(
        s.step.generator,
        s.val_items,
        patch_size=_inference_patch(s.recipe),
        device=s.step.device,
        precision=s.recipe.train.precision,
    )


def _postfix(s: _Session) -> dict[str, str]:
    postfix = {"loss": f"{s.running['loss']:.4f}", "lr": f"{s.step.lr:.1e}"}
    if s.last_val:
        postfix["val"] = f"{s.last_val['val_psnr']:.2f}dB({s.last_val['gain_db']:+.2f})"
    return postfix


def _keep(recipe: Recipe) -> str:
    """``train.keep`` resolved: ``auto`` is ``last`` for a GAN (PSNR would undo its adversarial loss)."""
    keep = recipe.train.keep
    return keep if keep != "auto" else ("last" if recipe.model.name == "gan" else "best")


def _result(
    run: RunDirectory, state: Progress, placement: Placement, keep: str, *, minutes: float | None = None
) -> TrainResult:
    return TrainResult(
        run_dir=run.path,
        steps=state.step,
        minutes=state.elapsed_s / 60 if minutes is None else minutes,
        best_step=state.best_step,
        best=state.best,
        device=str(placement.device),
        keep="last" if keep == "last" and state.best_step == state.step else "best",
    )


def _run_info(
    recipe: Recipe, placement: Placement, train_files: list[str], val_files: list[str], channels: int
) -> dict[str, Any]:
    """What ``run.json`` records: versions, device and processes, the files of each split."""
    return {
        "aesr_sci_version": __version__,
        "git_commit": _git_commit(),
        "torch_version": torch.__version__,
        "device": str(placement.device),
        "world_size": placement.world,
        "recipe_source": recipe.source,
        "train_files": train_files,
        "val_files": val_files,
        "channels": channels,
    }


def _loader(recipe: Recipe, files: Sequence[str], placement: Placement, state: Progress) -> DataLoader:
    """Batches of this process's global sample indices for the steps left to take."""
    t = recipe.train
    sampler = _StepSampler(
        start=state.step,
        stop=state.total_steps,
        batch_size=t.batch_size,
        rank=placement.rank,
        world=placement.world,
    )
    return DataLoader(
        _GlobalIndex(_dataset(recipe, files, mode="random", seed=t.seed)),
        batch_size=t.batch_size,
        sampler=sampler,
        num_workers=t.num_workers,
        pin_memory=placement.device.type == "cuda",
        persistent_workers=False,
        drop_last=False,
    )


def _inference_patch(recipe: Recipe) -> list[int] | None:
    """The window core (low-resolution voxels) for validation and, by default, inference:
    ``train.inference_patch``; None sizes the windows to the memory budget (one pass when it fits)."""
    patch = recipe.train.inference_patch
    if patch is None:
        return None
    return list(patch) if isinstance(patch, list) else [patch] * recipe.data.spatial_dims


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
        **_guide_config(summary),
    }


def _guide_config(summary: dict[str, Any]) -> dict[str, Any]:
    """What model.json records of a guided model's guides (nothing for an unguided one): their band
    count and names, the statistics policy they are normalised with, and each guide file's pixel
    size as a factor of the first (finest) one's, e.g. ``[[1, 1], [2, 2]]`` for 10 m and 20 m guides."""
    if not summary["guide_channels"]:
        return {}
    return {
        "guide_channels": int(summary["guide_channels"]),
        "guide_band_names": list(summary["guide_band_names"]),
        "guide_statistics": summary["guide_statistics"],
        "guide_factors": summary["guide_factors"],
    }


def _validation_items(recipe: Recipe, files: Sequence[str], summary: dict[str, Any]) -> list[_ValItem]:
    """The held-out cases, with the baselines validation compares with (and their guides)."""
    from .data.feed import resolve_guides
    from .io import read

    guides = resolve_guides(recipe, files) or [()] * len(files)
    items = []
    for path, guide_files in zip(files, guides):
        case = _validation_case(recipe, read(path), guide_files, summary, str(path))
        lq_t = torch.from_numpy(np.ascontiguousarray(case.inputs))[None]
        names = [_val_baseline(recipe), *(["hpf"] if guide_files else [])]
        guide = torch.from_numpy(np.ascontiguousarray(case.guide_inputs))[None] if guide_files else None
        items.append(_ValItem(case, lq_t, {n: case.baseline(n) for n in names}, guide))
    return items


def _validation_case(
    recipe: Recipe, target: Any, guide_files: Sequence[str], summary: dict[str, Any], path: str
) -> Any:
    """:func:`~aesr_sci.evaluation.held_out_case`, or for a guided recipe
    :func:`~aesr_sci.evaluation.held_out_guided_case` on the windows :func:`~aesr_sci.guide.check_guide` finds."""
    from .evaluation import held_out_case, held_out_guided_case
    from .guide import crop_to_guide
    from .io import read

    deg, normalizer = _degradation(recipe), _normalizer(recipe)
    if not guide_files:
        return held_out_case(target, deg, normalizer, path=path)
    target, guide, _ = crop_to_guide(
        target, [read(g) for g in guide_files], recipe.data.scale_tuple(), guide_names=guide_files
    )
    return held_out_guided_case(
        target,
        guide,
        deg,
        normalizer,
        path=path,
        statistics=summary["statistics"],
        guide_statistics=summary["guide_statistics"],
    )


def _val_baseline(recipe: Recipe) -> str:
    """The baseline validation compares with: zero-filled Fourier for k-space models, else cubic."""
    return "fourier" if _degradation(recipe).convention == "origin" else "cubic"
