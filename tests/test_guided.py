"""Guided super-resolution groundwork: guided networks, guide-grid checks, Sentinel-2 product bands,
classical pansharpening baselines, their metrics and the recipes' guide lists."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from aesr_sci.errors import ModelError
from aesr_sci.nets import build_model, describe_models, model_config, model_from_config
from aesr_sci.nets.blocks import interpolate
from aesr_sci.nets.registry import is_guided

GUIDED = ["guided_dual", "guided_residual"]
SMALL = {
    "guided_residual": {"features": 4, "blocks": 1},
    "guided_dual": {"features": 4, "encoder_blocks": 1, "blocks": 1},
}


def tiny(name: str, **kwargs) -> nn.Module:
    return build_model(name, **{**SMALL[name], **kwargs})


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# ---------------------------------------------------------------------------------- networks
CASES = [
    # spatial_dims, target channels, guide channels, scale, lq spatial size
    (2, 6, 4, 2, (5, 7)),
    (2, 2, 10, 6, (3, 4)),
    (2, 3, 1, (1, 2), (5, 7)),
    (3, 1, 1, 2, (3, 4, 5)),
    (3, 2, 1, (1, 1, 4), (5, 6, 3)),  # a T1 guiding thick-slice T2 and FLAIR
]


@pytest.mark.parametrize("name", GUIDED)
@pytest.mark.parametrize(("dims", "channels", "guides", "scale", "size"), CASES)
def test_output_is_on_the_guide_grid(name, dims, channels, guides, scale, size):
    net = tiny(name, spatial_dims=dims, in_channels=channels, guide_channels=guides, scale=scale).eval()
    factors = [scale] * dims if isinstance(scale, int) else list(scale)
    hr = [n * s for n, s in zip(size, factors)]
    with torch.no_grad():
        out = net(torch.rand(2, channels, *size), torch.rand(2, guides, *hr))
    assert out.shape == (2, channels, *hr)


@pytest.mark.parametrize("name", GUIDED)
@pytest.mark.parametrize("dims", [2, 3])
def test_untrained_network_returns_the_interpolated_target(name, dims):
    scale = (2, 3) if dims == 2 else (1, 1, 4)
    net = tiny(name, spatial_dims=dims, in_channels=2, guide_channels=3, scale=scale).eval()
    lq = torch.rand(1, 2, *[4] * dims)
    guide = torch.rand(1, 3, *[4 * s for s in scale])
    with torch.no_grad():
        out = net(lq, guide)
        other = net(lq, torch.rand_like(guide))
    torch.testing.assert_close(out, interpolate(lq, list(scale), "fov"))
    torch.testing.assert_close(other, out)  # the zero-initialised tail ignores the guide at first


@pytest.mark.parametrize("name", GUIDED)
def test_the_guide_receives_gradients_once_training_starts(name):
    net = tiny(name, spatial_dims=2, in_channels=2, guide_channels=3, scale=2)
    lq, gt = torch.rand(2, 2, 6, 6), torch.rand(2, 2, 12, 12)
    guide = torch.rand(2, 3, 12, 12, requires_grad=True)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(2):  # the first step moves the zero tail, the second reaches the guide branch
        opt.zero_grad()
        guide.grad = None
        loss = (net(lq, guide) - gt).abs().mean()
        loss.backward()
        assert net.tail.weight.grad.abs().sum() > 0
        opt.step()
    assert guide.grad is not None and guide.grad.abs().sum() > 0
    first = net.head if name == "guided_residual" else net.guide_encoder[0]
    assert first.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", GUIDED)
def test_a_few_adam_steps_use_the_guide(name):
    # the target is the guide's first band: only a network that reads the guide can recover it
    net = tiny(name, spatial_dims=2, in_channels=1, guide_channels=2, scale=2)
    guide = torch.rand(4, 2, 16, 16)
    gt = guide[:, :1]
    lq = torch.nn.functional.avg_pool2d(gt, 2)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    first = None
    for _ in range(40):
        opt.zero_grad()
        loss = (net(lq, guide) - gt).abs().mean()
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
    assert loss.item() < 0.7 * first


@pytest.mark.parametrize("name", GUIDED)
def test_tiles_equal_the_whole_image_away_from_their_margins(name):
    net = tiny(name, spatial_dims=2, in_channels=1, guide_channels=1, scale=2).eval()
    with torch.no_grad():  # a trained-looking tail, so that the guide branch matters
        net.tail.weight.normal_(0, 0.1)
    lq, guide = torch.rand(1, 1, 24, 24), torch.rand(1, 1, 48, 48)
    with torch.no_grad():
        whole = net(lq, guide)
        tile = net(lq[..., :, 8:24], guide[..., :, 16:48])
    # the receptive field is local: 8 low-resolution pixels of margin cover it at these sizes
    torch.testing.assert_close(tile[..., 16:], whole[..., 32:], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(tile[..., :4], whole[..., 16:20], atol=1e-5)  # the margin is needed


def test_registry_knows_which_networks_take_a_guide():
    assert [is_guided(n) for n in ("guided_residual", "guided_dual", "residual", "gan", "nope")] == [
        True,
        True,
        False,
        False,
        False,
    ]
    with pytest.raises(ModelError, match="needs guide_channels"):
        build_model("guided_residual", spatial_dims=2, in_channels=1, scale=2)
    with pytest.raises(ModelError, match="takes no guide"):
        build_model("residual", spatial_dims=2, in_channels=1, scale=2, guide_channels=4)
    with pytest.raises(ModelError, match="takes no guide"):
        build_model("gan", spatial_dims=2, in_channels=1, scale=2, guide_channels=4)
    with pytest.raises(ModelError, match="guide_channels must be > 0"):
        build_model("guided_dual", spatial_dims=2, in_channels=1, scale=2, guide_channels=0)


@pytest.mark.parametrize("name", GUIDED)
def test_config_rebuilds_the_same_guided_network(name):
    net = tiny(name, spatial_dims=3, in_channels=2, guide_channels=1, scale=(1, 1, 4))
    config = model_config(net)
    assert config["guide_channels"] == 1
    again = model_from_config(config)
    assert again.config == net.config
    assert sum(p.numel() for p in again.parameters()) == sum(p.numel() for p in net.parameters())


def test_describe_models_counts_the_guide_branch():
    rows = {r["name"]: r for r in describe_models(spatial_dims=2, in_channels=6, scale=2, guide_channels=4)}
    more = {r["name"]: r for r in describe_models(spatial_dims=2, in_channels=6, scale=2, guide_channels=8)}
    for name in GUIDED:
        assert rows[name]["parameters"] < more[name]["parameters"]
        assert rows[name]["macs_per_output_voxel"] < more[name]["macs_per_output_voxel"]
    # guided_residual: its 2 * blocks + 1 convolutions of 32 -> 32 features run on the output grid
    assert rows["guided_residual"]["macs_per_output_voxel"] > 13 * 32 * 32 * 9
    assert rows["residual"]["parameters"] == more["residual"]["parameters"]


@pytest.mark.parametrize("name", GUIDED)
def test_torchscript_export_takes_the_guide(tmp_path, name):
    from aesr_sci.nets.export import export_model

    net = tiny(name, spatial_dims=2, in_channels=2, guide_channels=3, scale=2).eval()
    with torch.no_grad():
        net.tail.weight.normal_(0, 0.1)
    report = export_model(net, tmp_path / "net.pt", example_shape=(1, 2, 6, 6))
    assert report["max_abs_diff"] < 1e-5
    loaded = torch.jit.load(report["path"])
    lq, guide = torch.rand(2, 2, 5, 7), torch.rand(2, 3, 10, 14)  # other sizes: axes are dynamic
    with torch.no_grad():
        torch.testing.assert_close(loaded(lq, guide), net(lq, guide), atol=1e-5, rtol=1e-5)


@pytest.mark.slow  # the ONNX exporter is slow to import and trace
def test_onnx_export_takes_the_guide(tmp_path):
    from aesr_sci.nets.export import export_model, run_onnx

    net = tiny("guided_residual", spatial_dims=2, in_channels=2, guide_channels=3, scale=2).eval()
    with torch.no_grad():
        net.tail.weight.normal_(0, 0.1)
    report = export_model(net, tmp_path / "net.onnx", example_shape=(1, 2, 6, 6))
    assert report["max_abs_diff"] < 1e-4
    lq, guide = torch.rand(1, 2, 5, 7), torch.rand(1, 3, 10, 14)
    got, _ = run_onnx(tmp_path / "net.onnx", lq, guide)
    with torch.no_grad():
        torch.testing.assert_close(got, net(lq, guide), atol=1e-4, rtol=1e-4)
