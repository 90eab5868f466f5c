"""Building blocks shared by the networks: grid-consistent interpolation, per-axis sub-pixel upsampling.

Everything here works for 2D and 3D tensors, ``(N, C, *spatial)``, and for a different integer
factor on each spatial axis (``(1, 1, 4)`` for thick-slice MRI). The functions are written so
that the networks can be exported with TorchScript (``torch.jit.script``) and ONNX with dynamic
spatial sizes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.layers import Conv
from torch import nn

from ..errors import ModelError
from ..spatial import CONVENTIONS, as_int_scale

__all__ = [
    "CONVENTIONS",
    "ResBlock",
    "SKIP_INIT_GAIN",
    "SRNetwork",
    "SubpixelUpsample",
    "check_positive",
    "conv",
    "crop_to",
    "icnr_",
    "interpolate",
    "pad_to_multiple",
    "parse_scale",
    "pixel_shuffle",
]


def parse_scale(scale: Any, spatial_dims: int) -> tuple[int, ...]:
    """Return ``scale`` as one positive integer factor per spatial axis.

    Parameters
    ----------
    scale
        An integer, or one integer per spatial axis (a tuple or list, e.g. ``(1, 1, 4)``). Floats
        that are whole numbers (``2.0``) are accepted.
    spatial_dims
        2 or 3.

    Returns
    -------
    tuple of int
        ``spatial_dims`` factors, each at least 1.

    Raises
    ------
    ModelError
        If a factor is not a whole number of at least 1, or the count does not match.

    Examples
    --------
    >>> parse_scale(2, 3)
    (2, 2, 2)
    >>> parse_scale([1, 2], 2)
    (1, 2)
    """
    try:
        return as_int_scale(scale, spatial_dims)
    except ValueError as exc:  # the package's one parser; a network's bad argument is a ModelError
        raise ModelError(f"{exc}; spatial_dims is {spatial_dims}") from None


def interpolate(x: torch.Tensor, scale: list[int], convention: str) -> torch.Tensor:
    """Upsample ``x`` by integer factors with (bi/tri)linear interpolation on the chosen grid.

    Parameters
    ----------
    x
        ``(N, C, *spatial)`` tensor with 1 to 3 spatial axes.
    scale
        One integer factor per spatial axis.
    convention
        ``"fov"``: output voxel ``j`` sits at input position ``(j + 0.5) / s - 0.5`` (the outer
        corners of both grids coincide; this is ``F.interpolate(..., align_corners=False)``).
        ``"origin"``: output voxel ``j`` sits at input position ``j / s`` (the first voxel centres
        coincide, as for MRI k-space truncation). Positions past the last input voxel take its
        value (border padding) in both conventions.

    Returns
    -------
    torch.Tensor
        ``(N, C, *(spatial * scale))``.

    Examples
    --------
    >>> x = torch.arange(3.0).view(1, 1, 3)
    >>> interpolate(x, [2], "origin")
    tensor([[[0.0000, 0.5000, 1.0000, 1.5000, 2.0000, 2.0000]]])
    >>> interpolate(x, [2], "fov")
    tensor([[[0.0000, 0.2500, 0.7500, 1.2500, 1.7500, 2.0000]]])
    """
    dims = x.dim() - 2
    if len(scale) != dims:
        raise ValueError("scale must have one factor per spatial axis of the tensor")
    if convention == "fov":
        if all(s == 1 for s in scale):
            return x
        factors = [float(s) for s in scale]
        mode = "linear" if dims == 1 else ("bilinear" if dims == 2 else "trilinear")
        return F.interpolate(x, scale_factor=factors, mode=mode, align_corners=False)
    if convention == "origin":
        for d in range(dims):
            if scale[d] > 1:
                x = _origin_axis(x, scale[d], d + 2)
        return x
    raise ValueError("unknown grid convention " + convention + ": use 'fov' or 'origin'")


def fourier_interpolate(x: torch.Tensor, scale: list[int]) -> torch.Tensor:
    """Zero-filled Fourier interpolation on the origin grid (output ``j`` at input ``j / s``).

    The natural interpolation for k-space truncated data: it puts back exactly the measured
    frequencies. Each axis is first extended symmetrically (``x`` followed by ``x`` reversed), so a
    patch is interpolated as a smooth periodic signal and does not ring at its edges; for a whole
    volume the interior matches plain zero-filled interpolation closely.

    Examples
    --------
    >>> x = torch.cos(torch.arange(8.0) * 3.14159265 / 4).view(1, 1, 8)
    >>> y = fourier_interpolate(x, [2])
    >>> y.shape, bool(torch.allclose(y[..., ::2], x, atol=1e-5))
    (torch.Size([1, 1, 16]), True)
    """
    if not torch.jit.is_scripting() and torch.is_autocast_enabled(x.device.type):
        # The skip carries nearly all of the signal: under mixed precision its matrix products would
        # run in (b)float16 and cap the output near 45 dB PSNR, so they stay in float32.
        with torch.autocast(device_type=x.device.type, enabled=False):
            return _fourier_axes(x.float(), scale)
    return _fourier_axes(x, scale)


def _fourier_axes(x: torch.Tensor, scale: list[int]) -> torch.Tensor:
    dims = x.dim() - 2
    for d in range(dims):
        if scale[d] > 1:
            x = _fourier_axis(x, scale[d], d + 2)
    return x


def _fourier_axis(x: torch.Tensor, s: int, dim: int) -> torch.Tensor:
    # Zero-filled DFT interpolation of the symmetric extension [x, reversed x] is the DCT-II
    # interpolation below (its Nyquist coefficient is zero), written as one real (n*s, n) matrix so
    # that it scripts and exports to ONNX: y(t) = sum_k w_k X_k cos(pi k (t + 1/2) / n) / n, with
    # X_k = sum_i x_i cos(pi k (i + 1/2) / n), w_0 = 1, w_k = 2, sampled at t = j / s.
    n = x.shape[dim]
    k = torch.arange(n, dtype=x.dtype, device=x.device)
    t = torch.arange(n * s, dtype=x.dtype, device=x.device) / float(s)
    weights = torch.full([n], 2.0, dtype=x.dtype, device=x.device)
    weights[0] = 1.0
    analysis = torch.cos(math.pi * k.unsqueeze(1) * (k.unsqueeze(0) + 0.5) / n)  # (k, i)
    synthesis = torch.cos(math.pi * (t.unsqueeze(1) + 0.5) * k.unsqueeze(0) / n)  # (j, k)
    matrix = (
        torch.matmul(synthesis * weights.unsqueeze(0), analysis) / n
    )  # (j, i); n stays symbolic for export
    return torch.matmul(x.movedim(dim, -1), matrix.t()).movedim(-1, dim)


def _origin_axis(x: torch.Tensor, s: int, dim: int) -> torch.Tensor:
    """Linear interpolation along one axis at positions ``j / s``, replicating the last sample."""
    n = x.shape[dim]
    following = torch.cat([x.narrow(dim, 1, n - 1), x.narrow(dim, n - 1, 1)], dim)
    step = following - x
    parts = [x + step * (float(r) / float(s)) for r in range(s)]
    return torch.stack(parts, dim + 1).flatten(dim, dim + 1)


def pixel_shuffle(x: torch.Tensor, scale: list[int]) -> torch.Tensor:
    """Rearrange ``(N, C * prod(scale), *S)`` into ``(N, C, *(S * scale))``, one factor per axis.

    The channel index is read as ``c * prod(scale) + offset``, with the sub-pixel ``offset``
    enumerating ``scale`` in C order (first axis slowest). For ``scale = (2, 2)`` this is
    :func:`torch.nn.functional.pixel_shuffle`; axes with factor 1 are left alone.

    Examples
    --------
    >>> x = torch.arange(4.0).view(1, 4, 1, 1, 1)
    >>> pixel_shuffle(x, [1, 1, 4]).flatten().tolist()
    [0.0, 1.0, 2.0, 3.0]
    """
    dims = len(scale)
    n = x.shape[0]
    spatial = x.shape[2:]
    p = 1
    for s in scale:
        p *= s
    c = x.shape[1] // p
    x = x.reshape([n, c] + list(scale) + list(spatial))  # noqa: RUF005 (TorchScript has no starred lists)
    perm = [0, 1]
    for d in range(dims):
        perm.append(2 + dims + d)
        perm.append(2 + d)
    x = x.permute(perm)
    out_shape = [n, c]
    for d in range(dims):
        out_shape.append(spatial[d] * scale[d])
    return x.reshape(out_shape)


def icnr_(
    weight: torch.Tensor,
    scale: Sequence[int],
    *,
    init: Callable[[torch.Tensor], Any] = nn.init.kaiming_normal_,
) -> torch.Tensor:
    """ICNR initialisation, in place, of a convolution that feeds :func:`pixel_shuffle`.

    All ``prod(scale)`` sub-pixel kernels of an output channel get the same initial weights, so
    the untrained upsampler equals nearest-neighbour upsampling of one convolution and shows no
    checkerboard pattern (Aitken et al., 2017, "Checkerboard artifact free sub-pixel convolution").

    Parameters
    ----------
    weight
        Convolution weight ``(C * prod(scale), C_in, *kernel)``.
    scale
        The factors that :func:`pixel_shuffle` will use.
    init
        Initialiser applied to the ``(C, C_in, *kernel)`` sub-kernel.
    """
    p = math.prod(scale)
    if weight.shape[0] % p:
        raise ValueError(f"{weight.shape[0]} output channels are not a multiple of prod(scale) = {p}")
    sub = torch.empty((weight.shape[0] // p, *weight.shape[1:]), dtype=weight.dtype, device=weight.device)
    init(sub)
    with torch.no_grad():
        weight.copy_(sub.repeat_interleave(p, dim=0))
    return weight


def conv(
    spatial_dims: int, in_channels: int, out_channels: int, *, kernel_size: int = 3, stride: int = 1
) -> nn.Module:
    """A 2D/3D convolution with "same" padding for odd kernels (MONAI layer factory)."""
    return Conv[Conv.CONV, spatial_dims](
        in_channels, out_channels, kernel_size=kernel_size, stride=stride, padding=(kernel_size - 1) // 2
    )


class SubpixelUpsample(nn.Module):
    """Convolution to ``out_channels * prod(scale)`` channels, then a per-axis pixel shuffle.

    Unlike :class:`monai.networks.blocks.SubpixelUpsample`, the factor may differ per axis
    (``(1, 1, 4)``). The convolution is ICNR-initialised (:func:`icnr_`), so at initialisation a
    constant input gives an output that is constant within each ``scale`` block.

    Parameters
    ----------
    spatial_dims
        2 or 3.
    in_channels, out_channels
        Channel counts before and after upsampling.
    scale
        One integer factor per spatial axis.
    kernel_size
        Size of the convolution kernel.
    init_gain
        Factor on the initial (Kaiming-normal) weights; networks with a global interpolated skip use
        a small gain so that training starts close to interpolation.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        scale: Sequence[int],
        *,
        kernel_size: int = 3,
        init_gain: float = 1.0,
    ) -> None:
        super().__init__()
        self.scale: list[int] = [int(s) for s in scale]
        self.conv = conv(
            spatial_dims, in_channels, out_channels * math.prod(self.scale), kernel_size=kernel_size
        )
        icnr_(self.conv.weight, self.scale)
        with torch.no_grad():
            self.conv.weight.mul_(init_gain)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pixel_shuffle(self.conv(x), self.scale)


class ResBlock(nn.Module):
    """Conv-ReLU-conv residual block without normalisation (EDSR), output ``x + res_scale * f(x)``."""

    def __init__(self, spatial_dims: int, features: int, *, res_scale: float = 1.0) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv(spatial_dims, features, features),
            nn.ReLU(inplace=True),
            conv(spatial_dims, features, features),
        )
        self.res_scale = float(res_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) * self.res_scale


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Replicate-pad the end of every spatial axis of ``x`` up to a multiple of ``multiple``."""
    dims = x.dim() - 2
    pad: list[int] = []
    for d in range(dims - 1, -1, -1):  # F.pad lists the last axis first
        n = x.shape[2 + d]
        pad.append(0)
        pad.append((multiple - n % multiple) % multiple)
    if sum(pad) == 0:
        return x
    return F.pad(x, pad, mode="replicate")


def crop_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Crop the spatial axes of ``x`` to the spatial size of ``like``, keeping the start."""
    for d in range(2, like.dim()):
        x = x.narrow(d, 0, like.shape[d])
    return x


def check_positive(model: str, **values: Any) -> None:
    """Raise :class:`ModelError` unless every value is positive (used by the constructors)."""
    for key, value in values.items():
        if value <= 0:
            raise ModelError(f"model {model!r}: {key} must be > 0 (got {value!r})")


SKIP_INIT_GAIN = 0.1  # initial gain of the upsampler of networks with a global skip


class SRNetwork(nn.Module):
    """Base class of the networks: stores the shared geometry and the global interpolated skip.

    Subclasses build their layers and implement :meth:`local`; ``forward`` adds :meth:`skip` to it
    (unless ``skip_mode`` is ``"none"``). Tiled inference runs :meth:`local` window by window and
    adds the skip once over the whole input, since a Fourier skip is global. ``config`` (set by
    :func:`aesr_sci.nets.build_model`) holds the JSON-serialisable build arguments.

    Parameters
    ----------
    spatial_dims
        2 or 3.
    in_channels
        Input channels (bands, MRI contrasts).
    scale
        Integer factor, or one per spatial axis.
    out_channels
        Output channels; ``None`` means ``in_channels``.
    convention
        Grid convention of the training pairs, ``"fov"`` or ``"origin"`` (see :func:`interpolate`).
    skip
        The global skip's interpolation: ``"linear"``, ``"fourier"`` (origin convention only) or
        ``"auto"`` (Fourier for the origin convention, linear otherwise).
    """

    def __init__(
        self,
        *,
        spatial_dims: int,
        in_channels: int,
        scale: int | Sequence[int],
        out_channels: int | None = None,
        convention: str = "fov",
        skip: str = "auto",
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ModelError(f"spatial_dims must be 2 or 3 (got {spatial_dims!r})")
        if out_channels is None:
            out_channels = in_channels
        for key, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ModelError(f"{key} must be a positive integer (got {value!r})")
        if convention not in CONVENTIONS:
            raise ModelError(
                f"unknown grid convention {convention!r}: choose one of {', '.join(CONVENTIONS)}"
            )
        self.spatial_dims = int(spatial_dims)
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.scale: list[int] = list(parse_scale(scale, spatial_dims))
        self.convention = str(convention)
        if skip not in ("auto", "linear", "fourier"):
            raise ModelError(f"skip must be auto, linear or fourier (got {skip!r})")
        if skip == "fourier" and convention != "origin":
            raise ModelError(
                "skip 'fourier' needs the origin grid convention (k-space data): use skip 'linear'"
            )
        # k-space data: start from zero-filled Fourier interpolation, the best linear estimate
        self.skip_mode = (
            "fourier" if skip == "fourier" or (skip == "auto" and convention == "origin") else "linear"
        )
        self.config: dict[str, Any] = {}
        # a learned 1x1 projection when the channel counts differ (it commutes with interpolation)
        self.skip_proj: nn.Module = (
            nn.Identity()
            if self.in_channels == self.out_channels
            else conv(spatial_dims, self.in_channels, self.out_channels, kernel_size=1)
        )

    def local(self, lq: torch.Tensor) -> torch.Tensor:
        """The output without the global skip: convolutions only, so it can be tiled exactly."""
        raise NotImplementedError

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        if self.skip_mode == "none":
            return self.local(lq)
        return self.local(lq) + self.skip(lq)

    def skip(self, lq: torch.Tensor) -> torch.Tensor:
        """The global skip: ``lq`` interpolated to the output grid (channels projected if needed).

        Linear interpolation on the training grid, or zero-filled Fourier interpolation for
        k-space (origin-convention) models (``skip="auto"`` picks it; see :func:`fourier_interpolate`).
        """
        if self.skip_mode == "fourier":
            return fourier_interpolate(self.skip_proj(lq), self.scale)
        return interpolate(self.skip_proj(lq), self.scale, self.convention)
