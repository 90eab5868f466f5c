"""Exact tiling, windows sized to a memory budget, and reduced precision in aesr_sci.infer."""

from __future__ import annotations

import pytest
import torch

from aesr_sci.errors import MismatchError
from aesr_sci.infer import _stitch, plan_windows, predict, resolve_precision
from aesr_sci.nets import build_model
from aesr_sci.nets.receptive import Reach, reach

SMALL = {
    "seed": {"features": [6, 5, 4]},
    "residual": {"features": 6, "blocks": 2},
    "multiscale": {"features": 4, "levels": 2, "blocks": 1},
    "attention": {"features": 8, "groups": 2, "blocks": 1, "reduction": 2, "spatial_attention": True},
    "gan": {"generator": "multiscale", "features": 4, "levels": 1, "blocks": 1},
}


def _net(name: str, dims: int, convention: str = "fov", scale: int | list[int] = 2) -> torch.nn.Module:
    torch.manual_seed(0)
    net = build_model(
        name, spatial_dims=dims, in_channels=2, scale=scale, convention=convention, **SMALL[name]
    )
    with torch.no_grad():  # random weights large enough that every layer matters
        for p in net.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return net.eval()


CASES = [
    (name, dims, convention)
    for name in SMALL
    for dims in (2, 3)
    for convention in ("fov", "origin")  # origin: the global Fourier skip of k-space models
]


@pytest.mark.parametrize("name,dims,convention", CASES)
def test_tiled_equals_whole_for_every_network(name: str, dims: int, convention: str) -> None:
    net = _net(name, dims, convention)
    shape = (45, 38) if dims == 2 else (21, 18, 15)
    lq = torch.rand(1, 2, *shape, generator=torch.Generator().manual_seed(1))
    whole = predict(net, lq, patch_size=None, precision="float32")
    with torch.no_grad():  # the whole-image pass is one plain forward pass, bit for bit
        assert torch.equal(whole, net(lq))
    tiled = predict(net, lq, patch_size=[8] * dims, precision="float32")
    cores = plan_windows(shape, reach(net, spatial_dims=dims, in_channels=2), patch_size=[8] * dims, budget=0)
    assert cores is not None and len(cores) > 4
    err = (tiled - whole).abs().max().item()
    assert err <= 2e-5 * whole.abs().max().item(), err
    # the test can fail: the same windows without a halo, and the whole network in each, differ
    with torch.no_grad():
        naive = _stitch(net, lq, cores, 0, False)
    assert (naive - whole).abs().max().item() > 1e-3 * whole.abs().max().item()


def test_anisotropic_scale_tiles_exactly() -> None:
    net = _net("residual", 3, "origin", scale=[1, 1, 3])
    lq = torch.rand(1, 2, 20, 17, 6)
    whole = predict(net, lq, precision="float32")
    tiled = predict(net, lq, patch_size=[6, 6, 6], precision="float32")
    assert tiled.shape == (1, 2, 20, 17, 18)
    assert (tiled - whole).abs().max().item() <= 2e-5 * whole.abs().max().item()


def test_budget_decides_between_one_pass_and_windows() -> None:
    r = Reach(halo=8, multiple=4, bytes_per_voxel=100.0)
    assert plan_windows((64, 64, 64), r, patch_size=None, budget=100.0 * 64**3) is None
    cores = plan_windows((64, 64, 64), r, patch_size=None, budget=100.0 * 48**3)
    assert cores is not None and len(cores) >= 2
    for core in cores:  # every window fits the budget and starts on the coarsest grid
        window = [min(b + 8, 64) - max(a - 8, 0) for a, b in core]
        assert window[0] * window[1] * window[2] * 100.0 <= 100.0 * 48**3
        assert all(a % 4 == 0 for a, _ in core)
    covered = torch.zeros(64, 64, 64, dtype=torch.int32)
    for (a0, b0), (a1, b1), (a2, b2) in cores:
        covered[a0:b0, a1:b1, a2:b2] += 1
    assert bool((covered == 1).all())  # the cores tile the image exactly once


def test_budget_sized_windows_equal_whole() -> None:
    net = _net("multiscale", 2)
    lq = torch.rand(1, 2, 120, 96)
    whole = predict(net, lq, precision="float32")
    r = reach(net, spatial_dims=2, in_channels=2)
    budget = r.bytes_per_voxel * (2 * r.halo + 24) * 96
    assert plan_windows(lq.shape[2:], r, patch_size=None, budget=budget) is not None
    assert plan_windows(lq.shape[2:], r, patch_size=None, budget=1.0) is not None  # smallest windows
    tiled = predict(net, lq, precision="float32", memory_budget=budget)
    assert (tiled - whole).abs().max().item() <= 2e-5 * whole.abs().max().item()


def test_precision_choices() -> None:
    assert resolve_precision("float32", "cpu") == (None, False)
    assert resolve_precision("bfloat16", "cpu") == (torch.bfloat16, True)
    assert resolve_precision("float16", "cpu") == (torch.float16, True)
    with pytest.raises(MismatchError, match="precision 'half' is not one of auto, float32"):
        resolve_precision("half", "cpu")


def test_auto_precision_follows_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import aesr_sci.infer as infer

    monkeypatch.setattr(infer, "cpu_has_bfloat16", lambda: False)
    assert resolve_precision("auto", "cpu") == (None, False)
    monkeypatch.setattr(infer, "cpu_has_bfloat16", lambda: True)
    assert resolve_precision("auto", "cpu") == (torch.bfloat16, True)


@pytest.mark.parametrize("convention", ["fov", "origin"])
def test_bfloat16_is_close_and_float32_is_untouched(convention: str) -> None:
    net = _net("residual", 3, convention)
    lq = torch.rand(1, 2, 12, 12, 12)
    with torch.no_grad():
        reference = net(lq)
    low = predict(net, lq, precision="bfloat16")
    assert low.dtype == torch.float32
    err = (low - reference).abs().max().item()
    assert 0 < err < 0.05 * reference.abs().max().item()
    # after a channels-last bfloat16 run the float32 path is still a plain forward pass, bit for bit
    assert torch.equal(predict(net, lq, precision="float32"), reference)


def test_cli_precision_and_budget(tmp_path) -> None:
    import numpy as np
    from click.testing import CliRunner
    from conftest import save_model_dir

    from aesr_sci.cli import main
    from aesr_sci.io import read, write
    from aesr_sci.spatial import Image, SpatialMeta

    model_dir = save_model_dir(tmp_path, spatial_dims=2, channels=1, method="area")
    meta = SpatialMeta(np.eye(3), crs="EPSG:32618", format="geotiff")
    img = Image(np.random.default_rng(0).random((1, 30, 26)).astype(np.float32), meta)
    src = write(img, tmp_path / "in.tif")
    runner = CliRunner()
    common = ["upscale", str(model_dir), str(src)]
    result = runner.invoke(main, [*common, str(tmp_path / "a.tif"), "--precision", "float32"])
    assert result.exit_code == 0, result.output
    # a tiny budget forces windows: the same values as one pass
    args = ["--precision", "float32", "--memory-budget", "64K"]
    result = runner.invoke(main, [*common, str(tmp_path / "b.tif"), *args])
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(
        read(tmp_path / "a.tif").data, read(tmp_path / "b.tif").data, rtol=1e-5, atol=1e-6
    )
    result = runner.invoke(main, [*common, str(tmp_path / "c.tif"), "--precision", "half"])
    assert result.exit_code == 2 and "'half' is not one of" in result.output
    result = runner.invoke(main, [*common, str(tmp_path / "c.tif"), "--memory-budget", "lots"])
    assert result.exit_code == 2 and "write e.g. 2G" in result.output
    assert not (tmp_path / "c.tif").exists()
