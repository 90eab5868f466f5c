"""Scoring the network on the held-out files during training: PSNR and SSIM against the best baseline."""

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
    device: torch.device,
    precision: str = "float32",
) -> dict[str, Any]:
    """Mean validation scores of ``network`` over ``items``, inferred window by window as ``upscale`` does.

    Each item has ``lq`` (the normalised input, ``(1, C, *S)``), ``guide`` (the normalised guide
    ``(1, G, *S * scale)`` of a guided network, else None), ``baselines`` (name -> the baseline's
    image, e.g. cubic interpolation and, for guided networks, high-pass injection) and
    ``score(prediction)``, which scores an image against the item's reference. The network runs in
    ``precision`` (the run's ``train.precision``), as ``upscale`` runs it.

    Returns ``val_psnr``, ``val_ssim``, each baseline's ``<name>_psnr``, the best baseline's name
    (``baseline``) and ``baseline_psnr``, and ``gain_db`` (model minus the best baseline).
    """
    from ..infer import predict

    was_training = network.training
    network.eval()
    model_scores, base_scores = [], {}
    for item in items:
        pred = predict(
            network, item.lq, patch_size=patch_size, device=device, precision=precision, guide=item.guide
        )
        model_scores.append(item.score(pred[0].numpy()))
        for name, image in item.baselines.items():
            base_scores.setdefault(name, []).append(item.score(image)["psnr"])
    network.train(was_training)
    val_psnr = float(np.mean([s["psnr"] for s in model_scores]))
    base_psnr = {name: float(np.mean(scores)) for name, scores in base_scores.items()}
    best = max(base_psnr, key=lambda name: base_psnr[name])
    return {
        "val_psnr": val_psnr,
        "val_ssim": float(np.mean([s["ssim"] for s in model_scores])),
        **{f"{name}_psnr": value for name, value in base_psnr.items()},
        "baseline": best,
        "baseline_psnr": base_psnr[best],
        "gain_db": val_psnr - base_psnr[best],
    }
