"""Metrics on small matrices whose expected values are worked out by hand in the comments."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from blip_ray import metrics
from blip_ray.metrics import (
    METRIC_NAMES,
    METRICS,
    Metric,
    acc,
    bwt,
    bwt_gem,
    ci95,
    forgetting,
    fwt,
    normalize_returns,
    summary,
)
from blip_ray.records.trials import TrialResult
from blip_ray.report import markdown_table, summary_frame

# R[t, u]: accuracy (percent) on task u after training task t.
R3 = [
    [80.0, 30.0, 10.0],
    [70.0, 90.0, 20.0],
    [60.0, 85.0, 95.0],
]
BASE3 = [10.0, 25.0, 12.0]

# Task 0 peaks after task 2 (not on the diagonal); the zero-shot R[0, 1] = 95 beats everything
# task 1 ever reaches once trained, so counting t < u in forgetting would show.
R4 = [
    [50.0, 95.0, 10.0, 20.0],
    [60.0, 70.0, 30.0, 40.0],
    [65.0, 60.0, 80.0, 35.0],
    [55.0, 50.0, 70.0, 90.0],
]
BASE4 = [10.0, 20.0, 25.0, 30.0]


def test_acc_by_hand() -> None:
    assert acc(R3) == pytest.approx(80.0)  # (60 + 85 + 95) / 3 = 240 / 3
    assert acc(R4) == pytest.approx(66.25)  # (55 + 50 + 70 + 90) / 4 = 265 / 4


def test_bwt_both_forms_by_hand() -> None:
    # R3: last row - diagonal = (60-80, 85-90, 95-95) = (-20, -5, 0), sum -25.
    assert bwt(R3) == pytest.approx(-25.0 / 3)  # UCB: / T
    assert bwt_gem(R3) == pytest.approx(-12.5)  # GEM: / (T-1) = -25 / 2
    # R4: (55-50, 50-70, 70-80, 90-90) = (5, -20, -10, 0), sum -25.
    assert bwt(R4) == pytest.approx(-6.25)  # -25 / 4
    assert bwt_gem(R4) == pytest.approx(-25.0 / 3)


@pytest.mark.parametrize("tasks", [2, 3, 5, 10, 20])
def test_ucb_bwt_is_gem_bwt_times_t_minus_one_over_t(tasks: int) -> None:
    matrix = np.random.default_rng(tasks).uniform(size=(tasks, tasks))
    assert bwt(matrix) == pytest.approx(bwt_gem(matrix) * (tasks - 1) / tasks)


def test_forgetting_by_hand() -> None:
    # R3: u=0: max(80, 70) - 60 = 20; u=1: max(90) - 85 = 5; mean 12.5.
    assert forgetting(R3) == pytest.approx(12.5)
    # R4: u=0: max(50, 60, 65) - 55 = 10; u=1: max(70, 60) - 50 = 20; u=2: max(80) - 70 = 10.
    assert forgetting(R4) == pytest.approx(40.0 / 3)


def test_forgetting_ignores_zero_shot_values_before_the_task_is_learned() -> None:
    # Counting R4[0, 1] = 95 (t < u) would give task 1 a drop of 95 - 50 = 45, mean 65 / 3.
    assert forgetting(R4) != pytest.approx(65.0 / 3)
    # Task 1 scores 0.9 zero-shot, 0.6 once learned, 0.4 at the end: its drop is 0.6 - 0.4.
    zero_shot_peak = [[0.5, 0.9, 0.0], [0.5, 0.6, 0.0], [0.5, 0.4, 0.8]]
    assert forgetting(zero_shot_peak) == pytest.approx((0.0 + 0.2) / 2)  # not (0 + 0.5) / 2


def test_forgetting_is_not_clipped_at_zero() -> None:
    assert forgetting([[0.4, 0.0], [0.7, 0.9]]) == pytest.approx(-0.3)  # 0.4 - 0.7


def test_per_task_terms_by_hand_and_their_means_are_the_metrics() -> None:
    # R4 (from the by-hand tests above): last row; last row - diagonal; the drops 10, 20, 10.
    terms = {key: fn(R4).tolist() for key, fn in metrics.TASK_TERMS.items()}
    assert terms == {
        "acc": [55.0, 50.0, 70.0, 90.0],
        "bwt": [5.0, -20.0, -10.0, 0.0],
        "forgetting": [10.0, 20.0, 10.0],
    }
    for key, fn in metrics.TASK_TERMS.items():
        assert fn(R3).mean() == pytest.approx(summary(R3)[key])
    assert metrics.forgetting_terms([[0.5]]).shape == (0,)  # one task: nothing to forget


def test_fwt_by_hand() -> None:
    # R3: (R[0,1] - 25, R[1,2] - 12) = (5, 8), mean 6.5.
    assert fwt(R3, BASE3) == pytest.approx(6.5)
    # R4: (95 - 20, 30 - 25, 35 - 30) = (75, 5, 5), mean 85 / 3.
    assert fwt(R4, BASE4) == pytest.approx(85.0 / 3)


def test_fwt_ignores_first_baseline_entry() -> None:
    assert fwt(R3, [1e9, 25.0, 12.0]) == pytest.approx(6.5)


# Metrics of R4 after each finished row, i.e. of the leading k x k block:
# k=1: acc 50, bwt 0, the rest undefined.
# k=2: [[50,95],[60,70]]: acc (60+70)/2 = 65; bwt (10+0)/2 = 5; gem 10; forgetting 50-60 = -10;
#      fwt 95-20 = 75.
# k=3: acc (65+60+80)/3 = 205/3; bwt (15-10+0)/3 = 5/3; gem 5/2; forgetting
#      ((60-65) + (70-60))/2 = 2.5; fwt (75+5)/2 = 40.
# k=4: the full-matrix values.
RUNNING4 = [
    {"acc": 50.0, "bwt": 0.0, "bwt_gem": math.nan, "forgetting": math.nan, "fwt": math.nan},
    {"acc": 65.0, "bwt": 5.0, "bwt_gem": 10.0, "forgetting": -10.0, "fwt": 75.0},
    {"acc": 205.0 / 3, "bwt": 5.0 / 3, "bwt_gem": 2.5, "forgetting": 2.5, "fwt": 40.0},
    {"acc": 66.25, "bwt": -6.25, "bwt_gem": -25.0 / 3, "forgetting": 40.0 / 3, "fwt": 85.0 / 3},
]


def _assert_metrics(actual: dict[str, float], expected: dict[str, float]) -> None:
    assert list(actual) == list(METRIC_NAMES)
    for name in METRIC_NAMES:
        assert actual[name] == pytest.approx(expected[name], nan_ok=True), name


@pytest.mark.parametrize("rows", [1, 2, 3, 4])
def test_partial_rows_score_the_tasks_seen_so_far(rows: int) -> None:
    partial = np.asarray(R4)[:rows]  # shape (rows, 4): a run in progress
    _assert_metrics(summary(partial, BASE4), RUNNING4[rows - 1])


def test_partial_rows_ignore_unseen_columns() -> None:
    partial = np.asarray(R4)[:2].copy()
    partial[:, 2:] = np.nan  # not read until those tasks are trained
    _assert_metrics(summary(partial, BASE4), RUNNING4[1])


def test_one_task_run() -> None:
    only = [[0.7, 0.1, 0.2]]
    assert acc(only) == pytest.approx(0.7)
    assert bwt(only) == 0.0
    for value in (bwt_gem(only), forgetting(only), fwt(only, [0.0, 0.0, 0.0])):
        assert math.isnan(value)


def test_summary_without_baseline_has_nan_fwt() -> None:
    result = summary(R3)
    assert math.isnan(result["fwt"])
    assert result["acc"] == pytest.approx(80.0)
    assert all(isinstance(value, float) for value in result.values())


def test_normalize_returns_per_column() -> None:
    returns = [[0.0, 50.0], [10.0, 100.0]]
    # Column 0: (x - 0) / 20; column 1: (x - 50) / 100.
    expected = [[0.0, 0.0], [0.5, 0.5]]
    np.testing.assert_allclose(normalize_returns(returns, [0.0, 50.0], [20.0, 150.0]), expected)


def test_normalize_returns_degenerate_column_is_nan_without_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scaled = normalize_returns([[3.0, 5.0]], [1.0, 5.0], [2.0, 5.0])
    assert scaled[0, 0] == pytest.approx(2.0)  # (3 - 1) / (2 - 1)
    assert math.isnan(scaled[0, 1])


def test_a_scale_equal_to_float32_precision_is_no_scale() -> None:
    # A best observed return read back from a float32 buffer equals the random policy's 0.4 but
    # for 6e-9; dividing by that span would report returns of -16,777,216.
    high = float(np.float32(0.4))
    scaled = normalize_returns([[0.0, 1.0]], [0.4, 0.0], [high, 1.0 + 1e-5])
    assert math.isnan(scaled[0, 0]) and scaled[0, 1] == pytest.approx(1.0, abs=1e-4)


def test_normalize_returns_rejects_high_below_low() -> None:
    with pytest.raises(ValueError, match="high must be >= low"):
        normalize_returns([[1.0, 2.0]], [0.0, 5.0], [1.0, 4.0])


def test_ci95_by_hand() -> None:
    # [1, 2, 3]: mean 2, sd 1, t_{0.975, 2} = 4.302653 -> half width 4.302653 / sqrt(3).
    mean, half = ci95([1.0, 2.0, 3.0])
    assert mean == pytest.approx(2.0)
    assert half == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    # [0, 2]: mean 1, sd sqrt(2), t_{0.975, 1} = 12.706205 -> half width 12.706205.
    mean, half = ci95(np.array([0.0, 2.0]))
    assert (mean, half) == pytest.approx((1.0, 12.706205), rel=1e-6)


def test_ci95_single_value_has_nan_half_width() -> None:
    mean, half = ci95([0.42])
    assert mean == pytest.approx(0.42)
    assert math.isnan(half)


@pytest.mark.parametrize(
    "bad",
    [
        [1.0, 2.0, 3.0],  # 1-D
        [[[1.0]]],  # 3-D
        np.zeros((3, 2)),  # more rows than tasks
        np.zeros((0, 3)),  # no rows
        np.zeros((1, 0)),  # no tasks
    ],
)
def test_bad_matrix_shapes_raise(bad: object) -> None:
    for metric in (acc, bwt, bwt_gem, forgetting, summary):
        with pytest.raises(ValueError, match="accuracy matrix"):
            metric(bad)
    with pytest.raises(ValueError, match="accuracy matrix"):
        normalize_returns(bad, 0.0, 1.0)


def test_bad_vector_shapes_raise() -> None:
    with pytest.raises(ValueError, match="baseline"):
        fwt(R3, [0.0, 0.0])
    with pytest.raises(ValueError, match="baseline"):
        summary(np.asarray(R4)[:2], [0.0, 0.0])  # one per task column (4), not per finished row
    with pytest.raises(ValueError, match="low"):
        normalize_returns(R3, [0.0], [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="high"):
        normalize_returns(R3, [0.0, 0.0, 0.0], 1.0)
    for bad in ([], [[1.0, 2.0]]):
        with pytest.raises(ValueError, match="ci95"):
            ci95(bad)


def test_metrics_declare_keys_and_labels_in_table_order() -> None:
    assert METRIC_NAMES == ("acc", "bwt", "bwt_gem", "forgetting", "fwt")
    assert [metric.label for metric in METRICS][:2] == ["ACC", "BWT (1/T, official)"]
    assert [metric.needs_baseline for metric in METRICS] == [False] * 4 + [True]
    assert [metric.higher_is_better for metric in METRICS] == [True] * 3 + [False, True]


def test_one_metrics_entry_reaches_summary_csv_and_the_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A new matrix metric is one entry in METRICS: summary(), summary.csv and the table follow."""
    final_first = Metric("final_first", "Final on task 0", lambda R: float(np.asarray(R)[-1, 0]))
    monkeypatch.setattr(metrics, "METRICS", (*METRICS, final_first))
    assert list(summary(R3, BASE3)) == [*METRIC_NAMES, "final_first"]
    assert summary(R3)["final_first"] == 60.0
    trial = TrialResult(
        trial_id="t0",
        method="sgd",
        seed=0,
        hyperparameters={"final_first": 1},
        status="ok",
        matrix=R3,
        initial_row=BASE3,
    )
    frame = summary_frame([trial])
    columns = list(frame.columns)
    assert columns[columns.index("fwt") :][:3] == ["fwt", "final_first", "valid_acc"]
    valid = columns[columns.index("valid_fwt") :][:3]
    assert valid == ["valid_fwt", "valid_final_first", "capacity"]
    assert frame.loc[0, "final_first"] == 60.0 and frame.loc[0, "hp_final_first"] == 1
    header = markdown_table([trial]).splitlines()[0]
    assert "| FWT | Final on task 0 | Capacity |" in header
