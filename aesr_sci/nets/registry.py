"""The registry: build a network by name with checked arguments, rebuild it from its config, describe all."""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..errors import ModelError
from .attention import AttentionSR
from .blocks import SRNetwork, parse_scale
from .gan import GANModel, PatchDiscriminator
from .guided import GuidedDualSR, GuidedResidualSR, GuidedSRNetwork
from .multiscale import MultiscaleSR
from .residual import ResidualSR
from .seed import SeedAutoencoder

__all__ = ["build_model", "describe_models", "is_guided", "model_config", "model_from_config", "model_names"]

# name -> (class, one-line description)
_NETWORKS: dict[str, tuple[type[SRNetwork], str]] = {
    "seed": (SeedAutoencoder, "encoder-decoder of the founding document, learned sub-pixel upsampling"),
    "residual": (ResidualSR, "EDSR-like residual blocks in LR space, sub-pixel upsampling, global skip"),
    "multiscale": (
        MultiscaleSR,
        "U-Net in LR space (skips across scales), sub-pixel upsampling, global skip",
    ),
    "attention": (AttentionSR, "RCAN-like channel attention (+ optional spatial), global skip"),
    "guided_residual": (
        GuidedResidualSR,
        "guided (DSen2-like): interpolated target + guide, residual blocks on the guide grid",
    ),
    "guided_dual": (
        GuidedDualSR,
        "guided: target and guide encoders joined on the guide grid, residual decoder",
    ),
}
_GAN_DESCRIPTION = "generator (default residual) + spectral-norm patch discriminator for adversarial training"
_COMMON = ("spatial_dims", "in_channels", "guide_channels", "scale", "out_channels", "convention")


def model_names() -> list[str]:
    """Names accepted by :func:`build_model`, sorted.

    Examples
    --------
    >>> model_names()
    ['attention', 'gan', 'guided_dual', 'guided_residual', 'multiscale', 'residual', 'seed']
    """
    return sorted([*_NETWORKS, "gan"])


def is_guided(name: str) -> bool:
    """Whether the network called ``name`` takes a guide: ``forward(lq, guide)`` instead of ``forward(lq)``.

    Examples
    --------
    >>> is_guided("guided_residual"), is_guided("residual")
    (True, False)
    """
    return name in _NETWORKS and issubclass(_NETWORKS[name][0], GuidedSRNetwork)


def _options(cls: type) -> dict[str, Any]:
    """Keyword options of a network class beyond the common geometry, with their defaults."""
    params = inspect.signature(cls.__init__).parameters
    return {
        name: p.default
        for name, p in params.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in _COMMON
    }


def _listing(options: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in options.items()) or "none"


def _check_option(model: str, key: str, value: Any, default: Any, options: Mapping[str, Any]) -> Any:
    """Check ``value`` against the type of ``default``; return it normalised (lists become tuples)."""
    if isinstance(default, bool):
        ok = isinstance(value, bool)
        kind = "a boolean"
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
        kind = "an integer"
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
        kind = "a number"
    elif isinstance(default, str):
        ok = isinstance(value, str)
        kind = "a string"
    elif isinstance(default, tuple):
        ok = isinstance(value, (tuple, list)) and all(isinstance(v, type(default[0])) for v in value)
        value = tuple(value) if ok else value
        kind = f"a list of {type(default[0]).__name__}"
    else:
        ok, kind = True, ""
    if not ok:
        raise ModelError(
            f"model {model!r}: {key} must be {kind} (got {value!r}); valid options: {_listing(options)}"
        )
    return value


def _resolve(model: str, cls: type, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    options = _options(cls)
    unknown = sorted(set(kwargs) - set(options))
    if unknown:
        raise ModelError(
            f"model {model!r} has no option {unknown[0]!r}; valid options: {_listing(options)} "
            f"(besides {', '.join(_COMMON)})"
        )
    resolved = dict(options)
    for key, value in kwargs.items():
        resolved[key] = _check_option(model, key, value, options[key], options)
    return resolved


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def build_model(
    name: str,
    *,
    spatial_dims: int,
    in_channels: int,
    scale: int | tuple[int, ...] | list[int],
    out_channels: int | None = None,
    convention: str = "fov",
    guide_channels: int | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a network of the family by name, checking every argument.

    Parameters
    ----------
    name
        One of :func:`model_names`.
    spatial_dims
        2 (rasters) or 3 (volumes).
    in_channels
        Input channels (bands or contrasts).
    scale
        Integer factor, or one integer per spatial axis, e.g. ``(1, 1, 4)``.
    out_channels
        Output channels; ``None`` means ``in_channels``.
    convention
        ``"fov"`` or ``"origin"``: the grid convention of the training pairs (see
        :func:`aesr_sci.nets.blocks.interpolate`).
    guide_channels
        Bands of the guide, for the guided networks (:func:`is_guided`) only, which require it.
    **kwargs
        Network options (``features``, ``blocks``...; see each class). For ``"gan"``:
        ``generator`` (a network name, default ``"residual"``), ``discriminator`` (a dict of
        :class:`~aesr_sci.nets.gan.PatchDiscriminator` options), and the generator's options.

    Returns
    -------
    torch.nn.Module
        The network, with its resolved build arguments in ``.config`` (JSON-serialisable;
        :func:`model_from_config` rebuilds it).

    Raises
    ------
    ModelError
        For an unknown name, an unknown option, or an option of the wrong type or value.

    Examples
    --------
    >>> net = build_model("residual", spatial_dims=3, in_channels=1, scale=2, blocks=2)
    >>> net.config["blocks"], net.config["features"]
    (2, 32)
    """
    geometry = {
        "spatial_dims": spatial_dims,
        "in_channels": in_channels,
        "scale": scale,
        "out_channels": out_channels,
        "convention": convention,
    }
    if spatial_dims not in (2, 3) or isinstance(spatial_dims, bool):
        raise ModelError(f"spatial_dims must be 2 or 3 (got {spatial_dims!r})")
    factors = parse_scale(scale, spatial_dims)
    geometry["scale"] = factors[0] if len(set(factors)) == 1 else list(factors)
    if name == "gan":
        if guide_channels is not None:
            raise ModelError(
                "model 'gan' takes no guide: adversarial training of guided networks is not supported"
            )
        return _build_gan(geometry, kwargs)
    if name not in _NETWORKS:
        raise ModelError(f"unknown model {name!r}: choose one of {', '.join(model_names())}")
    cls = _NETWORKS[name][0]
    options = _resolve(name, cls, kwargs)
    if is_guided(name) != (guide_channels is not None):
        need = "needs guide_channels (the number of guide bands)" if is_guided(name) else "takes no guide"
        raise ModelError(f"model {name!r} {need}")
    if guide_channels is not None:
        geometry["guide_channels"] = guide_channels
    module = cls(**geometry, **options)
    module.config = _jsonable({"name": name, **geometry, "out_channels": module.out_channels, **options})
    return module


def _build_gan(geometry: dict[str, Any], kwargs: Mapping[str, Any]) -> GANModel:
    kwargs = dict(kwargs)
    generator = kwargs.pop("generator", "residual")
    disc_kwargs = kwargs.pop("discriminator", None) or {}
    if generator not in _NETWORKS:
        raise ModelError(
            f"model 'gan': unknown generator {generator!r}: choose one of {', '.join(sorted(_NETWORKS))}"
        )
    if not isinstance(disc_kwargs, Mapping):
        raise ModelError(f"model 'gan': discriminator must be a dict of options (got {disc_kwargs!r})")
    net = build_model(generator, **geometry, **kwargs)
    disc_options = _resolve("gan discriminator", PatchDiscriminator, disc_kwargs)
    disc = PatchDiscriminator(geometry["spatial_dims"], net.out_channels, **disc_options)
    model = GANModel(net, disc)
    gen_config = {k: v for k, v in net.config.items() if k != "name"}
    model.config = _jsonable(
        {"name": "gan", "generator": generator, "discriminator": disc_options, **gen_config}
    )
    return model


def model_config(module: nn.Module) -> dict[str, Any]:
    """The JSON-serialisable build arguments of a network made by :func:`build_model`.

    Raises
    ------
    ModelError
        If ``module`` was not built by :func:`build_model`.
    """
    config = getattr(module, "config", None)
    if not isinstance(config, dict) or "name" not in config:
        raise ModelError(f"{type(module).__name__} was not built by aesr_sci.nets.build_model: no config")
    return copy.deepcopy(config)


def model_from_config(config: Mapping[str, Any]) -> nn.Module:
    """Rebuild a network from :func:`model_config`'s dictionary (weights are not included).

    Examples
    --------
    >>> net = build_model("seed", spatial_dims=2, in_channels=3, scale=[1, 2])
    >>> model_from_config(model_config(net)).config == net.config
    True
    """
    config = dict(config)
    if "name" not in config:
        raise ModelError("a model config needs a 'name' key")
    name = config.pop("name")
    return build_model(name, **config)


def _count_macs(module: nn.Module, x: torch.Tensor) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    inputs = (x, module.example_guide(x)) if isinstance(module, GuidedSRNetwork) else (x,)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(*inputs)
    return counter.get_total_flops() / 2.0


def describe_models(
    *, spatial_dims: int, in_channels: int, scale: Any, guide_channels: int = 1
) -> list[dict[str, Any]]:
    """Parameters and compute of every registered network at its defaults, for one configuration.

    MACs are counted with :class:`torch.utils.flop_counter.FlopCounterMode` (convolutions and
    matrix products; elementwise work and interpolation are not counted) on a small input and
    divided by the number of output voxels. For ``gan`` the generator is described (the
    discriminator only runs during training); guided networks are given a guide of
    ``guide_channels`` bands on the output grid.

    Returns
    -------
    list of dict
        One per name, with keys ``name``, ``parameters``, ``macs_per_output_voxel`` and
        ``description``.

    Examples
    --------
    >>> rows = describe_models(spatial_dims=2, in_channels=1, scale=2)
    >>> [r["name"] for r in rows][:2]
    ['attention', 'gan']
    """
    factors = parse_scale(scale, spatial_dims) if spatial_dims in (2, 3) else None
    if factors is None:
        raise ModelError(f"spatial_dims must be 2 or 3 (got {spatial_dims!r})")
    size = 16 if spatial_dims == 2 else 8
    x = torch.rand(1, in_channels, *([size] * spatial_dims))
    rows = []
    for name in model_names():
        guide = {"guide_channels": guide_channels} if is_guided(name) else {}
        module = build_model(
            name, spatial_dims=spatial_dims, in_channels=in_channels, scale=scale, **guide
        ).eval()
        net = module.generator if isinstance(module, GANModel) else module
        out_voxels = math.prod(size * f for f in factors)
        rows.append(
            {
                "name": name,
                "parameters": sum(p.numel() for p in net.parameters()),
                "macs_per_output_voxel": _count_macs(net, x) / out_voxels,
                "description": _NETWORKS[name][1] if name in _NETWORKS else _GAN_DESCRIPTION,
            }
        )
    return rows
