"""Scoring the network on the held-out files during training: PSNR and SSIM against a baseline."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["validate"]


def validate(
    network: torch.nn.Module,
    items: Sequence[Any],
    *,
    patch_size: Sequence[int] | None = None,
    baseline: str,
    device: torch.device,
    precision: str = "float32",
) -> dict[str, Any]:
    """Mean validation scores of ``network`` over ``items``, inferred window by window as ``upscale`` does.

    Each item has ``lq`` (the normalised input, ``(1, C, *S)``), ``baseline`` (the interpolated
    input) and ``score(prediction)``, which scores an image against the item's reference. The
    network runs in ``precision`` (the run's ``train.precision``), as ``upscale`` runs it.

    Returns ``val_psnr``, ``val_ssim``, the ``baseline``'s name and ``baseline_psnr``, and
    ``gain_db`` (model minus baseline).
    """
    from ..infer import predict

    was_training = network.training
    network.eval()
    model_scores, base_scores = [], []
    for item in items:
        pred = predict(network, item.lq, patch_size=patch_size, device=device, precision=precision)
        pred = pred[0].numpy()
        model_scores.append(item.score(pred))
        base_scores.append(item.score(item.baseline))
    network.train(was_training)
    val_psnr = float(np.mean([s["psnr"] for s in model_scores]))
    base_psnr = float(np.mean([s["psnr"] for s in base_scores]))
    return {
        "val_psnr": val_psnr,
        "val_ssim": float(np.mean([s["ssim"] for s in model_scores])),
        "baseline": baseline,
        "baseline_psnr": base_psnr,
        "gain_db": val_psnr - base_psnr,
    }
