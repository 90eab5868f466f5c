"""The run directory: what a training run writes, and what ``--resume`` reads back and may change.

::

    runs/mri_x2/
      recipe.yaml          the resolved recipe (after --set overrides, paths expanded)
      run.json             package version, git commit, device, train/validation files
      log.csv              step, learning rate, losses, validation PSNR/SSIM, baseline PSNR, time
      model/               the model (see aesr_sci.checkpoint)
      state.json, state.safetensors   the last checkpoint, for --resume

A run that fails before its first checkpoint removes what it wrote (and the folder, if it made it).
"""

from __future__ import annotations

import contextlib
import csv
import errno
import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from ..errors import AesrError, FileWriteError, ModelError, OutputExistsError, RecipeError

__all__ = ["LOG_FIELDS", "RESUMABLE_KEYS", "Progress", "RunDirectory", "writing"]

RUN_FILES = ("recipe.yaml", "run.json", "log.csv", "state.json", "state.safetensors", "model")
LOG_FIELDS = [
    "step",
    "lr",
    "loss",
    "val_psnr",
    "val_ssim",
    "baseline",
    "baseline_psnr",
    "gain_db",
    "elapsed_s",
    "adversarial",
    "discriminator",
    "data_wait",
]
# recipe keys that --resume --set may change: how long a run trains, how often it validates and
# in what precision it computes, never what it learns from or what it learns
RESUMABLE_KEYS = frozenset(
    {
        "train.max_steps",
        "train.max_minutes",
        "train.val_every",
        "train.num_workers",
        "train.precision",
        "gpu.max_steps",
        "gpu.num_workers",
    }
)
_IGNORED_KEYS = frozenset({"name", "source"})


@contextlib.contextmanager
def writing(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn an operating-system error while writing ``path`` into one line (:class:`FileWriteError`)."""
    try:
        yield
    except AesrError:
        raise
    except OSError as exc:
        where = exc.filename or path
        if exc.errno == errno.ENOSPC:
            why = "the disk is full: free some space or choose another --out"
        elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            why = "permission denied: choose a writable --out"
        else:
            why = f"{exc.strerror or exc}: choose another --out"
        raise FileWriteError(f"cannot write {where}: {why}") from None


@dataclass
class Progress:
    """Where a run stands; saved in ``state.json`` with each checkpoint."""

    step: int
    total_steps: int
    max_steps: int | None = None  # the recipe's limits the total was set from (None: an older run)
    max_minutes: float | None = None
    budget_fitted: bool = True
    finished: bool = False
    elapsed_s: float = 0.0
    best_step: int | None = None  # the step of the model kept, and its validation scores
    best: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def start(cls, train: Any) -> Progress:
        return cls(0, train.max_steps, train.max_steps, train.max_minutes, budget_fitted=False)

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> Progress:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in meta.items() if k in known})

    def to_meta(self) -> dict[str, Any]:
        return asdict(self)

    def resumed(self, train: Any) -> Progress:
        """This progress under the resumed recipe's ``train`` section: new limits set a new total."""
        if self.max_steps is None or (self.max_steps, self.max_minutes) == (
            train.max_steps,
            train.max_minutes,
        ):
            return self
        new = Progress(**{**self.to_meta(), "max_steps": train.max_steps, "max_minutes": train.max_minutes})
        new.total_steps = max(self.step, train.max_steps)
        new.budget_fitted = train.max_minutes is None
        new.finished = self.step >= train.max_steps
        return new

    def improves(self, psnr: float) -> bool:
        """Whether a validation PSNR beats the best model's (always, before there is one)."""
        best = self.best.get("val_psnr") if self.best_step is not None else None
        return best is None or psnr > best

    @property
    def done(self) -> bool:
        return self.finished or self.step >= self.total_steps


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


class RunDirectory:
    """The folder of one run; only the writing process (rank 0) writes into it."""

    def __init__(self, path: str | os.PathLike[str], *, writes: bool = True) -> None:
        self.path = Path(path)
        self.writes = writes
        self.created: Path | None = None  # the outermost folder this run made
        self.saved = False  # this run wrote a checkpoint

    # ------------------------------------------------------------------ before training
    def prepare(self, *, resume: bool, overwrite: bool) -> None:
        """Check the folder can take the run (nothing is written yet), or holds one to resume."""
        out = self.path
        existing = next(p for p in (out, *out.absolute().parents) if p.exists())
        if not existing.is_dir():
            raise FileWriteError(
                f"cannot make the run folder {out}: {existing} is a file; choose another --out"
            )
        if resume:
            if not (out / "state.json").is_file():
                raise OutputExistsError(
                    f"nothing to resume in {out}: no state.json there (run without --resume)"
                )
            self.saved = True  # its checkpoint stays whatever happens
        elif out.exists() and any(out.iterdir()) and not overwrite:
            raise OutputExistsError(
                f"{out} is not empty: pass --resume to continue that run, --overwrite to start it again, "
                "or choose another --out"
            )
        if self.writes and not os.access(existing, os.W_OK | os.X_OK):
            raise FileWriteError(
                f"cannot write the run into {out}: {existing} is not writable; choose another --out"
            )

    def saved_recipe(self) -> dict[str, Any]:
        """The run's ``recipe.yaml`` as a mapping."""
        import yaml

        path = self.path / "recipe.yaml"
        try:
            saved = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ModelError(
                f"{path} is not readable ({exc}): start the run again with --overwrite"
            ) from None
        if not isinstance(saved, dict):
            raise ModelError(f"{path} is not a recipe: start the run again with --overwrite")
        return saved

    def check_resume(self, recipe: Mapping[str, Any]) -> None:
        """Refuse, in one line, a resumed recipe that differs from the run's in a key :data:`RESUMABLE_KEYS` lacks."""
        old, new = _flatten(self.saved_recipe()), _flatten(recipe)
        ignored = _IGNORED_KEYS | RESUMABLE_KEYS
        changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k) and k not in ignored)
        if changed:
            what = ", ".join(f"{k} ({old.get(k)!r} -> {new.get(k)!r})" for k in changed[:3])
            more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
            raise RecipeError(
                f"{self.path}: --resume cannot change {what}{more}: the run was trained with the recipe in "
                f"recipe.yaml; only {', '.join(sorted(RESUMABLE_KEYS))} may change (or start a new run)"
            )

    def read_progress(self) -> Progress:
        """The progress recorded in the last checkpoint's ``state.json``."""
        from ..checkpoint import read_state_meta

        meta = read_state_meta(self.path)
        if "max_steps" not in meta:  # saved by an older version: the limits are those of its recipe
            limits = self.saved_recipe().get("train") or {}
            meta = {**meta, "max_steps": limits.get("max_steps"), "max_minutes": limits.get("max_minutes")}
        return Progress.from_meta(meta)

    # ------------------------------------------------------------------ writing
    def start(self, recipe_yaml: str, info: Mapping[str, Any], *, overwrite: bool) -> None:
        """Make the folder (clearing an earlier run's files on ``overwrite``), write recipe, run.json, log header."""
        if not self.writes:
            return
        with writing(self.path):
            if overwrite and self.path.exists():
                for name in RUN_FILES:  # only what a run writes: never a user's other files
                    target = self.path / name
                    if target.is_dir():
                        shutil.rmtree(target)
                    elif target.exists():
                        target.unlink()
            missing = [p for p in (self.path, *self.path.parents) if not p.exists()]
            self.created = missing[-1] if missing else None
            self.path.mkdir(parents=True, exist_ok=True)
            self.write_recipe(recipe_yaml)
            self.write_json("run.json", dict(info))
            with (self.path / "log.csv").open("w", newline="") as fh:
                csv.DictWriter(fh, fieldnames=LOG_FIELDS).writeheader()

    def write_recipe(self, recipe_yaml: str) -> None:
        from ..fileutil import atomic_output

        with (
            writing(self.path / "recipe.yaml"),
            atomic_output(self.path / "recipe.yaml", overwrite=True) as tmp,
        ):
            tmp.write_text(recipe_yaml)

    def write_json(self, name: str, obj: Any) -> None:
        from ..checkpoint import write_json

        with writing(self.path / name):
            write_json(self.path / name, obj)

    def log(self, row: Mapping[str, Any]) -> None:
        """Append a row to ``log.csv`` (in the columns of its header, for a run begun by an older version)."""
        path = self.path / "log.csv"
        with writing(path):
            with path.open(newline="") as fh:
                header = next(csv.reader(fh), None) or LOG_FIELDS
            with path.open("a", newline="") as fh:
                csv.DictWriter(fh, fieldnames=header, extrasaction="ignore").writerow(
                    {k: _fmt(row.get(k)) for k in header}
                )

    def save_model(self, network: torch.nn.Module, config: Mapping[str, Any]) -> None:
        from ..checkpoint import save_model

        with writing(self.path / "model"):
            save_model(self.path / "model", network, config)

    def save_checkpoint(self, step: Any, progress: Progress) -> None:
        """Save the networks, optimisers and scalers of ``step`` with ``progress`` (for ``--resume``)."""
        from ..checkpoint import save_state

        scalers = {name: s.state_dict() for name, s in step.scalers.items() if s.is_enabled()}
        with writing(self.path / "state.safetensors"):
            save_state(
                self.path,
                modules=step.modules,
                optimizers=step.optimizers,
                meta={**progress.to_meta(), "scalers": scalers},
            )
        self.saved = True

    def load_checkpoint(self, step: Any) -> None:
        """Restore ``step``'s networks, optimisers, scalers and the random state from the last checkpoint."""
        from ..checkpoint import load_state

        meta = load_state(self.path, modules=step.modules, optimizers=step.optimizers)
        for name, state in (meta.get("scalers") or {}).items():
            if name in step.scalers and step.scalers[name].is_enabled():
                step.scalers[name].load_state_dict(state)

    @contextlib.contextmanager
    def removed_on_failure(self) -> Iterator[None]:
        """On an error before the first checkpoint, remove what this run wrote (and the folder it made)."""
        try:
            yield
        except BaseException:  # an interrupted start too
            if self.writes and not self.saved:
                self._discard()
            raise

    def _discard(self) -> None:
        for name in RUN_FILES:
            target = self.path / name
            with contextlib.suppress(OSError):
                shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
        if self.created is not None:
            folder = self.path
            with contextlib.suppress(OSError):  # only empty folders, up to the one this run made
                while folder != self.created.parent:
                    folder.rmdir()
                    folder = folder.parent


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else value
