"""Recipes: one plain YAML file per experiment, validated by a strict schema.

A recipe has three sections, ``data``, ``model`` and ``train`` (plus an optional ``name`` and
``gpu`` overrides). Unknown keys, wrong types and inconsistent values are rejected with one line per
problem naming the file and the key::

    recipes/mri_x2.yaml: train.batch_size: must be > 0 (got -4)

Overrides (``--set key=value``) are applied to the raw YAML before validation; values are parsed as
YAML, so ``--set data.paths=[a.nii.gz,b.nii.gz]`` and ``--set train.max_minutes=3`` both work.
"""

from __future__ import annotations

import copy
import difflib
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import RecipeError
from .spatial import METHODS, per_axis

__all__ = ["DataSection", "ModelSection", "Recipe", "TrainSection", "load_recipe", "parse_override"]

DEGRADATION_METHODS = tuple(METHODS)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DegradationSection(_Strict):
    """How low-resolution training inputs are made from the high-resolution files."""

    method: Literal[DEGRADATION_METHODS] = Field(  # type: ignore[valid-type]
        description="Degradation model: kspace (MRI), slice (thick-slice MRI), gaussian (satellite), area, bicubic."
    )
    sigma: float | list[float] | None = Field(
        default=None, description="gaussian: blur sigma in high-resolution pixels (one, or one per band)."
    )
    sigma_jitter: float = Field(
        default=0.0, ge=0, lt=1, description="gaussian: randomise sigma by +-this fraction."
    )
    fwhm: float | None = Field(
        default=None, gt=0, description="slice: profile FWHM in high-resolution voxels."
    )
    gap: float = Field(
        default=0.0, ge=0, lt=1, description="slice: gap between slices, as a fraction of a slice."
    )
    noise: float = Field(
        default=0.0, ge=0, description="Noise level, a fraction of the robust intensity range."
    )
    noise_kind: Literal["rician", "gaussian"] | None = Field(
        default=None, description="rician (magnitude MRI) or gaussian; default from the method."
    )

    def params(self) -> dict[str, Any]:
        """Parameters for :class:`aesr_sci.data.degrade.Degradation` (noise excluded)."""
        out: dict[str, Any] = {}
        if self.sigma is not None:
            out["sigma"] = self.sigma
        if self.sigma_jitter:
            out["sigma_jitter"] = self.sigma_jitter
        if self.fwhm is not None:
            out["fwhm"] = self.fwhm
        if self.method == "slice":
            out["gap"] = self.gap
        return out


class NormalizationSection(_Strict):
    """Reversible intensity normalisation, fitted per file (stored in the model)."""

    method: Literal["percentile", "fixed", "none"] = Field(
        default="percentile", description="percentile (per file), fixed (same for every file) or none."
    )
    p_low: float = Field(default=0.5, ge=0, le=100, description="percentile: lower percentile mapped to 0.")
    p_high: float = Field(default=99.5, ge=0, le=100, description="percentile: upper percentile mapped to 1.")
    per_channel: bool = Field(default=True, description="percentile: separate statistics per band.")
    scale: float = Field(default=1.0, description="fixed: multiply by this (1e-4 for reflectance x 10000).")
    offset: float = Field(default=0.0, description="fixed: then add this.")

    @model_validator(mode="after")
    def _order(self) -> NormalizationSection:
        if self.method == "percentile" and self.p_low >= self.p_high:
            raise ValueError(f"p_low: must be below p_high ({self.p_high}) (got {self.p_low})")
        return self


class DataSection(_Strict):
    """Which files to train on and how patches are cut from them."""

    paths: list[str] = Field(
        default_factory=list,
        description="Files or glob patterns (NIfTI or GeoTIFF). Empty: the default sample (MNI152 T1 from nilearn).",
    )
    guides: list[str | list[str]] = Field(
        default_factory=list,
        description="Guided models: one guide per entry of paths, in the same order (a file or glob on the "
        "output grid, or a list of them for several guide resolutions, finest first). Empty: no guide.",
    )
    val_paths: list[str] = Field(
        default_factory=list,
        description="Validation files; empty: hold out val_fraction of the files (by file).",
    )
    val_guides: list[str | list[str]] = Field(
        default_factory=list,
        description="The guides of val_paths, one per entry, in the same order (needed with guides).",
    )
    val_fraction: float = Field(
        default=0.2, gt=0, lt=1, description="Fraction of files held out for validation."
    )
    spatial_dims: Literal[2, 3] = Field(
        default=3, description="3: volume patches; 2: raster patches or volume slices."
    )
    slice_axis: int | None = Field(
        default=None, description="2D from volumes: the axis slices are taken along."
    )
    scale: int | list[int] = Field(
        description="Upscaling factor, one number or one per spatial axis, e.g. [1, 1, 4]."
    )
    patch_size: int | list[int] = Field(description="High-resolution patch size, divisible by the scale.")
    degradation: DegradationSection
    normalization: NormalizationSection = Field(default_factory=NormalizationSection)
    channels: int | None = Field(
        default=None, gt=0, description="Expected band count; default: from the data."
    )
    min_valid: float = Field(
        default=0.3, ge=0, le=1, description="Minimum foreground/valid fraction of a patch."
    )
    samples_per_epoch: int = Field(default=1024, gt=0, description="Random patches per epoch.")
    augment: bool = Field(default=True, description="Flips and 90-degree rotations within isotropic planes.")

    @field_validator("scale", "patch_size")
    @classmethod
    def _positive(cls, v: int | list[int]) -> int | list[int]:
        try:
            per_axis(v)
        except ValueError:  # the recipe's message adds the field's name and the value given
            raise ValueError("must be whole numbers >= 1, one or one per spatial axis") from None
        return v

    def scale_tuple(self) -> tuple[int, ...]:
        return per_axis(self.scale, self.spatial_dims)

    def patch_tuple(self) -> tuple[int, ...]:
        return per_axis(self.patch_size, self.spatial_dims, name="patch_size")

    @model_validator(mode="after")
    def _consistent(self) -> DataSection:
        problems = []
        for key, value in (("scale", self.scale), ("patch_size", self.patch_size)):
            if isinstance(value, list) and len(value) != self.spatial_dims:
                problems.append(
                    f"{key}: has {len(value)} axes but spatial_dims is {self.spatial_dims} (got {value})"
                )
        problems += _guide_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        scale, patch = self.scale_tuple(), self.patch_tuple()
        bad = [(p, s) for p, s in zip(patch, scale) if p % s]
        if bad:
            raise ValueError(
                f"patch_size: {list(patch)} is not divisible by the scale {list(scale)}; "
                f"use multiples of the scale, e.g. {[max(s, p - p % s) for p, s in zip(patch, scale)]}"
            )
        if max(scale) < 2:
            raise ValueError(f"scale: must be at least 2 along one axis (got {list(scale)})")
        if self.degradation.method == "slice" and sum(s > 1 for s in scale) != 1:
            raise ValueError(
                f"scale: the slice degradation scales exactly one axis, e.g. [1, 1, 4] (got {list(scale)})"
            )
        return self


def _guide_problems(data: DataSection) -> list[str]:
    """Guides pair with their targets by position: the lists must line up."""
    problems = []
    for key, guides, paths_key, paths in (
        ("guides", data.guides, "paths", data.paths),
        ("val_guides", data.val_guides, "val_paths", data.val_paths),
    ):
        if guides and len(guides) != len(paths):
            problems.append(
                f"{key}: has {len(guides)} entries but data.{paths_key} has {len(paths)}: give one guide "
                f"(or one list of guides) per entry of data.{paths_key}, in the same order"
            )
        counts = sorted({len(g) if isinstance(g, list) else 1 for g in guides})
        if 0 in counts:
            problems.append(f"{key}: an entry is an empty list: name at least one guide file")
        elif len(counts) > 1:
            problems.append(
                f"{key}: every entry must name the same number of guide files (got {counts[0]} and {counts[-1]})"
            )
    files = {len(g) if isinstance(g, list) else 1 for g in data.guides}
    val_files = {len(g) if isinstance(g, list) else 1 for g in data.val_guides}
    if len(files) == len(val_files) == 1 and files != val_files:
        problems.append(
            f"val_guides: every entry must name the same number of guide files as in data.guides "
            f"(got {val_files.pop()} and {files.pop()}): the model takes one set of guides"
        )
    if data.val_paths and data.guides and not data.val_guides:
        problems.append(
            "val_guides: data.guides is set, so data.val_paths needs its guides in data.val_guides too"
        )
    if data.val_guides and not data.guides:
        problems.append("val_guides: set but data.guides is empty: a guided recipe names both")
    return problems


class ModelSection(BaseModel):
    """The network: ``name`` plus that network's own arguments (checked by the network registry)."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(default="residual", description="seed, residual, multiscale, attention or gan.")

    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class AdversarialSection(_Strict):
    """Adversarial training, used when ``model.name`` is ``gan``."""

    weight: float = Field(
        default=5e-3, ge=0, description="Weight of the adversarial loss against the content loss."
    )
    lr: float = Field(default=1e-4, gt=0, description="Discriminator learning rate.")
    start_fraction: float = Field(
        default=0.3,
        ge=0,
        lt=1,
        description="Fraction of training spent on content loss only before the GAN starts.",
    )
    kind: Literal["bce", "relativistic"] = Field(
        default="bce",
        description="Adversarial loss: bce = standard non-saturating GAN, relativistic = relativistic "
        "average GAN (ESRGAN).",
    )


class TrainSection(_Strict):
    """Optimisation, budget, validation and checkpoints."""

    batch_size: int = Field(default=4, gt=0, description="Patches per optimisation step (per process).")
    lr: float = Field(
        default=5e-4, gt=0, description="Learning rate (Adam), cosine-decayed to 1% over training."
    )
    weight_decay: float = Field(default=0.0, ge=0, description="Adam weight decay.")
    loss: Literal["l1", "mse", "charbonnier"] = Field(
        default="l1", description="Content loss, masked to valid pixels."
    )
    max_steps: int = Field(default=2000, gt=0, description="Optimisation steps at most.")
    max_minutes: float | None = Field(
        default=None,
        gt=0,
        description="Wall-clock budget: training stops cleanly and keeps the model (see keep).",
    )
    val_every: int = Field(default=200, gt=0, description="Validate (and checkpoint) every N steps.")
    keep: Literal["auto", "best", "last"] = Field(
        default="auto",
        description="Weights saved as the model: best = highest validation PSNR, last = the final step; "
        "auto = last for gan (selecting by PSNR would undo what the adversarial loss adds), else best.",
    )
    val_max_files: int = Field(default=4, gt=0, description="At most this many validation files are scored.")
    seed: int = Field(default=0, description="Seeds the weights, the patches and the file split.")
    num_workers: int = Field(default=0, ge=0, description="DataLoader worker processes.")
    precision: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto",
        description="Training precision (weights stay float32): auto = bfloat16 with channels-last memory on CUDA and on CPUs with native bfloat16, else float32.",
    )
    grad_clip: float | None = Field(default=1.0, gt=0, description="Clip the gradient norm to this.")
    adversarial: AdversarialSection = Field(default_factory=AdversarialSection)
    inference_patch: int | list[int] | None = Field(
        default=None,
        description="Window core (low-resolution voxels) for validation and by default at inference; null: the largest windows that fit the memory budget.",
    )


class GpuSection(_Strict):
    """Values used instead of the ones above when training on CUDA (larger batches and patches)."""

    batch_size: int | None = Field(default=None, gt=0, description="train.batch_size on CUDA.")
    patch_size: int | list[int] | None = Field(default=None, description="data.patch_size on CUDA.")
    lr: float | None = Field(default=None, gt=0, description="train.lr on CUDA.")
    max_steps: int | None = Field(default=None, gt=0, description="train.max_steps on CUDA.")
    num_workers: int | None = Field(
        default=None,
        ge=0,
        description="train.num_workers on CUDA; default: train.num_workers, or if that is 0, one per "
        "CPU core but one, at most 8 (the sampler alone in the main process would starve the GPU).",
    )


class Recipe(_Strict):
    """A validated recipe. Build it with :func:`load_recipe`."""

    name: str = Field(default="run", description="Run name; the default output directory is runs/<name>.")
    data: DataSection
    model: ModelSection = Field(default_factory=ModelSection)
    train: TrainSection = Field(default_factory=TrainSection)
    gpu: GpuSection = Field(default_factory=GpuSection)
    source: str | None = Field(
        default=None, description="Where the recipe was read from (set by load_recipe)."
    )

    def for_device(self, device_type: str) -> Recipe:
        """The recipe with the ``gpu`` section applied when ``device_type`` is ``cuda``."""
        if device_type != "cuda":
            return self
        raw = self.model_dump()
        g = self.gpu
        for section, key, value in (
            ("train", "batch_size", g.batch_size),
            ("data", "patch_size", g.patch_size),
            ("train", "lr", g.lr),
            ("train", "max_steps", g.max_steps),
            ("train", "num_workers", g.num_workers if g.num_workers is not None else _gpu_workers(raw)),
        ):
            if value is not None:
                raw[section][key] = value
        return _validate(raw, self.source or "recipe")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _gpu_workers(raw: dict[str, Any]) -> int | None:
    """Sampler workers on CUDA when the recipe asks for none: one per core but one, at most 8."""
    if raw["train"]["num_workers"]:
        return None  # the recipe's own train.num_workers stands
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b=value`` into a key path and a YAML-parsed value.

    Examples
    --------
    >>> parse_override("data.paths=[a.nii.gz, b.nii.gz]")
    (['data', 'paths'], ['a.nii.gz', 'b.nii.gz'])
    >>> parse_override("train.max_minutes=3")
    (['train', 'max_minutes'], 3)
    """
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise RecipeError(f"--set {text!r}: expected KEY=VALUE, e.g. --set train.max_minutes=3")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as exc:
        raise RecipeError(
            f"--set {key}: the value {value!r} is not valid YAML ({_yaml_reason(exc)})"
        ) from None
    return key.split("."), parsed


def _yaml_reason(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"line {mark.line + 1}: {problem}" if mark is not None else str(problem)


def _known_keys(path: list[str]) -> list[str]:
    model: type[BaseModel] | None = Recipe
    for part in path:
        if model is None:
            return []
        field = model.model_fields.get(part)
        if field is None:
            return []
        ann = field.annotation
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    if model is None or model is ModelSection:
        return []
    return list(model.model_fields)


def _apply_override(raw: dict[str, Any], path: list[str], value: Any, source: str) -> None:
    node = raw
    for i, part in enumerate(path[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise RecipeError(f"{source}: --set {'.'.join(path)}: {'.'.join(path[: i + 1])} is not a section")
        node = child
    node[path[-1]] = value


def _format_errors(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"] if not str(p).startswith("function-after")]
        # pydantic adds union branch names (int, list[int]) to the location; drop them
        loc = [
            p
            for p in loc
            if p not in {"int", "float", "list[int]", "list[float]", "list[str]", "bool", "str", "none"}
        ]
        key = ".".join(loc) or "(top level)"
        value = err.get("input")
        if err["type"] == "extra_forbidden":
            parent = loc[:-1]
            known = _known_keys(parent)
            close = difflib.get_close_matches(loc[-1], known, n=1)
            hint = (
                f"; did you mean '{close[0]}'?"
                if close
                else (f"; known keys: {', '.join(known)}" if known else "")
            )
            lines.append(f"{source}: {key}: unknown key{hint}")
            continue
        if err["type"] == "missing":
            lines.append(f"{source}: {key}: required but missing")
            continue
        msg = err["msg"]
        msg = msg.removeprefix("Value error, ")
        if err["type"].startswith("greater_than") or err["type"].startswith("less_than"):
            msg = msg.replace("Input should be", "must be")
        if isinstance(value, dict):  # a cross-field rule of a section: the message names the key
            for part in msg.split("; ") if msg.count(": ") > 1 and "; " in msg else [msg]:
                lines.append(f"{source}: {key + '.' if loc else ''}{part}")
            continue
        lines.append(f"{source}: {key}: {msg} (got {value!r})")
    # the same problem can be reported once per union branch; keep order, drop repeats
    return "\n".join(dict.fromkeys(lines))


def _validate(raw: Any, source: str) -> Recipe:
    if not isinstance(raw, dict):
        raise RecipeError(f"{source}: a recipe must be a YAML mapping with data, model and train sections")
    try:
        return Recipe.model_validate(raw)
    except ValidationError as exc:
        raise RecipeError(_format_errors(exc, source)) from None


def _drop_recipe_validation(raw: dict[str, Any], keys_set: list[list[str]]) -> bool:
    """When ``data.paths`` is overridden alone, the recipe's own validation files no longer apply.

    A recipe names validation files that belong with its default training data (another scene of
    the same sensor); a user who trains on their own files from the command line means to validate
    on those, so ``data.val_paths`` and ``data.val_guides`` are dropped (True: the caller notes it
    once the recipe is valid) and validation holds out whole files of ``data.paths``, unless the
    override names them too.
    """
    data = raw.get("data")
    if ["data", "paths"] not in keys_set or not isinstance(data, dict) or not data.get("val_paths"):
        return False
    if any(k[:2] in (["data", "val_paths"], ["data", "val_guides"]) for k in keys_set):
        return False
    data["val_paths"], data["val_guides"] = [], []
    return True


def load_recipe(
    recipe: str | os.PathLike[str] | dict[str, Any] | Recipe, *, overrides: Sequence[str] = ()
) -> Recipe:
    """Read, override and validate a recipe.

    Parameters
    ----------
    recipe
        A YAML file, an already parsed mapping, or a :class:`Recipe`.
    overrides
        ``KEY=VALUE`` strings; values are parsed as YAML.

    Returns
    -------
    Recipe
        The validated recipe, with relative data paths resolved against the current directory.

    Raises
    ------
    RecipeError
        One line per problem, naming the file and the key.

    Examples
    --------
    >>> r = load_recipe({"data": {"scale": 2, "patch_size": 32, "degradation": {"method": "kspace"}}},
    ...                 overrides=["train.max_steps=10"])
    >>> r.train.max_steps, r.data.scale_tuple()
    (10, (2, 2, 2))
    """
    if isinstance(recipe, Recipe):
        if not overrides:
            return recipe
        raw, source = recipe.model_dump(), recipe.source or "recipe"
    elif isinstance(recipe, dict):
        raw, source = copy.deepcopy(recipe), "recipe"
    else:
        path = Path(recipe)
        source = str(recipe)
        if not path.is_file():
            raise RecipeError(f"{source}: no such recipe file (see the recipes/ folder for examples)")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise RecipeError(f"{source}: not valid YAML ({_yaml_reason(exc)})") from None
        except UnicodeDecodeError:
            raise RecipeError(f"{source}: not a text file") from None
        if raw is None:
            raise RecipeError(f"{source}: the recipe is empty")
    if not isinstance(raw, dict):
        raise RecipeError(f"{source}: a recipe must be a YAML mapping with data, model and train sections")
    raw.pop("source", None)
    keys_set = []
    for text in overrides:
        keys, value = parse_override(text)
        _apply_override(raw, keys, value, source)
        keys_set.append(keys)
    dropped = _drop_recipe_validation(raw, keys_set)
    recipe_obj = _validate(raw, source)
    if dropped:
        warnings.warn(
            "data.paths was set without data.val_paths: the recipe's validation files are dropped and "
            "validation holds out files of data.paths (set data.val_paths to choose them)",
            UserWarning,
            stacklevel=2,
        )
    return recipe_obj.model_copy(update={"source": source})


def reference_table() -> str:
    """A markdown table of every recipe key with its type, default and description.

    ``docs/recipes.md`` embeds this table; a test keeps the two in step.
    """

    def type_name(annotation: Any) -> str:
        if annotation is type(None):
            return "null"
        if isinstance(annotation, type):
            return annotation.__name__
        args = typing.get_args(annotation)
        if typing.get_origin(annotation) is typing.Literal:
            return "one of " + ", ".join(repr(a) for a in args)
        if args and typing.get_origin(annotation) in (typing.Union, types.UnionType):
            return " or ".join(type_name(a) for a in args)
        return repr(annotation).replace("NoneType", "None")

    import types
    import typing

    rows = ["| key | type | default | description |", "|---|---|---|---|"]

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, f in model.model_fields.items():
            if name == "source":
                continue
            key = f"{prefix}{name}"
            ann = f.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                walk(ann, key + ".")
                continue
            if f.is_required():
                default = "required"
            elif f.default_factory is not None:
                default = repr(f.default_factory())
            else:
                default = repr(f.default)
            desc = (f.description or "").replace("|", "/")
            rows.append(f"| `{key}` | {type_name(ann)} | `{default}` | {desc} |")

    walk(Recipe, "")
    rows.append(
        "| `model.*` | any | | the network's own arguments (see `aesr-sci models` and docs/networks.md) |"
    )
    return "\n".join(rows)
