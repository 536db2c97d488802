"""One epoch and the rules around it: early stopping, the learning-rate schedule, the optimiser,
and a training or evaluation pass of a tiny network over a list of batches."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import pytest
import torch
from factories import model_spec
from torch import nn

from lensops.config import TrainConfig
from lensops.model.artifact import ModelSpec
from lensops.model.backbones import head_parameters
from lensops.training.epoch import EarlyStopping, EpochRunner, lr_factor, make_optimizer

Batch = dict[str, torch.Tensor]

pytestmark = pytest.mark.usefixtures("one_thread")


def network(spec: ModelSpec, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return spec.build_network(load_weights=False)


def batches(count: int = 3, size: int = 4, regression: bool = False, seed: int = 0) -> list[Batch]:
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        images = torch.randint(0, 256, (size, 3, 32, 32), dtype=torch.uint8, generator=generator)
        if regression:
            target = torch.rand(size, generator=generator) * 10
        else:
            target = torch.randint(0, 2, (size,), dtype=torch.int64, generator=generator)
        out.append({"image": images, "target": target})
    return out


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def changed(before: dict[str, torch.Tensor], model: nn.Module, names: Callable[[str], bool] = lambda _: True) -> set:
    after = model.state_dict()
    return {k for k in before if names(k) and not torch.equal(before[k], after[k])}


def is_head(name: str) -> bool:
    return name.startswith("fc.")


# ---- early stopping ------------------------------------------------------------------------


def run_stopping(stopping: EarlyStopping, values: list[float]) -> list[bool]:
    return [stopping.update({stopping.metric: v, "other": 0.0}) for v in values]


def test_early_stopping_in_min_mode_stops_after_patience_epochs_without_a_lower_value() -> None:
    stopping = EarlyStopping(metric="val_loss", mode="min", patience=2)

    assert run_stopping(stopping, [1.0, 0.8, 0.9, 0.8]) == [False, False, False, True]
    assert stopping.best == 0.8
    assert stopping.stale_epochs == 2


def test_early_stopping_in_max_mode_stops_after_patience_epochs_without_a_higher_value() -> None:
    stopping = EarlyStopping(metric="val_accuracy", mode="max", patience=3)

    assert run_stopping(stopping, [0.5, 0.7, 0.6, 0.7, 0.65]) == [False, False, False, False, True]
    assert stopping.best == 0.7


def test_early_stopping_with_patience_one_stops_at_the_first_stale_epoch() -> None:
    stopping = EarlyStopping(metric="val_loss", mode="min", patience=1)

    assert run_stopping(stopping, [1.0, 0.5, 0.5]) == [False, False, True]


def test_a_new_best_resets_the_stale_count() -> None:
    stopping = EarlyStopping(metric="val_loss", mode="min", patience=2)

    assert run_stopping(stopping, [1.0, 1.1, 0.9, 1.2]) == [False, False, False, False]
    assert (stopping.best, stopping.stale_epochs) == (0.9, 1)
    assert run_stopping(stopping, [1.0]) == [True]


def test_early_stopping_without_patience_never_stops() -> None:
    stopping = EarlyStopping(metric="val_loss", mode="min", patience=None)

    assert run_stopping(stopping, [1.0] + [2.0] * 50) == [False] * 51
    assert stopping.stale_epochs == 50
    assert stopping.best == 1.0


# ---- learning-rate schedule ----------------------------------------------------------------


def test_warm_up_rises_linearly_then_the_schedule_starts_at_one() -> None:
    factor = lr_factor(TrainConfig(epochs=10, warmup_epochs=3, scheduler="none"))

    assert [factor(e) for e in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]


def test_cosine_starts_at_one_and_is_half_way_down_half_way() -> None:
    factor = lr_factor(TrainConfig(epochs=10, scheduler="cosine"))

    assert factor(0) == 1.0
    assert factor(5) == pytest.approx(0.5)
    assert factor(9) == pytest.approx(0.5 * (1 + math.cos(math.pi * 9 / 10)))
    assert all(factor(e) > factor(e + 1) for e in range(9))


def test_cosine_after_warm_up_counts_from_the_end_of_warm_up() -> None:
    factor = lr_factor(TrainConfig(epochs=12, warmup_epochs=2, scheduler="cosine"))

    assert factor(1) == pytest.approx(2 / 3)
    assert factor(2) == 1.0
    assert factor(7) == pytest.approx(0.5)


def test_the_step_schedule_multiplies_by_gamma_every_step_size_epochs() -> None:
    factor = lr_factor(TrainConfig(epochs=20, scheduler="step", step_size=3, step_gamma=0.5))

    assert [factor(e) for e in range(10)] == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.125]
    for k in range(5):
        assert factor(k * 3) == 0.5**k


def test_no_schedule_keeps_the_factor_at_one() -> None:
    factor = lr_factor(TrainConfig(epochs=5, scheduler="none"))

    assert [factor(e) for e in range(5)] == [1.0] * 5


# ---- optimiser ---------------------------------------------------------------------------


def test_sgd_gets_the_configured_momentum_and_weight_decay() -> None:
    spec = model_spec()
    cfg = TrainConfig(optimizer="sgd", lr=0.05, momentum=0.8, weight_decay=0.01)

    optimizer = make_optimizer(network(spec), spec, cfg)

    assert type(optimizer) is torch.optim.SGD
    assert [g["momentum"] for g in optimizer.param_groups] == [0.8, 0.8]
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.01, 0.01]


@pytest.mark.parametrize(("name", "cls"), [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)])
def test_adam_and_adamw_give_their_classes(name: str, cls: type[torch.optim.Optimizer]) -> None:
    spec = model_spec()

    optimizer = make_optimizer(network(spec), spec, TrainConfig(optimizer=name, weight_decay=0.02))

    assert type(optimizer) is cls
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.02, 0.02]


def test_the_head_trains_at_lr_and_the_backbone_at_lr_times_its_scale() -> None:
    spec = model_spec(backbone_lr_scale=0.1)
    model = network(spec)

    optimizer = make_optimizer(model, spec, TrainConfig(lr=0.01))

    head, backbone = optimizer.param_groups
    assert head["lr"] == 0.01
    assert backbone["lr"] == pytest.approx(0.001)
    assert {id(p) for p in head["params"]} == {id(model.fc.weight), id(model.fc.bias)}
    assert len(head["params"]) + len(backbone["params"]) == len(list(model.parameters()))


def test_a_frozen_backbone_leaves_only_head_parameters_trainable_and_in_the_optimiser() -> None:
    spec = model_spec(freeze_backbone=True)
    model = network(spec)

    optimizer = make_optimizer(model, spec, TrainConfig(lr=0.01))

    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"fc.weight", "fc.bias"}
    assert len(optimizer.param_groups) == 1
    assert {id(p) for p in optimizer.param_groups[0]["params"]} == {id(p) for p in head_parameters(model)}
    assert optimizer.param_groups[0]["lr"] == 0.01


# ---- one pass --------------------------------------------------------------------------


def test_a_training_pass_reports_train_metrics_and_changes_the_weights() -> None:
    spec = model_spec()
    model = network(spec)
    cfg = TrainConfig(optimizer="sgd", lr=0.1)
    before = snapshot(model)

    metrics = EpochRunner(model, spec, cfg).run(batches(), make_optimizer(model, spec, cfg))

    assert metrics.keys() == {"train_loss", "train_accuracy", "train_images_per_s"}
    assert metrics["train_loss"] > 0
    assert metrics["train_accuracy"] in {k / 12 for k in range(13)}
    assert metrics["train_images_per_s"] > 0
    assert model.training
    assert changed(before, model, is_head) == {"fc.weight", "fc.bias"}
    assert "conv1.weight" in changed(before, model)


def test_the_training_loss_of_one_batch_is_the_mean_cross_entropy_before_the_update() -> None:
    spec = model_spec()
    model = network(spec)
    batch = batches(count=1)[0]
    reference = copy.deepcopy(model).train()
    with torch.no_grad():
        logits = reference((batch["image"].float() / 255 - 0.5) / 0.5)
    expected_loss = nn.functional.cross_entropy(logits, batch["target"]).item()
    expected_accuracy = int((logits.argmax(1) == batch["target"]).sum()) / len(batch["target"])
    cfg = TrainConfig(optimizer="sgd", lr=0.1)

    metrics = EpochRunner(model, spec, cfg).run([batch], make_optimizer(model, spec, cfg))

    assert metrics["train_loss"] == pytest.approx(expected_loss, rel=1e-5)
    assert metrics["train_accuracy"] == expected_accuracy


def test_an_evaluation_pass_reports_val_metrics_and_leaves_weights_and_statistics_unchanged() -> None:
    spec = model_spec()
    model = network(spec)
    data = batches()
    before = snapshot(model)
    reference = copy.deepcopy(model).eval()
    with torch.no_grad():
        logits = torch.cat([reference((b["image"].float() / 255 - 0.5) / 0.5) for b in data])
    targets = torch.cat([b["target"] for b in data])

    metrics = EpochRunner(model, spec, TrainConfig()).run(data, None)

    assert metrics.keys() == {"val_loss", "val_accuracy", "val_images_per_s"}
    assert metrics["val_loss"] == pytest.approx(nn.functional.cross_entropy(logits, targets).item(), rel=1e-5)
    assert metrics["val_accuracy"] == int((logits.argmax(1) == targets).sum()) / len(targets)
    assert not model.training
    assert changed(before, model) == set()
    assert all(p.grad is None for p in model.parameters())


def test_a_frozen_backbone_keeps_its_weights_through_a_training_pass_while_the_head_changes() -> None:
    spec = model_spec(freeze_backbone=True)
    model = network(spec)
    cfg = TrainConfig(optimizer="adamw", lr=0.01, weight_decay=0.1)
    before = snapshot(model)
    backbone_parameters = {name for name, _ in model.named_parameters() if not is_head(name)}

    EpochRunner(model, spec, cfg).run(batches(), make_optimizer(model, spec, cfg))

    assert changed(before, model, lambda name: name in backbone_parameters) == set()
    assert changed(before, model, is_head) == {"fc.weight", "fc.bias"}


def test_a_frozen_backbone_keeps_its_batch_norm_statistics_through_a_training_pass() -> None:
    spec = model_spec(freeze_backbone=True)
    model = network(spec)
    cfg = TrainConfig(optimizer="adamw", lr=0.01)
    statistics = {name: buffer.clone() for name, buffer in model.named_buffers()}

    EpochRunner(model, spec, cfg).run(batches(), make_optimizer(model, spec, cfg))

    assert statistics and all(torch.equal(statistics[name], buffer) for name, buffer in model.named_buffers())


def test_gradient_clipping_is_applied_with_the_configured_norm(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = model_spec()
    model = network(spec)
    cfg = TrainConfig(optimizer="sgd", lr=10.0, momentum=0.0, weight_decay=0.0, grad_clip_norm=0.5)
    clip = torch.nn.utils.clip_grad_norm_
    calls: list[tuple[float, float, float]] = []

    def recording_clip(parameters: object, max_norm: float, *args: object, **kwargs: object) -> torch.Tensor:
        parameters = list(parameters)  # type: ignore[call-overload]
        norm = clip(parameters, max_norm, *args, **kwargs)
        clipped = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in parameters if p.grad is not None]))
        calls.append((max_norm, float(norm), float(clipped)))
        return norm

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording_clip)

    EpochRunner(model, spec, cfg).run(batches(count=2), make_optimizer(model, spec, cfg))

    assert [c[0] for c in calls] == [0.5, 0.5]
    assert all(clipped <= 0.5 * (1 + 1e-4) for _, _, clipped in calls)
    assert any(norm > 0.5 for _, norm, _ in calls)


def test_the_first_update_moves_the_weights_by_at_most_lr_times_the_clip_norm() -> None:
    spec = model_spec()
    model = network(spec)
    cfg = TrainConfig(optimizer="sgd", lr=100.0, momentum=0.0, weight_decay=0.0, grad_clip_norm=0.01)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}

    EpochRunner(model, spec, cfg).run(batches(count=1), make_optimizer(model, spec, cfg))

    step = torch.linalg.vector_norm(torch.stack([(p.detach() - before[n]).norm() for n, p in model.named_parameters()]))
    assert 0 < float(step) <= 100.0 * 0.01 * (1 + 1e-4)


def test_without_grad_clip_norm_gradients_are_not_clipped(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = model_spec()
    model = network(spec)
    cfg = TrainConfig(optimizer="sgd", lr=0.01)
    calls: list[object] = []
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda *args, **kwargs: calls.append(args))

    EpochRunner(model, spec, cfg).run(batches(count=1), make_optimizer(model, spec, cfg))

    assert calls == []


@pytest.mark.parametrize("training", [True, False])
def test_the_on_batch_hook_gets_each_batch_index_before_the_batch(training: bool) -> None:
    spec = model_spec()
    model = network(spec)
    cfg = TrainConfig(optimizer="sgd", lr=0.01)
    seen: list[int] = []
    optimizer = make_optimizer(model, spec, cfg) if training else None

    EpochRunner(model, spec, cfg).run(batches(count=3), optimizer, on_batch=seen.append)

    assert seen == [0, 1, 2]


def test_a_failing_on_batch_hook_stops_the_pass_before_that_batch() -> None:
    spec = model_spec()
    model = network(spec)
    cfg = TrainConfig(optimizer="sgd", lr=0.1)
    before = snapshot(model)

    def fail_at_first(index: int) -> None:
        raise RuntimeError(f"drill at batch {index}")

    with pytest.raises(RuntimeError, match="drill at batch 0"):
        EpochRunner(model, spec, cfg).run(batches(), make_optimizer(model, spec, cfg), on_batch=fail_at_first)

    assert changed(before, model) == set()


def test_a_regression_pass_reports_mae_and_loss() -> None:
    spec = model_spec("regression")
    model = network(spec)
    data = batches(regression=True)
    reference = copy.deepcopy(model).eval()
    with torch.no_grad():
        values = torch.cat([reference((b["image"].float() / 255 - 0.5) / 0.5).squeeze(1) for b in data])
    targets = torch.cat([b["target"] for b in data])
    runner = EpochRunner(model, spec, TrainConfig(optimizer="sgd", lr=0.01))

    evaluation = runner.run(data, None)
    training = runner.run(data, make_optimizer(model, spec, runner.cfg))

    assert evaluation.keys() == {"val_loss", "val_mae", "val_images_per_s"}
    assert evaluation["val_mae"] == pytest.approx((values - targets).abs().mean().item(), rel=1e-5)
    expected_loss = nn.functional.smooth_l1_loss(values, targets).item()
    assert evaluation["val_loss"] == pytest.approx(expected_loss, rel=1e-5)
    assert training.keys() == {"train_loss", "train_mae", "train_images_per_s"}
    assert training["train_mae"] > 0
