"""The benchmarks' rounds: the sides take turns, and a ratio is the median of the rounds' ratios
(host drift between minutes lands on both sides of a round alike, not in the ratio)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def common() -> ModuleType:
    spec = importlib.util.spec_from_file_location("benchmarks_common", BENCHMARKS / "_common.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_each_side_runs_once_per_round_and_the_order_reverses_every_other_round(common: ModuleType) -> None:
    calls: list[str] = []

    def side(name: str):
        return lambda: calls.append(name) or len(calls)

    measured = common.in_rounds({"a": side("a"), "b": side("b")}, 3)

    assert calls == ["a", "b", "b", "a", "a", "b"]
    assert [(row["round"], row["first"]) for row in measured] == [(1, "a"), (2, "b"), (3, "a")]
    assert [(row["a"], row["b"]) for row in measured] == [(1, 2), (4, 3), (5, 6)]


def test_the_ratio_is_the_median_of_the_rounds_ratios_with_their_range(common: ModuleType) -> None:
    measured = [
        {"ours": {"rate": 2.0}, "theirs": {"rate": 1.0}},
        {"ours": {"rate": 3.0}, "theirs": {"rate": 2.0}},
        {"ours": {"rate": 1.0}, "theirs": {"rate": 2.0}},
    ]

    (row,) = common.round_comparison(measured, "ours", "theirs", [("img/s", "rate")])

    # the ratio of the medians would be 2.0 / 2.0 = 1.0; the rounds' ratios are 2.0, 1.5 and 0.5
    assert (row["lensops"], row["baseline"]) == (2.0, 2.0)
    assert row["ratio"] == 1.5 and row["ratio_range"] == "0.50..2.00" and row["rounds"] == 3
