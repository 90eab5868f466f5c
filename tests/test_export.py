"""Tests of exporting networks to TorchScript and ONNX and checking the files against PyTorch."""

from __future__ import annotations

import pytest
import torch

from aesr_sci.errors import ModelError, OutputExistsError
from aesr_sci.nets import build_model
from aesr_sci.nets.export import export_model, run_onnx


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _net(dims: int, name: str = "residual", **kwargs):
    torch.manual_seed(0)
    small = {"features": [4, 4, 4]} if name == "seed" else {"features": 4, "blocks": 1}
    scale = (1, 2) if dims == 2 else (1, 1, 2)
    return build_model(
        name, spatial_dims=dims, in_channels=2, scale=scale, convention="origin", **{**small, **kwargs}
    ).eval()


def _no_leftovers(directory, keep):
    assert sorted(p.name for p in directory.iterdir()) == sorted(keep)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", ["residual", "multiscale"])
def test_torchscript_round_trip_matches_pytorch_at_other_sizes(tmp_path, dims, name):
    net = _net(dims, name)
    report = export_model(net, tmp_path / "net.pt", example_shape=(1, 2, *([6] * dims)))
    assert report["format"] == "torchscript"
    assert report["max_abs_diff"] < 1e-5
    loaded = torch.jit.load(report["path"])
    lq = torch.rand(2, 2, *(5, 7, 9)[:dims])  # other batch and odd sizes: the axes are dynamic
    with torch.no_grad():
        torch.testing.assert_close(loaded(lq), net(lq), atol=1e-5, rtol=1e-5)
    _no_leftovers(tmp_path, ["net.pt"])


@pytest.mark.slow  # a few seconds: the ONNX exporter is slow to import and trace
@pytest.mark.parametrize("dims", [2, 3])
def test_onnx_round_trip_matches_pytorch_at_other_sizes(tmp_path, dims):
    net = _net(dims, "seed" if dims == 2 else "residual")
    report = export_model(net, tmp_path / "net.onnx", example_shape=(1, 2, *([6] * dims)))
    assert report["format"] == "onnx"
    assert report["checked_with"] in ("onnxruntime", "onnx.reference")
    assert report["max_abs_diff"] < 1e-4
    lq = torch.rand(2, 2, *(5, 7, 9)[:dims])
    got, _ = run_onnx(tmp_path / "net.onnx", lq)
    with torch.no_grad():
        torch.testing.assert_close(got, net(lq), atol=1e-4, rtol=1e-4)
    _no_leftovers(tmp_path, ["net.onnx"])


@pytest.mark.slow
def test_onnx_check_falls_back_to_the_reference_evaluator(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    report = export_model(_net(2), tmp_path / "net.onnx", example_shape=(1, 2, 4, 4))
    assert report["checked_with"] == "onnx.reference"
    assert report["max_abs_diff"] < 1e-4


def test_gan_exports_its_generator(tmp_path):
    model = build_model("gan", spatial_dims=2, in_channels=1, scale=2, features=4, blocks=1)
    report = export_model(model, tmp_path / "g.ts", example_shape=(1, 1, 6, 6))
    loaded = torch.jit.load(report["path"])
    assert not hasattr(loaded, "discriminator")
    lq = torch.rand(1, 1, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(loaded(lq), model.generator.eval()(lq))


def test_format_comes_from_the_extension_or_the_argument(tmp_path):
    net = _net(2)
    with pytest.raises(ModelError, match=r"\.onnx, \.pt or \.ts"):
        export_model(net, tmp_path / "net.bin", example_shape=(1, 2, 6, 6))
    with pytest.raises(ModelError, match="unknown export format"):
        export_model(net, tmp_path / "net.pt", fmt="tflite", example_shape=(1, 2, 6, 6))
    report = export_model(net, tmp_path / "net.bin", fmt="torchscript", example_shape=(1, 2, 6, 6))
    assert report["format"] == "torchscript"


def test_existing_output_is_kept_unless_overwrite(tmp_path):
    target = tmp_path / "net.pt"
    target.write_text("old")
    with pytest.raises(OutputExistsError):
        export_model(_net(2), target, example_shape=(1, 2, 6, 6))
    assert target.read_text() == "old"
    export_model(_net(2), target, example_shape=(1, 2, 6, 6), overwrite=True)
    assert target.stat().st_size > 3


def test_a_mismatching_export_is_an_error_and_leaves_nothing(tmp_path, monkeypatch):
    import aesr_sci.nets.export as export

    real = export._run_torchscript
    monkeypatch.setattr(export, "_run_torchscript", lambda path, x: real(path, x) + 1.0)
    with pytest.raises(ModelError, match="differs from PyTorch"):
        export_model(_net(2), tmp_path / "net.pt", example_shape=(1, 2, 6, 6))
    _no_leftovers(tmp_path, [])
