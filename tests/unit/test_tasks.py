"""Tasks: classification and regression metrics, answers, agreement, lookup by name, and the
configuration rules a task adds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support
from torch import nn

from lensops.config import ConfigError, load_config
from lensops.model.tasks import BUILT_IN, Task, get_task
from lensops.model.tasks.base import LossFn
from lensops.model.tasks.classification import Classification
from lensops.model.tasks.regression import Regression

CLASSES = ["crack", "dust", "ok", "shade"]


class Doubling(Task):
    """A user's task, named by the import path ``test_tasks:Doubling``."""

    name = "doubling"
    epoch_metrics = ("mae",)
    promotion_metric = "mae"

    def targets(self, rows: Any, target_column: str | None) -> np.ndarray:
        return rows[target_column].to_numpy()

    def head(self, in_features: int, classes: Sequence[str]) -> nn.Module:
        return nn.Linear(in_features, 1)

    def loss_fn(self, cfg: Any) -> LossFn:
        return lambda logits, targets: (logits.squeeze(1) - targets).abs().sum()

    def batch_sums(self, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"mae": (logits.squeeze(1) - targets).abs().sum()}

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        return 2 * logits.squeeze(1)

    def answers(self, outputs: np.ndarray, classes: Sequence[str]) -> list[dict[str, Any]]:
        return [{"prediction": float(v), "confidence": None} for v in outputs]

    def agrees(self, first: Mapping[str, Any], second: Mapping[str, Any]) -> bool:
        return first["prediction"] == second["prediction"]

    def metrics(self, targets: np.ndarray, outputs: np.ndarray, classes: Sequence[str]) -> dict[str, float]:
        return {"mae": float(np.abs(outputs - targets).mean())}

    def report(self, targets: np.ndarray, outputs: np.ndarray, classes: Sequence[str]) -> Any:
        raise NotImplementedError


class Unfinished(Task):
    """A task whose author has not written its methods yet."""

    name = "unfinished"


class NotATask:
    """Importable, but not a :class:`Task`."""


def one_hot_outputs(predictions: Sequence[int], n_classes: int) -> np.ndarray:
    """Probabilities whose argmax is ``predictions``."""
    outputs = np.full((len(predictions), n_classes), 0.1 / max(n_classes - 1, 1))
    outputs[np.arange(len(predictions)), predictions] = 0.9
    return outputs


def random_case(seed: int, n: int = 50, n_classes: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, n_classes, n)
    outputs = rng.dirichlet(np.ones(n_classes), n)
    return targets, outputs


def sklearn_metrics(targets: np.ndarray, predictions: np.ndarray, n_classes: int) -> dict[str, float]:
    return {
        "accuracy": accuracy_score(targets, predictions),
        "macro_f1": f1_score(targets, predictions, average="macro", labels=range(n_classes), zero_division=0),
    }


EDGE_CASES = {
    "a_class_never_predicted": ([0, 1, 2, 3, 3, 1], [0, 1, 1, 0, 0, 1]),
    "a_class_absent_from_the_targets": ([0, 0, 1, 1, 2, 2], [0, 3, 1, 1, 2, 3]),
    "a_class_neither_in_targets_nor_predicted": ([0, 1, 1, 2], [0, 1, 2, 2]),
    "all_right": ([0, 1, 2, 3], [0, 1, 2, 3]),
    "all_wrong": ([0, 1, 2, 3], [1, 2, 3, 0]),
    "one_example": ([2], [2]),
}


# ---- classification metrics ---------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_classification_metrics_equal_scikit_learn_on_random_outputs(seed: int) -> None:
    targets, outputs = random_case(seed)

    metrics = Classification().metrics(targets, outputs, CLASSES)

    expected = sklearn_metrics(targets, outputs.argmax(1), len(CLASSES))
    assert metrics.keys() == {"accuracy", "macro_f1"}
    assert metrics["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-12)
    assert metrics["macro_f1"] == pytest.approx(expected["macro_f1"], abs=1e-12)


@pytest.mark.parametrize("case", list(EDGE_CASES))
def test_classification_metrics_equal_scikit_learn_on_edge_cases(case: str) -> None:
    targets, predictions = (np.array(a) for a in EDGE_CASES[case])

    metrics = Classification().metrics(targets, one_hot_outputs(predictions, len(CLASSES)), CLASSES)

    expected = sklearn_metrics(targets, predictions, len(CLASSES))
    assert metrics["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-12)
    assert metrics["macro_f1"] == pytest.approx(expected["macro_f1"], abs=1e-12)


def test_an_absent_and_never_predicted_class_counts_as_zero_f1_in_the_macro_average() -> None:
    targets, predictions = np.array([0, 1]), np.array([0, 1])

    metrics = Classification().metrics(targets, one_hot_outputs(predictions, 3), ["a", "b", "c"])

    assert metrics == {"accuracy": 1.0, "macro_f1": pytest.approx(2 / 3)}


@pytest.mark.parametrize("case", ["random", *EDGE_CASES])
def test_the_per_class_table_equals_scikit_learns_precision_recall_f1_support(case: str) -> None:
    if case == "random":
        targets, outputs = random_case(7)
    else:
        targets = np.array(EDGE_CASES[case][0])
        outputs = one_hot_outputs(EDGE_CASES[case][1], len(CLASSES))

    report = Classification().report(targets, outputs, CLASSES)

    rows = report.tables["evaluation/per_class.json"]["per_class"]
    precision, recall, f1, support = precision_recall_fscore_support(
        targets, outputs.argmax(1), labels=range(len(CLASSES)), zero_division=0
    )
    assert [r["class"] for r in rows] == CLASSES
    assert [r["precision"] for r in rows] == pytest.approx(precision.tolist(), abs=1e-12)
    assert [r["recall"] for r in rows] == pytest.approx(recall.tolist(), abs=1e-12)
    assert [r["f1"] for r in rows] == pytest.approx(f1.tolist(), abs=1e-12)
    assert [r["support"] for r in rows] == support.tolist()


def test_the_classification_report_text_lists_every_class_and_the_overall_metrics() -> None:
    targets = np.array([0, 1, 1, 2, 3, 3])
    outputs = one_hot_outputs([0, 1, 2, 2, 3, 0], len(CLASSES))
    task = Classification()

    report = task.report(targets, outputs, CLASSES)

    lines = report.text.splitlines()
    assert lines[0].split() == ["class", "precision", "recall", "f1", "support"]
    assert [line.split()[0] for line in lines[1:5]] == CLASSES
    assert lines[1].split() == ["crack", "0.5000", "1.0000", "0.6667", "1"]
    assert lines[2].split() == ["dust", "1.0000", "0.5000", "0.6667", "2"]
    assert lines[5] == ""
    metrics = task.metrics(targets, outputs, CLASSES)
    assert lines[6:] == [f"accuracy: {metrics['accuracy']:.4f}", f"macro_f1: {metrics['macro_f1']:.4f}"]
    assert set(report.figures) == {"plots/confusion_matrix.png"}


def test_a_long_class_name_widens_the_report_column() -> None:
    classes = ["a", "a_very_long_class_name"]

    text = Classification().report(np.array([0, 1]), one_hot_outputs([0, 1], 2), classes).text

    header, first, second = text.splitlines()[:3]
    assert header.index("precision") == len("a_very_long_class_name") + 2
    assert first.split()[0] == "a"
    assert second.split()[0] == "a_very_long_class_name"


# ---- classification answers and agreement -----------------------------------------------


def test_a_classification_answer_is_the_argmax_class_its_probability_and_all_probabilities() -> None:
    outputs = np.array([[0.1, 0.2, 0.6, 0.1], [0.7, 0.1, 0.1, 0.1]], dtype=np.float32)

    answers = Classification().answers(outputs, CLASSES)

    assert [a["prediction"] for a in answers] == ["ok", "crack"]
    assert [a["confidence"] for a in answers] == [float(np.float32(0.6)), float(np.float32(0.7))]
    assert answers[0]["probabilities"] == {c: float(p) for c, p in zip(CLASSES, outputs[0], strict=True)}
    assert all(type(a["confidence"]) is float for a in answers)
    assert all(type(p) is float for a in answers for p in a["probabilities"].values())


def test_classification_activation_is_a_softmax_over_classes() -> None:
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], dtype=torch.float16)

    probabilities = Classification().activate(logits)

    assert probabilities.dtype == torch.float32
    assert torch.allclose(probabilities, torch.softmax(logits.float(), 1))
    assert torch.allclose(probabilities.sum(1), torch.ones(2))


def test_classification_answers_agree_exactly_when_they_name_the_same_class() -> None:
    task = Classification()

    assert task.agrees({"prediction": "ok", "confidence": 0.9}, {"prediction": "ok", "confidence": 0.4})
    assert not task.agrees({"prediction": "ok", "confidence": 0.9}, {"prediction": "dust", "confidence": 0.9})


def test_the_classification_metric_label_is_the_predicted_class() -> None:
    assert Classification().metric_label({"prediction": "dust", "confidence": 0.5}) == "dust"


# ---- regression --------------------------------------------------------------------------


def test_regression_metrics_are_mae_and_rmse() -> None:
    targets = np.array([1.0, 2.0, 3.0, 4.0])
    outputs = np.array([1.5, 2.0, 1.0, 5.0])

    metrics = Regression().metrics(targets, outputs, [])

    assert metrics == {
        "mae": pytest.approx((0.5 + 0 + 2 + 1) / 4),
        "rmse": pytest.approx(np.sqrt((0.25 + 0 + 4 + 1) / 4)),
    }


def test_the_regression_report_text_gives_its_metrics_and_a_residual_plot() -> None:
    report = Regression().report(np.array([0.0, 2.0]), np.array([1.0, 2.0]), [])

    assert report.text.splitlines() == ["mae: 0.5000", f"rmse: {np.sqrt(0.5):.4f}"]
    assert set(report.figures) == {"plots/residuals.png"}


def test_a_regression_answer_is_the_value_without_confidence() -> None:
    answers = Regression().answers(np.array([0.25, -3.0], dtype=np.float32), [])

    assert answers == [{"prediction": 0.25, "confidence": None}, {"prediction": -3.0, "confidence": None}]
    assert all(type(a["prediction"]) is float for a in answers)


def test_regression_activation_squeezes_the_single_output() -> None:
    values = Regression().activate(torch.tensor([[1.5], [-2.0]]))

    assert values.shape == (2,)
    assert values.tolist() == [1.5, -2.0]


@pytest.mark.parametrize(
    ("first", "second", "agree"),
    [
        (100.0, 100.0, True),
        (100.0, 104.9, True),
        (100.0, 95.1, True),
        (100.0, 105.1, False),
        (100.0, 94.9, False),
        (-100.0, -104.9, True),
        (-100.0, -105.1, False),
        (0.0, 0.0, True),
        (0.0, 1e-7, True),
        (0.0, -1e-7, True),
        (0.0, 2e-6, False),
        (1e-8, 5e-7, True),
    ],
)
def test_regression_answers_agree_within_five_percent_or_within_1e_6_around_zero(
    first: float, second: float, agree: bool
) -> None:
    assert Regression().agrees({"prediction": first}, {"prediction": second}) is agree


def test_the_regression_metric_label_is_value_whatever_the_prediction() -> None:
    task = Regression()

    assert task.metric_label({"prediction": 1.25, "confidence": None}) == "value"
    assert task.metric_label({"prediction": -7.0, "confidence": None}) == "value"


# ---- what tasks report and which way is better -------------------------------------------


def test_classification_reports_loss_and_accuracy_per_split() -> None:
    assert Classification().reported_metrics() == {"train_loss", "train_accuracy", "val_loss", "val_accuracy"}


def test_regression_reports_loss_and_mae_per_split() -> None:
    assert Regression().reported_metrics() == {"train_loss", "train_mae", "val_loss", "val_mae"}


def test_the_promotion_metrics_are_macro_f1_and_mae() -> None:
    assert Classification().promotion_metric == "macro_f1"
    assert Regression().promotion_metric == "mae"


@pytest.mark.parametrize(
    ("task", "metric", "higher"),
    [
        (Classification(), "macro_f1", True),
        (Classification(), "accuracy", True),
        (Classification(), "loss", False),
        (Regression(), "mae", False),
        (Regression(), "rmse", False),
        (Regression(), "loss", False),
    ],
)
def test_higher_is_better_except_for_losses_and_errors(task: Task, metric: str, higher: bool) -> None:
    assert task.higher_is_better(metric) is higher


# ---- tasks by name -----------------------------------------------------------------------


@pytest.mark.parametrize(("name", "cls"), [("classification", Classification), ("regression", Regression)])
def test_a_built_in_name_gives_its_task(name: str, cls: type[Task]) -> None:
    task = get_task(name)

    assert type(task) is cls
    assert task.name == name
    assert BUILT_IN[name] is cls


def test_an_import_path_gives_an_instance_of_that_task_class() -> None:
    task = get_task("test_tasks:Doubling")

    assert type(task).__name__ == "Doubling"
    assert isinstance(task, Task)
    assert task.name == "doubling"
    assert task.reported_metrics() == {"train_loss", "train_mae", "val_loss", "val_mae"}


def test_an_unknown_name_is_an_error_saying_what_is_accepted() -> None:
    with pytest.raises(ValueError) as caught:
        get_task("segmentation")

    assert str(caught.value) == (
        "unknown task 'segmentation': use classification, regression, change_detection "
        "or an import path package.module:Class"
    )


@pytest.mark.parametrize(
    ("name", "cause"),
    [
        ("no_such_module_lensops:Task", "No module named 'no_such_module_lensops'"),
        ("test_tasks:NoSuchClass", "has no attribute 'NoSuchClass'"),
    ],
)
def test_an_unimportable_path_is_an_error_naming_it_and_why(name: str, cause: str) -> None:
    with pytest.raises(ValueError) as caught:
        get_task(name)

    assert str(caught.value).startswith(f"task '{name}' cannot be imported: ")
    assert cause in str(caught.value)


def test_a_task_class_with_methods_left_to_write_is_an_error_naming_it() -> None:
    with pytest.raises(ValueError, match=r"^task 'test_tasks:Unfinished' cannot be created: .*abstract"):
        get_task("test_tasks:Unfinished")


@pytest.mark.parametrize("name", [":Task", "test_tasks:", "test_tasks"])
def test_an_import_path_without_module_or_class_is_an_error_saying_what_is_accepted(name: str) -> None:
    accepted = "use classification, regression, change_detection or an import path"
    with pytest.raises(ValueError, match=rf"^unknown task '{name}': {accepted}"):
        get_task(name)


@pytest.mark.parametrize("name", ["test_tasks:NotATask", "test_tasks:CLASSES", "collections:OrderedDict"])
def test_an_import_path_to_something_other_than_a_task_class_is_an_error(name: str) -> None:
    with pytest.raises(ValueError) as caught:
        get_task(name)

    assert str(caught.value) == f"task '{name}' is not a subclass of lensops.model.tasks.Task"


# ---- configuration rules -----------------------------------------------------------------


def test_regression_without_a_target_column_fails_at_load_naming_data_target_column() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, ["model.task=regression"])

    assert "data.target_column" in str(caught.value)
    assert "model.task=regression" in str(caught.value)


def test_regression_with_a_target_column_and_a_regression_metric_loads() -> None:
    cfg = load_config(
        None, ["model.task=regression", "data.target_column=dust_level", "train.early_stopping_metric=val_mae"]
    )

    assert cfg.model.task == "regression"
    assert cfg.data.target_column == "dust_level"


def test_an_early_stopping_metric_the_task_does_not_report_fails_naming_it() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, ["train.early_stopping_metric=val_mae"])

    message = str(caught.value)
    assert "train.early_stopping_metric=val_mae is not reported by classification training" in message
    assert "use one of train_accuracy, train_loss, val_accuracy, val_loss" in message


def test_a_custom_task_by_import_path_is_accepted_by_the_config() -> None:
    cfg = load_config(None, ["model.task=test_tasks:Doubling", "train.early_stopping_metric=val_mae"])

    assert cfg.model.task == "test_tasks:Doubling"


def test_an_unknown_task_in_the_config_fails_naming_model_task() -> None:
    with pytest.raises(ConfigError, match=r"model\.task: unknown task 'nope'"):
        load_config(None, ["model.task=nope"])


def test_a_serve_min_side_below_the_training_min_side_fails() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, ["data.min_side=64", "serve.min_side=48"])

    assert "serve.min_side=48 accepts images that training rejects (data.min_side=64)" in str(caught.value)


def test_a_serve_max_pixels_above_the_training_max_pixels_fails() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, ["data.max_pixels=1000000", "serve.max_pixels=2000000"])

    assert "serve.max_pixels=2000000 accepts images that training rejects (data.max_pixels=1000000)" in str(
        caught.value
    )


def test_serve_limits_equal_to_the_training_limits_load() -> None:
    cfg = load_config(None, ["data.min_side=64", "serve.min_side=64", "data.max_pixels=1000", "serve.max_pixels=1000"])

    assert (cfg.serve.min_side, cfg.serve.max_pixels) == (64, 1000)
