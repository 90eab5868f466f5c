"""Tests of the autoencoder family: shapes, geometry of the skip, sub-pixel upsampling, registry, GAN."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from aesr_sci.errors import ModelError
from aesr_sci.nets import (
    GANModel,
    PatchDiscriminator,
    adversarial_losses,
    build_model,
    describe_models,
    interpolate,
    model_config,
    model_from_config,
    model_names,
    pixel_shuffle,
)
from aesr_sci.nets.blocks import SubpixelUpsample, fourier_interpolate, icnr_, parse_scale

NAMES = ["attention", "gan", "multiscale", "residual", "seed"]

# tiny widths so that every test runs in milliseconds
SMALL: dict[str, dict] = {
    "seed": {"features": [4, 4, 4]},
    "residual": {"features": 4, "blocks": 1},
    "multiscale": {"features": 4, "blocks": 1},
    "attention": {"features": 8, "groups": 1, "blocks": 1, "reduction": 4, "spatial_attention": True},
    "gan": {"features": 4, "blocks": 1, "discriminator": {"features": 4, "layers": 2}},
}


def tiny(name: str, **kwargs) -> nn.Module:
    return build_model(name, **{**SMALL[name], **kwargs})


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # tiny tensors: one thread avoids OpenMP spinning on a shared 2-core machine (70x slower)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# ------------------------------------------------------------------------------------ shapes
CASES = [
    # spatial_dims, channels, scale, lq spatial size
    (2, 1, 2, (7, 9)),
    (2, 3, 3, (7, 9)),
    (2, 6, (1, 2), (7, 9)),
    (2, 1, 4, (5, 6)),
    (3, 1, 2, (5, 7, 9)),
    (3, 3, 3, (5, 7, 9)),
    (3, 6, (1, 1, 4), (5, 7, 9)),
    (3, 1, 4, (3, 4, 5)),
]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("dims", "channels", "scale", "size"), CASES)
def test_output_shape_is_input_shape_times_scale(name, dims, channels, scale, size):
    net = tiny(name, spatial_dims=dims, in_channels=channels, scale=scale).eval()
    factors = parse_scale(scale, dims)
    with torch.no_grad():
        out = net(torch.rand(2, channels, *size))
    assert out.shape == (2, channels, *(n * s for n, s in zip(size, factors)))
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_out_channels_may_differ_from_in_channels(name):
    net = tiny(name, spatial_dims=2, in_channels=3, out_channels=1, scale=2, convention="origin")
    assert net(torch.rand(1, 3, 5, 6)).shape == (1, 1, 10, 12)


@pytest.mark.parametrize("name", ["residual", "multiscale", "attention"])
def test_global_skip_makes_an_untrained_network_close_to_interpolation(name):
    net = tiny(name, spatial_dims=2, in_channels=1, scale=2, convention="origin").eval()
    lq = torch.rand(1, 1, 8, 8)
    with torch.no_grad():
        out = net(lq)
    base = fourier_interpolate(lq, [2, 2])  # origin-convention models skip with Fourier interpolation
    # the learned branch is a perturbation, not the whole signal
    assert (out - base).abs().mean() < 0.3 * lq.std()
    linear = tiny(name, spatial_dims=2, in_channels=1, scale=2, convention="origin", skip="linear").eval()
    with torch.no_grad():
        assert (linear(lq) - interpolate(lq, [2, 2], "origin")).abs().mean() < 0.3 * lq.std()


def test_fourier_skip_needs_the_origin_grid():
    with pytest.raises(ModelError, match="origin"):
        tiny("residual", spatial_dims=2, in_channels=1, scale=2, convention="fov", skip="fourier")


@pytest.mark.parametrize("n", [8, 9])
def test_fourier_skip_keeps_samples_and_band_limited_signals(n):
    t = torch.arange(n, dtype=torch.float64)
    x = torch.cos(2 * torch.pi * t / n).view(1, 1, n) + 0.5  # smooth and periodic: no edge effects
    y = fourier_interpolate(x, [3])
    assert y.shape[-1] == 3 * n
    assert torch.allclose(y[..., ::3], x, atol=1e-9)  # origin grid: output 3k sits on input k


def test_fourier_skip_stays_float32_under_mixed_precision():
    # bfloat16 keeps 8 bits of mantissa: a skip computed in it would be off by ~1e-2 of the signal
    x = torch.rand(1, 1, 12, 10, generator=torch.Generator().manual_seed(0)) + 10.0
    ref = fourier_interpolate(x, [2, 2])
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        mixed = fourier_interpolate(x, [2, 2])
    assert mixed.dtype == torch.float32
    assert (mixed - ref).abs().max() < 1e-4


# ---------------------------------------------------------------------------------- training
def _pair(dims: int, size: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    noise = torch.rand(1, 1, *([size // 2] * dims), generator=gen)
    mode = "bilinear" if dims == 2 else "trilinear"
    gt = F.interpolate(noise, scale_factor=2.0, mode=mode, align_corners=False).repeat(2, 1, *([1] * dims))
    gt = gt + 0.2 * torch.rand(gt.shape, generator=gen)  # detail that interpolation cannot recover
    pool = F.avg_pool2d if dims == 2 else F.avg_pool3d
    return pool(gt, 2), gt


@pytest.mark.parametrize(("name", "dims"), [(n, 2) for n in NAMES] + [("residual", 3)])
def test_a_few_adam_steps_reduce_the_loss(name, dims):
    lq, gt = _pair(dims, size=12 if dims == 2 else 8)
    net = tiny(name, spatial_dims=dims, in_channels=1, scale=2)
    params = net.generator.parameters() if isinstance(net, GANModel) else net.parameters()
    opt = torch.optim.Adam(params, lr=3e-3)
    losses = []
    for _ in range(25):
        loss = F.mse_loss(net(lq), gt)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dims", [2, 3])
def test_gradients_reach_the_first_layer(name, dims):
    net = tiny(name, spatial_dims=dims, in_channels=2, scale=2)
    first = next(p for p in net.parameters() if p.dim() == dims + 2)  # the first convolution's weight
    F.mse_loss(net(torch.rand(1, 2, *([6] * dims))), torch.rand(1, 2, *([12] * dims))).backward()
    assert first.grad is not None
    assert first.grad.abs().sum() > 0


# ---------------------------------------------------------------------------- interpolation
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_interpolate_places_samples_on_the_fov_grid(scale):
    n = 6
    ramp = torch.arange(n, dtype=torch.float32).view(1, 1, n)
    out = interpolate(ramp, [scale], "fov").flatten()
    j = torch.arange(n * scale, dtype=torch.float32)
    expected = ((j + 0.5) / scale - 0.5).clamp(0, n - 1)  # outer corners coincide
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_interpolate_places_samples_on_the_origin_grid(scale):
    n = 6
    ramp = torch.arange(n, dtype=torch.float32).view(1, 1, n)
    out = interpolate(ramp, [scale], "origin").flatten()
    j = torch.arange(n * scale, dtype=torch.float32)
    expected = (j / scale).clamp(max=n - 1)  # first voxel centres coincide
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("convention", ["fov", "origin"])
def test_interpolate_is_per_axis_in_3d(convention):
    # a ramp along each axis in turn; (1, 1, 4) must only resample the last axis
    shape = (3, 4, 5)
    for axis in range(3):
        ramp = torch.arange(shape[axis], dtype=torch.float32)
        view = [1, 1, 1, 1, 1]
        view[axis + 2] = shape[axis]
        x = ramp.view(view).expand(1, 1, *shape).contiguous()
        out = interpolate(x, [1, 1, 4], convention)
        assert out.shape == (1, 1, 3, 4, 20)
        line = out[0, 0].movedim(axis, 0).reshape(out.shape[axis + 2], -1)
        if axis < 2:
            torch.testing.assert_close(line[:, 0], ramp)  # untouched axes
        else:
            j = torch.arange(20, dtype=torch.float32)
            pos = (j + 0.5) / 4 - 0.5 if convention == "fov" else j / 4
            torch.testing.assert_close(line[:, 0], pos.clamp(0, 4))
        assert (line == line[:, :1]).all()  # constant across the other axes


def test_interpolate_origin_matches_grid_sample_with_border_padding():
    x = torch.rand(1, 2, 5, 7)
    out = interpolate(x, [2, 3], "origin")
    # grid_sample with align_corners=True: position p maps to -1 + 2 p / (n - 1)
    rows = torch.arange(10) / 2 * 2 / 4 - 1
    cols = torch.arange(21) / 3 * 2 / 6 - 1
    gy, gx = torch.meshgrid(rows, cols, indexing="ij")
    grid = torch.stack([gx, gy], dim=-1)[None]
    ref = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_interpolate_rejects_an_unknown_convention():
    with pytest.raises(ValueError, match="convention"):
        interpolate(torch.rand(1, 1, 4), [2], "corner")


# ---------------------------------------------------------------------------- pixel shuffle
def test_pixel_shuffle_matches_torch_in_2d():
    x = torch.rand(2, 12, 3, 5)
    torch.testing.assert_close(pixel_shuffle(x, [2, 2]), F.pixel_shuffle(x, 2))


def test_pixel_shuffle_per_axis_only_touches_scaled_axes():
    x = torch.rand(1, 2 * 4, 3, 4, 5)
    out = pixel_shuffle(x, [1, 1, 4])
    assert out.shape == (1, 2, 3, 4, 20)
    # sub-pixel channel k of output channel c lands at last-axis offset k
    for c in range(2):
        for k in range(4):
            torch.testing.assert_close(out[0, c, :, :, k::4], x[0, c * 4 + k])


@pytest.mark.parametrize(("dims", "scale"), [(2, (2, 2)), (2, (1, 3)), (3, (2, 2, 2)), (3, (1, 1, 4))])
def test_icnr_upsampler_has_no_checkerboard_at_initialisation(dims, scale):
    up = SubpixelUpsample(dims, 4, 2, scale)
    nn.init.normal_(up.conv.bias)  # even with a bias, all sub-pixels of a channel agree
    with torch.no_grad():
        up.conv.bias.copy_(up.conv.bias.view(2, -1)[:, :1].expand(2, math.prod(scale)).reshape(-1))
        out = up(torch.ones(1, 4, *([6] * dims)))
    # each output block (one low-resolution voxel) is constant
    blocks = F.avg_pool2d(out, scale) if dims == 2 else F.avg_pool3d(out, scale)
    nearest = blocks.repeat_interleave(scale[0], 2).repeat_interleave(scale[1], 3)
    if dims == 3:
        nearest = nearest.repeat_interleave(scale[2], 4)
    torch.testing.assert_close(out, nearest)
    assert out.std() > 0  # not trivially zero


def test_without_icnr_the_upsampler_would_show_a_checkerboard():
    up = SubpixelUpsample(2, 4, 1, (2, 2))
    nn.init.kaiming_normal_(up.conv.weight)  # plain initialisation: sub-pixel kernels differ
    with torch.no_grad():
        out = up(torch.ones(1, 4, 6, 6))
    assert (out[..., 2:4, 2:4] - out[..., 2, 2]).abs().max() > 1e-3


def test_icnr_rejects_a_wrong_channel_count():
    with pytest.raises(ValueError, match="multiple"):
        icnr_(torch.empty(6, 2, 3, 3), (2, 2))


# --------------------------------------------------------------------------------- registry
def test_model_names():
    assert model_names() == sorted([*NAMES, "guided_dual", "guided_residual"])  # see test_guided.py


def test_unknown_model_name_lists_the_valid_ones():
    with pytest.raises(ModelError) as err:
        build_model("resnet", spatial_dims=3, in_channels=1, scale=2)
    assert (
        str(err.value)
        == "unknown model 'resnet': choose one of attention, gan, guided_dual, guided_residual, "
        "multiscale, residual, seed"
    )


def test_unknown_option_names_it_and_lists_valid_ones_with_defaults():
    with pytest.raises(ModelError, match="no option 'feature'") as err:
        build_model("residual", spatial_dims=3, in_channels=1, scale=2, feature=16)
    assert "features=32" in str(err.value)
    assert "blocks=8" in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("residual", {"blocks": "8"}),
        ("residual", {"features": 2.5}),
        ("residual", {"res_scale": True}),
        ("attention", {"spatial_attention": 1}),
        ("seed", {"features": 16}),
    ],
)
def test_ill_typed_option_is_a_model_error(name, bad):
    key = next(iter(bad))
    with pytest.raises(ModelError, match=f"{key} must be"):
        build_model(name, spatial_dims=2, in_channels=1, scale=2, **bad)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scale": 1.5}, "whole numbers"),
        ({"scale": (2, 2, 2)}, "3 factors"),
        ({"scale": 0}, "whole numbers"),
        ({"convention": "corner"}, "convention"),
        ({"spatial_dims": 4}, "spatial_dims"),
        ({"in_channels": 0}, "in_channels"),
        ({"blocks": 0}, "blocks must be > 0"),
    ],
)
def test_bad_geometry_or_value_is_a_model_error(kwargs, match):
    args = {"spatial_dims": 2, "in_channels": 1, "scale": 2, **kwargs}
    with pytest.raises(ModelError, match=match):
        build_model("residual", **args)


def test_gan_arguments_are_checked():
    with pytest.raises(ModelError, match="unknown generator 'gan'"):
        build_model("gan", spatial_dims=2, in_channels=1, scale=2, generator="gan")
    with pytest.raises(ModelError, match="no option 'width'"):
        build_model("gan", spatial_dims=2, in_channels=1, scale=2, discriminator={"width": 8})
    with pytest.raises(ModelError, match="model 'seed' has no option 'blocks'"):
        build_model("gan", spatial_dims=2, in_channels=1, scale=2, generator="seed", blocks=2)


@pytest.mark.parametrize("name", NAMES)
def test_config_is_json_and_rebuilds_the_same_network(name):
    net = tiny(name, spatial_dims=3, in_channels=2, scale=(1, 1, 4), convention="origin")
    config = json.loads(json.dumps(model_config(net)))
    assert config["name"] == name
    assert config["scale"] == [1, 1, 4]
    assert config["out_channels"] == 2
    rebuilt = model_from_config(config)
    rebuilt.load_state_dict(net.state_dict())  # same architecture: same keys and shapes
    assert model_config(rebuilt) == model_config(net)


def test_model_config_of_a_foreign_module_is_a_model_error():
    with pytest.raises(ModelError, match="not built by"):
        model_config(nn.Conv2d(1, 1, 3))


def test_describe_models():
    rows = describe_models(spatial_dims=3, in_channels=1, scale=2)
    assert [r["name"] for r in rows] == model_names()
    by_name = {r["name"]: r for r in rows}
    residual = build_model("residual", spatial_dims=3, in_channels=1, scale=2)
    assert by_name["residual"]["parameters"] == sum(p.numel() for p in residual.parameters())
    # 16 convolutions 32->32 and one more in the body, 3x3x3, on 1/8 of the output voxels, and more
    assert by_name["residual"]["macs_per_output_voxel"] > 17 * 32 * 32 * 27 / 8
    assert by_name["seed"]["macs_per_output_voxel"] < by_name["residual"]["macs_per_output_voxel"]
    assert all(isinstance(r["description"], str) and "\n" not in r["description"] for r in rows)


def test_cli_models_prints_one_row_per_network():
    from click.testing import CliRunner

    from aesr_sci.cli import main

    result = CliRunner().invoke(main, ["models", "--spatial-dims", "2", "--channels", "6", "--scale", "1,2"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].split()[:2] == ["name", "parameters"]
    assert [line.split()[0] for line in lines[1:]] == model_names()


def test_cli_models_reports_a_bad_scale_in_one_line():
    from click.testing import CliRunner

    from aesr_sci.cli import main

    result = CliRunner().invoke(main, ["models", "--scale", "1.5"])
    assert result.exit_code == 2
    assert "whole numbers" in result.output


# -------------------------------------------------------------------------------------- GAN
@pytest.mark.parametrize("dims", [2, 3])
def test_gan_model_has_a_generator_and_a_patch_discriminator(dims):
    model = tiny("gan", spatial_dims=dims, in_channels=3, scale=2, convention="origin")
    assert isinstance(model, GANModel)
    assert model.config["generator"] == "residual"
    lq = torch.rand(2, 3, *([8] * dims))
    sr = model(lq)
    torch.testing.assert_close(sr, model.generator(lq))
    logits = model.discriminator(sr)
    assert logits.shape == (2, 1, *([4] * dims))  # two stride-2 layers: a map, not one number
    assert model.scale == [2] * dims and model.out_channels == 3


def test_discriminator_uses_spectral_norm():
    disc = PatchDiscriminator(2, 1, features=4, layers=2)
    convs = [m for m in disc.modules() if isinstance(m, nn.Conv2d)]
    assert convs
    assert all(hasattr(m, "parametrizations") for m in convs)
    plain = PatchDiscriminator(2, 1, features=4, layers=2, spectral_norm=False)
    assert not any(hasattr(m, "parametrizations") for m in plain.modules())


@pytest.mark.parametrize("kind", ["relativistic", "bce"])
def test_adversarial_losses_reward_the_side_that_wins(kind):
    real, fake = torch.full((2, 1, 4, 4), 4.0), torch.full((2, 1, 4, 4), -4.0)
    good_disc = adversarial_losses(real, fake, kind=kind)
    fooled = adversarial_losses(fake, real, kind=kind)
    assert good_disc.discriminator < 0.1 < good_disc.generator
    assert fooled.generator < 0.1 < fooled.discriminator


def test_adversarial_losses_give_the_generator_gradients():
    model = tiny("gan", spatial_dims=2, in_channels=1, scale=2)
    lq, gt = torch.rand(2, 1, 8, 8), torch.rand(2, 1, 16, 16)
    losses = adversarial_losses(model.discriminator(gt).detach(), model.discriminator(model(lq)))
    losses.generator.backward()
    assert all(p.grad is not None for p in model.generator.parameters() if p.requires_grad)


def test_adversarial_losses_reject_an_unknown_kind():
    with pytest.raises(ModelError, match="relativistic, bce"):
        adversarial_losses(torch.zeros(1), torch.zeros(1), kind="wgan")
