"""Export a network to TorchScript or ONNX, then reload the file and check it against PyTorch."""

from __future__ import annotations

import copy
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelError
from ..fileutil import atomic_output
from .gan import GANModel
from .guided import GuidedSRNetwork

__all__ = ["EXPORT_FORMATS", "export_model"]

log = logging.getLogger(__name__)

EXPORT_FORMATS: tuple[str, ...] = ("onnx", "torchscript")
_SUFFIXES = {".onnx": "onnx", ".pt": "torchscript", ".ts": "torchscript", ".torchscript": "torchscript"}
ONNX_OPSET = 18
_INPUT_NAMES = ("lq", "guide")  # a guided network's second input is the guide


def _format_from(path: Path, fmt: str | None) -> str:
    if fmt is not None:
        if fmt not in EXPORT_FORMATS:
            raise ModelError(f"unknown export format {fmt!r}: choose one of {', '.join(EXPORT_FORMATS)}")
        return fmt
    suffix = path.suffix.lower()
    if suffix not in _SUFFIXES:
        raise ModelError(
            f"cannot tell the export format from {path.name!r}: use a .onnx, .pt or .ts name, or pass fmt"
        )
    return _SUFFIXES[suffix]


#: what ONNX export imports (torch's dynamo exporter needs onnxscript, the check needs onnx)
_ONNX_MODULES = ("onnx", "onnxscript")


def _require_onnx() -> None:
    """Refuse ONNX export in one line, naming the extra to install, when its packages are missing."""
    import importlib.util

    missing = [m for m in _ONNX_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise ModelError(
            f"exporting to ONNX needs {', '.join(missing)}: pip install 'aesr-sci[export]' "
            "(or export to TorchScript: a .pt output)"
        )


def _to_torchscript(net: nn.Module, example: tuple[torch.Tensor, ...], path: Path) -> str:
    """Script the network (dynamic shapes); fall back to tracing if it is not scriptable."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated but still the format
        try:
            exported = torch.jit.script(net)
            how = "script"
        except Exception as exc:  # scripting rejects some Python constructs; tracing always works
            log.warning("torch.jit.script failed (%s); tracing instead (shapes may be fixed)", exc)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            exported = torch.jit.trace(net, example)
            how = "trace"
        torch.jit.save(exported, str(path))
    return how


def _run_torchscript(path: Path, example: tuple[torch.Tensor, ...]) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        loaded = torch.jit.load(str(path), map_location="cpu")
        with torch.no_grad():
            return loaded(*example)


def _to_onnx(net: nn.Module, example: tuple[torch.Tensor, ...], path: Path) -> str:
    from torch.export import Dim

    dynamic = {
        name: {axis: Dim.AUTO for axis in range(x.dim()) if axis != 1}
        for name, x in zip(_INPUT_NAMES, example)
    }
    torch_onnx_log = logging.getLogger("torch.onnx")
    level = torch_onnx_log.level
    torch_onnx_log.setLevel(logging.ERROR)  # the exporter logs about optional torchvision ops
    try:
        _onnx_export(net, example, path, dynamic)
    finally:
        torch_onnx_log.setLevel(level)
    return "dynamo"


def _onnx_export(
    net: nn.Module, example: tuple[torch.Tensor, ...], path: Path, dynamic: dict[str, Any]
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter warns about its own internals
        torch.onnx.export(
            net,
            example,
            str(path),
            input_names=list(_INPUT_NAMES[: len(example)]),
            output_names=["sr"],
            dynamic_shapes=dynamic,
            opset_version=ONNX_OPSET,
            external_data=False,
            dynamo=True,
            verbose=False,
        )


def run_onnx(
    path: str | os.PathLike[str], lq: torch.Tensor, guide: torch.Tensor | None = None
) -> tuple[torch.Tensor, str]:
    """Run an exported ONNX network on ``lq`` (and ``guide``, for a guided network); return the
    output and the runtime used.

    onnxruntime is used when installed, else :class:`onnx.reference.ReferenceEvaluator` (exact but
    slow: keep inputs tiny).
    """
    tensors = (lq,) if guide is None else (lq, guide)
    feed = {name: x.detach().cpu().numpy() for name, x in zip(_INPUT_NAMES, tensors)}
    try:
        import onnxruntime
    except ImportError:
        from onnx.reference import ReferenceEvaluator

        result = ReferenceEvaluator(str(path)).run(None, feed)[0]
        return torch.from_numpy(result), "onnx.reference"
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    result = session.run(None, feed)[0]
    return torch.from_numpy(result), "onnxruntime"


def export_model(
    module: nn.Module,
    path: str | os.PathLike[str],
    *,
    fmt: str | None = None,
    example_shape: Sequence[int],
    overwrite: bool = False,
    rtol: float = 1e-4,
) -> dict[str, Any]:
    """Export a network (the generator of a :class:`~aesr_sci.nets.gan.GANModel`) and verify the file.

    The file is written atomically; before it takes its final name it is loaded back and run on a
    random input of ``example_shape``, and its output compared with PyTorch's. A guided network
    (:class:`~aesr_sci.nets.guided.GuidedSRNetwork`) is exported with two inputs, ``lq`` and
    ``guide``, and checked with a random guide on the output grid. Batch and spatial axes are dynamic in both formats (ONNX through ``torch.export`` with automatic dynamic
    dimensions; TorchScript through ``torch.jit.script``), so the file accepts other sizes.

    Parameters
    ----------
    module
        A network of the family (or any module mapping one tensor to one tensor).
    path
        Output file: ``.onnx`` for ONNX, ``.pt`` or ``.ts`` for TorchScript (unless ``fmt``).
    fmt
        ``"onnx"`` or ``"torchscript"``; ``None`` chooses by extension.
    example_shape
        ``(N, C, *spatial)`` of the low-resolution check input (small: the ONNX check may run on
        the slow reference evaluator when onnxruntime is missing).
    overwrite
        Replace ``path`` if it exists.
    rtol
        Largest accepted difference, relative to the range of PyTorch's output (at least 0.01).

    Returns
    -------
    dict
        ``max_abs_diff`` (float), ``path`` (str), ``format`` (str) and ``checked_with`` (the
        runtime that ran the file: ``torch.jit``, ``onnxruntime`` or ``onnx.reference``).

    Raises
    ------
    ModelError
        For an unknown format, or when the exported file's output differs from PyTorch's.
    OutputExistsError
        If ``path`` exists and ``overwrite`` is false.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from aesr_sci.nets import build_model
    >>> net = build_model("residual", spatial_dims=2, in_channels=1, scale=2, features=4, blocks=1)
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "net.pt"
    >>> export_model(net, out, example_shape=(1, 1, 8, 8))["format"]
    'torchscript'
    """
    path = Path(path)
    fmt = _format_from(path, fmt)
    if fmt == "onnx":
        _require_onnx()
    net = module.generator if isinstance(module, GANModel) else module
    net = copy.deepcopy(net).cpu().float().eval()
    generator = torch.Generator().manual_seed(0)
    lq = torch.rand(tuple(int(s) for s in example_shape), generator=generator)
    example = (lq, net.example_guide(lq)) if isinstance(net, GuidedSRNetwork) else (lq,)
    with torch.no_grad():
        expected = net(*example)
    with atomic_output(path, overwrite=overwrite) as tmp:
        if fmt == "torchscript":
            how = _to_torchscript(net, example, tmp)
            got, checked_with = _run_torchscript(tmp, example), "torch.jit"
        else:
            how = _to_onnx(net, example, tmp)
            got, checked_with = run_onnx(tmp, *example)
        if got.shape != expected.shape:
            raise ModelError(
                f"exported {fmt} model gives shape {tuple(got.shape)}, PyTorch {tuple(expected.shape)}"
            )
        diff = float((got - expected).abs().max())
        tolerance = rtol * max(float(expected.max() - expected.min()), 1e-2)
        if not diff <= tolerance:
            raise ModelError(
                f"exported {fmt} model differs from PyTorch by {diff:.3g} (tolerance {tolerance:.3g}); "
                "nothing was written"
            )
    log.info("exported %s (%s, %s) to %s; max difference %.2e", type(net).__name__, fmt, how, path, diff)
    return {"max_abs_diff": diff, "path": str(path), "format": fmt, "checked_with": checked_with}
