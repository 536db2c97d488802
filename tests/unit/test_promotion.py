"""Promotion: the challenger replaces the champion only when it beats it by more than the margin."""

from __future__ import annotations

import pytest

from lensops.tracking.promotion import decide


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_with_no_champion_the_challenger_is_promoted(higher_is_better: bool) -> None:
    assert decide("macro_f1", higher_is_better, 0.5, 0.1, None) == (True, "no champion yet")


def test_a_higher_macro_f1_by_more_than_the_margin_is_promoted() -> None:
    assert decide("macro_f1", True, 0.01, 0.9, 0.8) == (True, "macro_f1 improves by 0.1000 (> margin 0.01)")


def test_a_higher_macro_f1_by_no_more_than_the_margin_is_kept() -> None:
    assert decide("macro_f1", True, 0.25, 0.75, 0.5) == (
        False,
        "macro_f1 changes by +0.2500, not more than margin 0.25",
    )


def test_an_equal_macro_f1_with_no_margin_is_kept() -> None:
    assert decide("macro_f1", True, 0.0, 0.8, 0.8) == (False, "macro_f1 changes by +0.0000, not more than margin 0.0")


def test_any_gain_with_no_margin_is_promoted() -> None:
    promoted, reason = decide("accuracy", True, 0.0, 0.5001, 0.5)

    assert promoted
    assert reason == "accuracy improves by 0.0001 (> margin 0.0)"


def test_a_lower_macro_f1_is_kept_and_the_reason_gives_the_negative_gain() -> None:
    assert decide("macro_f1", True, 0.0, 0.7, 0.8) == (False, "macro_f1 changes by -0.1000, not more than margin 0.0")


def test_a_lower_mae_by_more_than_the_margin_is_promoted() -> None:
    assert decide("mae", False, 0.1, 1.0, 1.5) == (True, "mae improves by 0.5000 (> margin 0.1)")


def test_a_lower_mae_by_no_more_than_the_margin_is_kept() -> None:
    assert decide("mae", False, 0.5, 1.0, 1.5) == (False, "mae changes by +0.5000, not more than margin 0.5")


def test_an_equal_mae_is_kept() -> None:
    assert decide("mae", False, 0.0, 1.25, 1.25) == (False, "mae changes by +0.0000, not more than margin 0.0")


def test_a_higher_mae_is_kept_and_the_reason_gives_the_negative_gain() -> None:
    assert decide("mae", False, 0.0, 2.0, 1.5) == (False, "mae changes by -0.5000, not more than margin 0.0")


def test_a_worse_rmse_is_kept() -> None:
    promoted, _ = decide("rmse", False, 0.0, 10.0, 1.0)

    assert not promoted


def test_a_champion_scoring_zero_is_still_a_champion() -> None:
    assert decide("macro_f1", True, 0.0, 0.0, 0.0) == (False, "macro_f1 changes by +0.0000, not more than margin 0.0")
