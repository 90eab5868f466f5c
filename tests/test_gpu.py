"""The CUDA path: mixed-precision training and inference, checked against the CPU.

Every test here is marked ``gpu`` and skips on a machine without CUDA (CI has none); run them with
``pytest -m gpu`` on a GPU machine.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from test_train import tiny_recipe, write_volumes

from aesr_sci.checkpoint import load_model
from aesr_sci.infer import predict, upscale_files
from aesr_sci.nets import build_model
from aesr_sci.train import train

pytestmark = pytest.mark.gpu


def _kspace_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(
        "residual", spatial_dims=3, in_channels=1, scale=2, convention="origin", features=8, blocks=2
    )


def test_mixed_precision_inference_matches_float32_on_the_cpu() -> None:
    net = _kspace_net().eval()
    gen = torch.Generator().manual_seed(1)
    lq = torch.rand(1, 1, 40, 36, 28, generator=gen)
    with torch.inference_mode():
        ref = predict(net, lq, patch_size=[20, 20, 20], device="cpu")
        exact = predict(net.cuda(), lq, patch_size=[20, 20, 20], device="cuda")
        mixed = predict(net, lq, patch_size=[20, 20, 20], device="cuda", precision="auto")
    assert mixed.device.type == "cpu" and mixed.dtype == torch.float32
    assert (exact - ref).abs().max() < 1e-4  # the same windows and weights on either device
    err = (mixed - ref).pow(2).mean()
    psnr = 10 * math.log10(float(ref.max() - ref.min()) ** 2 / float(err))
    assert psnr > 50, psnr  # half precision in the body only; the Fourier skip stays float32


def test_training_on_cuda_uses_the_gpu_section_and_loads_on_the_cpu(tmp_path: Path) -> None:
    paths = write_volumes(tmp_path / "data")
    recipe = tiny_recipe(paths, max_steps=40, val_every=20)
    recipe["gpu"] = {"batch_size": 3}
    result = train(recipe, out_dir=tmp_path / "run", device="cuda")
    assert result.device.startswith("cuda")
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["device"].startswith("cuda")
    assert "batch_size: 3" in (tmp_path / "run" / "recipe.yaml").read_text()
    with (tmp_path / "run" / "log.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert rows and all(math.isfinite(float(r["loss"])) for r in rows if r["loss"])
    assert math.isfinite(float(rows[-1]["val_psnr"]))
    loaded = load_model(tmp_path / "run" / "model", device="cpu")
    assert next(loaded.network.parameters()).device.type == "cpu"


def test_upscaling_a_file_on_cuda_keeps_the_geometry_of_the_cpu_result(tmp_path: Path) -> None:
    paths = write_volumes(tmp_path / "data", n=2)
    train(tiny_recipe(paths, max_steps=6), out_dir=tmp_path / "run", device="cpu")
    outs = {}
    for dev in ("cpu", "cuda"):
        outs[dev] = tmp_path / f"{dev}.nii.gz"
        upscale_files(tmp_path / "run" / "model", [paths[0]], outs[dev], device=dev)
    cpu, gpu = nib.load(outs["cpu"]), nib.load(outs["cuda"])
    np.testing.assert_array_equal(cpu.affine, gpu.affine)
    a, b = cpu.get_fdata(), gpu.get_fdata()
    assert a.shape == b.shape
    assert np.abs(a - b).max() < 1e-2 * (a.max() - a.min())
