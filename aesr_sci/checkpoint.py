"""Models and training state on disk: weights in safetensors, everything else in JSON.

Nothing here ever unpickles: a model directory holds

``model.json``
    what inference needs: the network and its arguments, the scale, the degradation and its grid
    convention, the normalisation and the mask policy its statistics were fitted with
    (``statistics``), band names, dtype, the training summary;
``model.safetensors``
    the network's weights.

A training run also keeps ``state.json`` / ``state.safetensors`` (optimiser moments, step, random
state) so that ``--resume`` continues exactly where an interrupted run stopped.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from . import __version__
from .errors import ModelError
from .fileutil import atomic_output
from .spatial import per_axis

__all__ = [
    "MODEL_JSON",
    "MODEL_WEIGHTS",
    "LoadedModel",
    "load_model",
    "load_state",
    "read_state_meta",
    "save_model",
    "save_state",
    "write_json",
]

log = logging.getLogger(__name__)

MODEL_JSON = "model.json"
MODEL_WEIGHTS = "model.safetensors"
STATE_JSON = "state.json"
STATE_WEIGHTS = "state.safetensors"
FORMAT = "aesr-sci.model"
FORMAT_VERSION = 1


def _finite_json(obj: Any, replaced: list[str], where: str = "") -> Any:
    """``obj`` with NaN and infinite floats replaced by None (JSON has no Infinity); their keys in
    ``replaced``."""
    if isinstance(obj, dict):
        return {k: _finite_json(v, replaced, f"{where}.{k}" if where else str(k)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_json(v, replaced, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, float) and not math.isfinite(obj):
        replaced.append(where)
        return None
    return obj


def write_json(path: str | os.PathLike[str], obj: Any, *, overwrite: bool = True) -> Path:
    """Write ``obj`` as indented, valid JSON, atomically; NaN and infinite numbers (the PSNR of two
    identical images) become ``null``, with one warning that says which."""
    replaced: list[str] = []
    clean = _finite_json(obj, replaced)
    if replaced:
        log.warning(
            "Warning: %s: %d non-finite number(s) written as null (e.g. %s; an infinite PSNR means identical images)",
            path,
            len(replaced),
            replaced[0],
        )
    with atomic_output(path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(clean, indent=2, sort_keys=False, allow_nan=False) + "\n", encoding="utf-8")
    return Path(path)


def _state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    # safetensors refuses shared or non-contiguous storage; weights are small, so copy
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}


def save_model(
    directory: str | os.PathLike[str], network: torch.nn.Module, config: Mapping[str, Any]
) -> Path:
    """Save ``network`` and its inference ``config`` into ``directory`` (created if needed).

    ``config`` must hold at least ``network`` (the registry's build arguments: ``name``,
    ``spatial_dims``, ``in_channels``, ``scale`` ...), ``degradation`` and ``normalization``.
    Both files are written atomically; the weights first, so a ``model.json`` always has its
    weights beside it.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for key in ("network", "degradation", "normalization"):
        if key not in config:
            raise ValueError(f"model config needs a {key!r} entry")
    tensors = _state_dict(network)
    with atomic_output(directory / MODEL_WEIGHTS, overwrite=True) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT})
    doc = {"format": FORMAT, "format_version": FORMAT_VERSION, "aesr_sci_version": __version__, **config}
    write_json(directory / MODEL_JSON, doc)
    return directory / MODEL_JSON


def _model_json_path(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if p.is_dir():
        candidate = p / MODEL_JSON
        if not candidate.is_file() and (p / "model" / MODEL_JSON).is_file():
            candidate = p / "model" / MODEL_JSON
        p = candidate
    if not p.is_file():
        raise ModelError(f"no model at {path}: give a training run directory or its model/{MODEL_JSON} file")
    return p


@dataclass
class LoadedModel:
    """A network ready for inference together with everything needed to use it correctly."""

    network: torch.nn.Module
    config: dict[str, Any]
    path: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def spatial_dims(self) -> int:
        return int(self.config["network"]["spatial_dims"])

    @property
    def in_channels(self) -> int:
        return int(self.config["network"]["in_channels"])

    @property
    def scale(self) -> tuple[int, ...]:
        return per_axis(self.config["network"]["scale"], self.spatial_dims)

    @property
    def convention(self) -> str:
        return str(self.config["degradation"].get("convention", "fov"))

    @property
    def degradation(self) -> Any:
        from .data.degrade import Degradation

        return Degradation.from_dict(self.config["degradation"])

    @property
    def normalization(self) -> dict[str, Any]:
        return dict(self.config["normalization"])

    @property
    def statistics(self) -> dict[str, Any]:
        """How to fit the input's normalisation statistics, as in training: keyword arguments of
        :func:`~aesr_sci.data.normalize.fit_statistics` (``policy``, ``threshold``). Models saved
        before it was recorded get ``"valid"``, the policy their inference always used."""
        return _policy(self.config.get("statistics") or {})

    @property
    def guide_channels(self) -> int:
        """Bands of the guide the model takes (0: the model takes no guide)."""
        return int(self.config.get("guide_channels") or 0)

    @property
    def guide_band_names(self) -> list[str]:
        return [n for n in self.config.get("guide_band_names") or [] if n]

    @property
    def guide_statistics(self) -> dict[str, Any]:
        """How to fit the guide's own statistics (as :attr:`statistics`; the input's when not recorded)."""
        return _policy(self.config.get("guide_statistics") or self.config.get("statistics") or {})

    @property
    def band_names(self) -> list[str]:
        return list(self.config.get("band_names") or [])

    @property
    def patch_size(self) -> tuple[int, ...] | None:
        p = self.config.get("inference_patch")
        if p is None:
            return None
        return per_axis(p, self.spatial_dims, name="inference_patch")

    def example_shape(self) -> tuple[int, ...]:
        """A small input shape ``(1, C, *S)`` that the network accepts (for export checks)."""
        return (1, self.in_channels, *([12] * self.spatial_dims))


def _policy(recorded: dict[str, Any]) -> dict[str, Any]:
    """``fit_statistics`` keywords from a recorded ``{"policy", "threshold"}`` (``"valid"`` when absent)."""
    out: dict[str, Any] = {"policy": str(recorded.get("policy", "valid"))}
    if "threshold" in recorded:
        out["threshold"] = float(recorded["threshold"])
    return out


def _read_model_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path} is not a readable model file ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ModelError(f'{path} is not an aesr-sci model file (expected "format": "{FORMAT}")')
    if int(doc.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelError(
            f"{path} was written by a newer aesr-sci ({doc.get('aesr_sci_version')}): upgrade aesr-sci to load it"
        )
    return doc


def model_files(path: str | os.PathLike[str]) -> list[Path]:
    """The files a model is made of (``model.json`` and its weights), for checking that no output
    lands on them; empty when ``path`` is not a model."""
    try:
        json_path = _model_json_path(path)
    except ModelError:
        return []
    return [json_path, json_path.with_name(MODEL_WEIGHTS)]


def _build_network(json_path: Path, doc: dict[str, Any]) -> torch.nn.Module:
    """The network that ``model.json`` describes; one line naming the file when it cannot."""
    from .nets import build_model

    net_cfg = doc.get("network")
    for key in ("degradation", "normalization"):
        if not isinstance(doc.get(key), dict):
            raise ModelError(f"{json_path} has no {key!r} section: restore the file written by training")
    if not isinstance(net_cfg, dict) or not isinstance(net_cfg.get("name"), str):
        raise ModelError(
            f"{json_path} has no 'network' section with a 'name': restore the file written by training"
        )
    net_cfg = dict(net_cfg)
    name = net_cfg.pop("name")
    try:
        return build_model(name, **net_cfg)
    except (TypeError, ValueError, KeyError) as exc:
        if isinstance(exc, ModelError):
            raise ModelError(f"{json_path}: {exc}") from None
        raise ModelError(
            f"{json_path}: its network settings are invalid ({exc}); restore the file written by training"
        ) from None


def load_model(path: str | os.PathLike[str], *, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a model saved by training (a run directory, its ``model/`` folder, or ``model.json``).

    Raises
    ------
    ModelError
        If the files are missing, not an aesr-sci model, or the weights do not fit the network.

    Examples
    --------
    >>> model = load_model("runs/mri_x2")  # doctest: +SKIP
    >>> model.scale, model.convention  # doctest: +SKIP
    ((2, 2, 2), 'origin')
    """
    json_path = _model_json_path(path)
    doc = _read_model_json(json_path)
    weights = json_path.with_name(MODEL_WEIGHTS)
    if not weights.is_file():
        raise ModelError(f"{json_path} has no {MODEL_WEIGHTS} beside it: the model is incomplete")
    network = _build_network(json_path, doc)
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise ModelError(f"{weights} is not a readable safetensors file ({exc})") from None
    fix = f"restore the {MODEL_JSON} written with these weights"
    try:
        missing, unexpected = network.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # tensors of other shapes: the settings were edited
        first = next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line), "")
        raise ModelError(
            f"{json_path}: its network settings disagree with {weights.name} ({first}); {fix}"
        ) from None
    if missing or unexpected:
        raise ModelError(
            f"{json_path}: its network settings disagree with {weights.name} "
            f"({len(missing)} missing and {len(unexpected)} unexpected tensors); {fix}"
        )
    network.to(device).eval()
    return LoadedModel(network=network, config=doc, path=json_path.parent)


# ------------------------------------------------------------------------------- training state
def _flatten_optimizer(optimizer: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, torch.Tensor], dict]:
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        for key, value in st.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}/{pid}/{key}"] = value.detach().to("cpu").contiguous().clone()
            else:
                plain.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "plain_state": plain}


def _unflatten_optimizer(
    optimizer: torch.optim.Optimizer,
    tensors: Mapping[str, torch.Tensor],
    meta: Mapping[str, Any],
    prefix: str,
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if not name.startswith(prefix + "/"):
            continue
        pid, key = name[len(prefix) + 1 :].split("/", 1)
        state.setdefault(int(pid), {})[key] = value
    for pid, entries in meta.get("plain_state", {}).items():
        state.setdefault(int(pid), {}).update(entries)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_state(
    directory: str | os.PathLike[str],
    *,
    modules: Mapping[str, torch.nn.Module],
    optimizers: Mapping[str, torch.optim.Optimizer],
    meta: Mapping[str, Any],
) -> None:
    """Save the full training state (weights, optimiser moments, RNG) for ``--resume``."""
    directory = Path(directory)
    tensors: dict[str, torch.Tensor] = {}
    opt_meta: dict[str, Any] = {}
    for name, module in modules.items():
        tensors.update({f"module/{name}/{k}": v for k, v in _state_dict(module).items()})
    for name, opt in optimizers.items():
        t, m = _flatten_optimizer(opt, f"optim/{name}")
        tensors.update(t)
        opt_meta[name] = m
    tensors["rng/torch"] = torch.get_rng_state()
    step = int(meta["step"])
    with atomic_output(directory / STATE_WEIGHTS, overwrite=True) as tmp:
        save_file(tensors, str(tmp), metadata={"step": str(step)})
    write_json(directory / STATE_JSON, {**meta, "optimizers": opt_meta})


_START_AGAIN = "start the run again with --overwrite"


def read_state_meta(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``state.json`` of a run, checked to be a training state (one-line :class:`ModelError` if not)."""
    json_path = Path(directory) / STATE_JSON
    if not json_path.is_file() or not json_path.with_name(STATE_WEIGHTS).is_file():
        raise ModelError(
            f"nothing to resume in {directory}: no {STATE_JSON}/{STATE_WEIGHTS} (start without --resume)"
        )
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{json_path} is not a readable training state ({exc}): {_START_AGAIN}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("step"), int) or "optimizers" not in meta:
        raise ModelError(
            f"{json_path} is not an aesr-sci training state (no step or optimizers): {_START_AGAIN}"
        )
    weights = json_path.with_name(STATE_WEIGHTS)
    try:
        with safe_open(str(weights), framework="pt") as fh:  # reads the header only
            saved_step = (fh.metadata() or {}).get("step")
    except (SafetensorError, OSError) as exc:
        raise ModelError(f"{weights} is not a readable safetensors file ({exc}): {_START_AGAIN}") from None
    if saved_step is not None and int(saved_step) != int(meta["step"]):
        raise ModelError(
            f"{directory}: {STATE_WEIGHTS} (step {saved_step}) and {STATE_JSON} (step {meta['step']}) do not "
            f"belong together (the run was stopped while saving): {_START_AGAIN}"
        )
    return meta


def load_state(
    directory: str | os.PathLike[str],
    *,
    modules: Mapping[str, torch.nn.Module],
    optimizers: Mapping[str, torch.optim.Optimizer],
) -> dict[str, Any]:
    """Restore what :func:`save_state` wrote; returns its ``meta`` (step, epoch, best score...).

    Raises
    ------
    ModelError
        If the state is missing, truncated, from another version or for other networks.
    """
    directory = Path(directory)
    meta = read_state_meta(directory)
    weights = directory / STATE_WEIGHTS
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise ModelError(f"{weights} is not a readable safetensors file ({exc}): {_START_AGAIN}") from None
    try:
        for name, module in modules.items():
            prefix = f"module/{name}/"
            module.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
        for name, opt in optimizers.items():
            _unflatten_optimizer(opt, tensors, meta["optimizers"][name], f"optim/{name}")
        torch.set_rng_state(tensors["rng/torch"])
    except (KeyError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"{weights} does not fit this run's networks ({first}): resume with the run's own recipe, or {_START_AGAIN}"
        ) from None
    return meta
