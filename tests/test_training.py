"""The parts of the training engine one by one: the steps (content, adversarial, float16), the budget, progress."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import aesr_sci.training.budget as budget_module
import aesr_sci.training.steps as steps_module
from aesr_sci.nets import build_model
from aesr_sci.nets.gan import adversarial_losses
from aesr_sci.training import (
    AdversarialStep,
    ContentStep,
    Placement,
    Precision,
    Progress,
    RunDirectory,
    StepBudget,
    make_step,
)

CPU = Placement(torch.device("cpu"))


def _gan(kind: str = "bce", precision: Precision | None = None) -> AdversarialStep:
    precision = precision or Precision()
    torch.manual_seed(0)
    net = build_model(
        "gan", spatial_dims=3, in_channels=1, scale=2, generator="residual", features=4, blocks=1
    )
    train = SimpleNamespace(
        lr=1e-3,
        weight_decay=0.0,
        loss="l1",
        grad_clip=1.0,
        adversarial=SimpleNamespace(lr=1e-3, weight=0.1, start_fraction=0.5, kind=kind),
    )
    step = make_step(net, train, placement=CPU, precision=precision)
    assert isinstance(step, AdversarialStep)
    return step


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "lq": torch.rand(2, 1, 6, 6, 6, generator=g),
        "gt": torch.rand(2, 1, 12, 12, 12, generator=g),
        "mask": torch.ones(2, 1, 12, 12, 12),
    }


def test_content_only_before_the_start_fraction() -> None:
    step = _gan()
    before = [p.clone() for p in step.discriminator.parameters()]
    step.schedule(4, 10)  # start_fraction 0.5 of 10 steps: content only until step 5
    losses = step(_batch())
    assert set(losses) == {"loss"}
    assert all(torch.equal(a, b) for a, b in zip(before, step.discriminator.parameters()))
    step.schedule(5, 10)
    assert set(step(_batch())) == {"loss", "adversarial", "discriminator"}
    assert not all(torch.equal(a, b) for a, b in zip(before, step.discriminator.parameters()))


def test_the_generator_step_gives_the_discriminator_no_gradient(monkeypatch: pytest.MonkeyPatch) -> None:
    step = _gan()
    step.schedule(9, 10)
    seen: dict[str, object] = {}
    update = ContentStep.update

    def spy(self: ContentStep, loss: torch.Tensor) -> None:  # the generator's backward and update
        for p in step.discriminator.parameters():
            p.grad = None
        seen["frozen"] = [p.requires_grad for p in step.discriminator.parameters()]
        update(self, loss)
        seen["disc_grads"] = [p.grad for p in step.discriminator.parameters()]
        seen["gen_grads"] = [p.grad for p in step.generator.parameters()]

    monkeypatch.setattr(ContentStep, "update", spy)
    step(_batch())
    assert seen["frozen"] and not any(seen["frozen"])
    assert all(g is None for g in seen["disc_grads"])
    assert any(g is not None and g.abs().sum() > 0 for g in seen["gen_grads"])
    # unfrozen again, and the discriminator's own step gave it gradients
    assert all(p.requires_grad for p in step.discriminator.parameters())
    assert all(p.grad is not None for p in step.discriminator.parameters())


@pytest.mark.parametrize("kind", ["bce", "relativistic"])
def test_the_losses_are_those_of_nets_gan(monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    calls: list[tuple[str, object]] = []

    def recorded(real: torch.Tensor, fake: torch.Tensor, *, kind: str = "relativistic"):
        out = adversarial_losses(real, fake, kind=kind)
        calls.append((kind, out))
        return out

    monkeypatch.setattr(steps_module, "adversarial_losses", recorded)
    step = _gan(kind)
    step.schedule(9, 10)
    losses = step(_batch())
    assert [k for k, _ in calls] == [kind, kind]  # once for the generator, once for the discriminator
    assert losses["adversarial"] == pytest.approx(float(calls[0][1].generator.detach()))
    assert losses["discriminator"] == pytest.approx(float(calls[1][1].discriminator.detach()))
    assert losses["loss"] > 0.1 * losses["adversarial"]  # the content loss plus the weighted adversarial one


@pytest.mark.parametrize("kind", ["bce", "relativistic"])
def test_the_discriminator_judges_both_batches_in_one_pass(kind: str) -> None:
    """bce: two passes a step (the fakes, then real and fakes stacked); relativistic adds the reals."""
    step = _gan(kind)
    sizes: list[tuple[int, bool]] = []
    step.discriminator.register_forward_hook(
        lambda m, i, o: sizes.append((i[0].shape[0], torch.is_grad_enabled()))
    )
    step.schedule(9, 10)
    step(_batch())  # a batch of 2
    real = [(2, False)] if kind == "relativistic" else []
    assert sizes == [(2, True), *real, (4, True)]


def test_float16_scales_both_losses_and_the_scales_survive_a_checkpoint(tmp_path: Path) -> None:
    step = _gan(precision=Precision(True, torch.float16))
    assert step.scaler.is_enabled() and step.disc_scaler.is_enabled()
    scaled: list[torch.dtype] = []
    for scaler in (step.scaler, step.disc_scaler):
        original = scaler.scale
        scaler.scale = lambda loss, original=original: (scaled.append(loss.dtype), original(loss))[1]  # type: ignore[method-assign]
    dtypes: list[torch.dtype] = []
    step.discriminator.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    step.schedule(9, 10)
    losses = step(_batch())
    assert all(math.isfinite(v) for v in losses.values())
    assert scaled == [torch.float32, torch.float32]  # generator loss, then discriminator loss
    assert torch.float16 in dtypes  # the discriminator ran in half precision
    step.disc_scaler.update(new_scale=1024.0)
    run = RunDirectory(tmp_path)
    run.save_checkpoint(step, Progress(step=1, total_steps=10))
    again = _gan(precision=Precision(True, torch.float16))
    run.load_checkpoint(again)
    assert again.disc_scaler.get_scale() == 1024.0
    assert again.scaler.get_scale() == step.scaler.get_scale()


@pytest.mark.gpu
def test_float16_adversarial_step_on_cuda() -> None:
    torch.manual_seed(0)
    net = build_model(
        "gan", spatial_dims=3, in_channels=1, scale=2, generator="residual", features=4, blocks=1
    )
    cuda = Placement(torch.device("cuda"))
    step = AdversarialStep(
        net.generator,
        net.discriminator,
        disc_lr=1e-3,
        weight=0.1,
        start_fraction=0.0,
        lr=1e-3,
        placement=cuda,
        precision=Precision(True, torch.float16),
    )
    step.schedule(0, 10)
    for i in range(3):
        losses = step(_batch(i))
    assert all(math.isfinite(v) for v in losses.values())
    assert step.disc_scaler.is_enabled() and step.disc_scaler.get_scale() > 0


def _run(budget: StepBudget, clock: dict[str, float], seconds: Callable[[int], float]) -> int:
    """Steps until ``budget`` stops them, the fake clock advancing ``seconds(step)`` a step."""
    step = 0
    while step < budget.total:
        clock["t"] += seconds(step)
        step += 1
        if not budget.after_step(step):
            break
    return step


def test_the_budget_fits_the_steps_to_the_minutes(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = {"t": 100.0}
    monkeypatch.setattr(budget_module, "perf_counter", lambda: clock["t"])
    budget = StepBudget(1000, minutes=1.0)
    step = _run(budget, clock, lambda _: 1.0)  # one second a step
    # 20 steps timed at 1 s after 5 of warm-up: 25 done, then what fits 90 % of 60 s: 54 - 25 more
    assert budget.fitted and budget.total == 54 and step == 54
    assert budget.elapsed() == 54.0


def test_the_budget_is_fitted_again_when_the_first_steps_were_slow(monkeypatch: pytest.MonkeyPatch) -> None:
    """Slow early steps (files entering the cache) must not stop a run at a fraction of its budget."""
    clock = {"t": 0.0}
    monkeypatch.setattr(budget_module, "perf_counter", lambda: clock["t"])
    budget = StepBudget(10_000, minutes=10.0)
    step = _run(budget, clock, lambda i: 3.0 if i < 25 else 0.5)  # 3 s a step while the cache fills
    # fitted on the first 20 timed steps alone it would stop near (540 - 75) / 3 + 25 = 180 steps
    assert step > 900 and budget.elapsed() <= 600.0
    assert budget.total <= budget.limit


def test_the_budget_stops_a_run_that_slows_down(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = {"t": 0.0}
    monkeypatch.setattr(budget_module, "perf_counter", lambda: clock["t"])
    budget = StepBudget(1000, minutes=1.0, start=10, elapsed_before=30.0, fitted=True)
    clock["t"] = 31.0  # 61 s in all: over the minute
    assert not budget.after_step(11)
    assert budget.total == 11
    assert StepBudget(7, minutes=None).after_step(3) and StepBudget(7, minutes=None).fitted


def test_progress_on_resume() -> None:
    limits = SimpleNamespace(max_steps=100, max_minutes=None)
    p = Progress(step=40, total_steps=80, max_steps=100, max_minutes=5.0, budget_fitted=True)
    same = p.resumed(SimpleNamespace(max_steps=100, max_minutes=5.0))
    assert same is p and not same.done  # the fitted total stands
    more = p.resumed(SimpleNamespace(max_steps=200, max_minutes=5.0))
    assert more.total_steps == 200 and not more.budget_fitted  # fitted again to the budget
    steps_only = p.resumed(limits)
    assert steps_only.total_steps == 100 and steps_only.budget_fitted and not steps_only.done
    assert p.resumed(SimpleNamespace(max_steps=30, max_minutes=None)).done  # already past it
    finished = Progress(step=80, total_steps=80, max_steps=100, max_minutes=5.0, finished=True)
    assert finished.resumed(SimpleNamespace(max_steps=100, max_minutes=5.0)).done
    assert not finished.resumed(SimpleNamespace(max_steps=100, max_minutes=10.0)).done
    old = Progress.from_meta({"step": 3, "total_steps": 6, "best_psnr": -math.inf, "optimizers": {}})
    assert old.resumed(limits) is old and old.budget_fitted  # a run saved before these fields
    assert old.improves(-1e9)  # no model kept yet
    kept = Progress(step=4, total_steps=6, best_step=2, best={"val_psnr": 30.0})
    assert kept.improves(30.5) and not kept.improves(29.0)


@pytest.mark.parametrize("name", ["float32", "bfloat16", "float16", "auto"])
def test_train_precision_follows_inference_choice(name: str) -> None:
    from aesr_sci.infer import resolve_precision
    from aesr_sci.training import mixed_precision

    precision = mixed_precision(torch.device("cpu"), name)
    dtype, layout = resolve_precision(name, "cpu")
    assert precision.enabled == (dtype is not None)
    assert precision.channels_last == layout
    if dtype is not None:
        assert precision.dtype == dtype
    assert precision.scaler("cpu").is_enabled() == (dtype == torch.float16)


def test_float32_content_step_is_plain_float32() -> None:
    """The float32 step computes exactly what the network computes, in contiguous memory."""
    torch.manual_seed(0)
    net = build_model("residual", spatial_dims=3, in_channels=1, scale=2, features=4, blocks=1)
    train = SimpleNamespace(lr=0.0, weight_decay=0.0, loss="l1", grad_clip=None)
    step = make_step(net, train, placement=CPU, precision=Precision())
    lq, gt, _ = step.inputs(_batch())
    assert lq.is_contiguous() and not step.channels_last
    with torch.no_grad():
        expected = torch.nn.functional.l1_loss(net(lq), gt)
    assert step(_batch())["loss"] == pytest.approx(float(expected), rel=1e-6)


def test_bfloat16_content_step_runs_channels_last_and_learns() -> None:
    torch.manual_seed(0)
    net = build_model("residual", spatial_dims=3, in_channels=1, scale=2, features=4, blocks=1)
    train = SimpleNamespace(lr=1e-2, weight_decay=0.0, loss="l1", grad_clip=1.0)
    step = make_step(net, train, placement=CPU, precision=Precision(True, torch.bfloat16, True))
    lq, _, _ = step.inputs(_batch())
    assert lq.is_contiguous(memory_format=torch.channels_last_3d)
    dtypes: list[torch.dtype] = []
    net.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    losses = [step(_batch())["loss"] for _ in range(20)]
    assert torch.bfloat16 in dtypes or torch.float32 in dtypes
    assert all(p.dtype == torch.float32 for p in net.parameters())  # weights stay float32
    assert losses[-1] < losses[0]


def test_cli_precision_option_refuses_unknown_values() -> None:
    from click.testing import CliRunner

    from aesr_sci.cli import main

    result = CliRunner().invoke(main, ["train", "recipes/mri_x2.yaml", "--precision", "half", "--check"])
    assert result.exit_code == 2 and "'half' is not one of" in result.output
