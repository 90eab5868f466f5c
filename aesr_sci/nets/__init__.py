"""The autoencoder family of super-resolution networks and its registry.

Every network maps a low-resolution batch ``(N, C_in, *S)`` to ``(N, C_out, *(S * scale))`` for
any spatial size ``S``, in 2D or 3D, with one integer factor per axis, in normalised intensity
units. Build them by name with :func:`build_model`; :func:`describe_models` lists them with
their size and compute; :func:`~aesr_sci.nets.export.export_model` writes TorchScript or ONNX.
"""

from .blocks import interpolate, pixel_shuffle
from .gan import AdversarialLosses, GANModel, PatchDiscriminator, adversarial_losses
from .registry import build_model, describe_models, model_config, model_from_config, model_names

__all__ = [
    "AdversarialLosses",
    "GANModel",
    "PatchDiscriminator",
    "adversarial_losses",
    "build_model",
    "describe_models",
    "export_model",
    "interpolate",
    "model_config",
    "model_from_config",
    "model_names",
    "pixel_shuffle",
]


def __getattr__(name: str):  # export pulls in onnx on first use only
    if name == "export_model":
        from .export import export_model

        return export_model
    raise AttributeError(f"module 'aesr_sci.nets' has no attribute {name!r}")
