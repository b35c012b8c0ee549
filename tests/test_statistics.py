"""The report's statistics (rliable's stratified bootstrap, IQM, probability of improvement,
average ranks, Welch's test) on cases worked by hand, then their columns in a written report.
Hand-built trials, no Ray."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rliable import metrics as rly_metrics
from scipy import stats

from blip_ray.records.trials import TrialResult
from blip_ray.report import statistics, write_report
from blip_ray.report.results_table import BOOTSTRAP_PARTS, STAT_KEYS

REPS = 300  # enough for the properties below; a report's default is DEFAULT_REPS


def _column(values: list[float]) -> np.ndarray:
    """A supervised method's scores: one per seed, one game."""
    return np.array(values, dtype=float)[:, None]


def test_iqm_is_the_mean_of_the_middle_half() -> None:
    # 1..8: a quarter (two values) cut at each end leaves 3, 4, 5, 6: IQM 4.5, as the mean.
    eight = statistics.aggregate(_column([1, 2, 3, 4, 5, 6, 7, 8]), reps=REPS)
    assert eight.iqm.point == 4.5 and eight.mean.point == 4.5
    # One wild seed moves the mean to 16 but not the IQM.
    outlier = statistics.aggregate(_column([1, 2, 3, 4, 5, 6, 7, 100]), reps=REPS)
    assert outlier.mean.point == 16.0 and outlier.iqm.point == 4.5
    # RL: the middle half of all seed x game scores (2 seeds x 4 games: 3, 4, 5, 6 again).
    games = np.array([[1, 8, 2, 7], [3, 6, 4, 5]], dtype=float)
    assert statistics.aggregate(games, reps=REPS).iqm.point == 4.5


def test_iqm_and_the_profile_agree_with_rliables() -> None:
    from rliable import library as rly

    rng = np.random.default_rng(3)
    for shape in [(1, 1), (2, 1), (3, 1), (5, 1), (3, 4), (7, 3)]:
        scores = rng.random(shape)
        assert statistics.iqm(scores) == pytest.approx(rly_metrics.aggregate_iqm(scores))
        thresholds = np.linspace(0, 1, 11)
        expected = rly.score_distributions(scores, thresholds)
        assert statistics._share_above(scores, thresholds) == pytest.approx(expected)


def test_the_bootstrap_interval_holds_the_mean_and_narrows_with_more_seeds() -> None:
    four = [0.6, 0.7, 0.8, 0.9]
    few = statistics.aggregate(_column(four), reps=REPS)
    many = statistics.aggregate(_column(four * 4), reps=REPS)  # the same spread, 16 seeds
    for estimate in (few.mean, few.iqm, many.mean):
        assert estimate.low < estimate.point < estimate.high
    assert few.mean.point == pytest.approx(0.75) and many.mean.point == pytest.approx(0.75)
    assert many.mean.high - many.mean.low < 0.75 * (few.mean.high - few.mean.low)
    # Percentile bounds of resampled means lie within the observed values.
    assert few.mean.low >= 0.6 and few.mean.high <= 0.9


def test_identical_seeds_give_a_degenerate_interval_one_seed_none_and_nan_no_estimate() -> None:
    same = statistics.aggregate(_column([0.5, 0.5, 0.5]), reps=REPS)
    assert same.mean == statistics.Interval(0.5, 0.5, 0.5) and same.iqm.low == same.iqm.high
    alone = statistics.aggregate(_column([0.5]), reps=REPS)
    assert alone.mean.point == 0.5 and math.isnan(alone.mean.low) and math.isnan(alone.iqm.high)
    undefined = statistics.aggregate(_column([0.5, math.nan]), reps=REPS)
    assert math.isnan(undefined.mean.point) and math.isnan(undefined.iqm.point)
    assert math.isnan(statistics.aggregate(np.empty((3, 0)), reps=REPS).mean.point)


def test_the_bootstrap_is_reproducible_and_leaves_numpys_generator_as_it_was() -> None:
    scores = _column([0.1, 0.5, 0.2, 0.9, 0.4])
    np.random.seed(123)
    expected_draw = np.random.rand()
    np.random.seed(123)
    first = statistics.aggregate(scores, reps=REPS)
    assert np.random.rand() == expected_draw  # the caller's stream is untouched
    assert statistics.aggregate(scores, reps=REPS) == first
    assert statistics.aggregate(scores, reps=REPS, seed=1) != first


def test_probability_of_improvement_is_one_half_for_identical_and_one_for_disjoint_scores() -> None:
    low, high = _column([0.1, 0.2, 0.3]), _column([0.7, 0.8, 0.9])
    assert statistics.improvement(low, low, reps=REPS).point == 0.5
    above = statistics.improvement(high, low, reps=REPS)
    assert above == statistics.Interval(1.0, 1.0, 1.0)  # every resample stays disjoint
    assert statistics.improvement(low, high, reps=REPS) == statistics.Interval(0.0, 0.0, 0.0)
    # 2 x 2 pairs per game: 0.5 beats 0.4 and ties 0.5 (3/4 with the half); 0.6 wins both.
    x, y = np.array([[0.5, 0.6], [0.5, 0.6]]), np.array([[0.4, 0.1], [0.5, 0.2]])
    assert statistics.improvement(x, y, reps=REPS).point == pytest.approx((0.75 + 1.0) / 2)
    assert math.isnan(statistics.improvement(_column([0.5]), low, reps=REPS).low)
    assert math.isnan(statistics.improvement(_column([0.5, math.nan]), low, reps=REPS).point)


def test_probability_of_improvement_agrees_with_rliables() -> None:
    rng = np.random.default_rng(7)
    for _ in range(5):  # rounded, so ties occur
        x, y = rng.random((4, 3)).round(1), rng.random((5, 3)).round(1)
        expected = rly_metrics.probability_of_improvement(x, y)
        assert statistics.probability_of_improvement(x, y) == pytest.approx(expected)


def test_the_reverse_pair_is_the_complement_on_the_same_resamples() -> None:
    scores = {"a": _column([0.5, 0.6, 0.9]), "b": _column([0.4, 0.7, 0.55])}
    matrix = statistics.improvement_matrix(scores, reps=REPS)
    forward, reverse = matrix["a", "b"], matrix["b", "a"]
    assert forward.point == pytest.approx(6 / 9)  # a wins 6 of the 9 pairs
    assert reverse.point == pytest.approx(1 - forward.point)
    assert (reverse.low, reverse.high) == pytest.approx((1 - forward.high, 1 - forward.low))


def test_average_ranks_by_hand() -> None:
    # Seeds 0 and 1 shared (c's seed 2 does not count); ranks per seed (1 = best):
    # seed 0: a 0.9 -> 1, b 0.5 and c 0.5 tie -> 2.5 each; seed 1: c 0.8 -> 1, a 0.7 -> 2, b -> 3.
    scores = {
        "a": {0: [0.9], 1: [0.7]},
        "b": {0: [0.5], 1: [0.1]},
        "c": {0: [0.5], 1: [0.8], 2: [0.0]},
    }
    assert statistics.average_ranks(scores) == {"a": 1.5, "b": 2.75, "c": 1.75}
    # Lower is better (forgetting): the order turns round.
    assert statistics.average_ranks(scores, higher_is_better=False) == {
        "a": 2.5,
        "b": 1.25,
        "c": 2.25,
    }
    # RL: per seed x game cell; a game with a NaN is left out.
    games = {"a": {0: [0.9, 0.1, math.nan]}, "b": {0: [0.5, 0.2, 0.3]}}
    assert statistics.average_ranks(games) == {"a": 1.5, "b": 1.5}
    assert all(math.isnan(r) for r in statistics.average_ranks({"a": {0: [1.0]}}).values())
    no_shared = statistics.average_ranks({"a": {0: [1.0]}, "b": {1: [0.0]}})
    assert all(math.isnan(r) for r in no_shared.values())


def test_welch_p_is_scipys() -> None:
    x, y = [0.81, 0.85, 0.90, 0.84], [0.70, 0.78, 0.74]
    expected = stats.ttest_ind(x, y, equal_var=False).pvalue
    assert statistics.welch_p(x, y) == pytest.approx(expected)
    # By hand: means 0.85 and 0.74; var 0.0014 and 0.0016; t = 0.11 / sqrt(0.00035 + 0.000533).
    assert stats.ttest_ind(x, y, equal_var=False).statistic == pytest.approx(
        0.11 / math.sqrt(0.0014 / 4 + 0.0016 / 3)
    )
    assert math.isnan(statistics.welch_p([0.5], y))
    assert math.isnan(statistics.welch_p([0.5, 0.5], [0.5, 0.5]))  # no spread: no test
    assert math.isnan(statistics.welch_p([0.5, math.nan], y))


def test_performance_profile_counts_scores_above_each_threshold() -> None:
    scores = {"a": np.array([[0.2, 0.6], [0.4, 0.8]])}
    profiles, bands = statistics.performance_profile(scores, np.array([0.0, 0.5, 1.0]), reps=REPS)
    assert profiles["a"].tolist() == [1.0, 0.5, 0.0]
    assert np.asarray(bands["a"]).shape == (2, 3)


# Two tasks, ACC = mean of the last row: blip 0.8, 0.85, 0.9; ewc 0.6, 0.65, 0.7 (every ewc
# seed below every blip seed); joint, a reference, 0.95 with one seed.
LAST_ROWS = {
    "blip": [[0.8, 0.8], [0.8, 0.9], [0.9, 0.9]],
    "ewc": [[0.5, 0.7], [0.6, 0.7], [0.6, 0.8]],
    "joint": [[0.95, 0.95]],
}


def _trials() -> list[TrialResult]:
    return [
        TrialResult(
            trial_id=f"{method}_{seed}",
            method=method,
            seed=seed,
            hyperparameters={},
            status="ok",
            task_names=["t0", "t1"],
            matrix=[[0.9, 0.1], last],
            role="reference" if method == "joint" else "continual",
        )
        for method, rows in LAST_ROWS.items()
        for seed, last in enumerate(rows)
    ]


def _report(out: Path):
    return write_report(_trials(), out, title="Stats", reps=REPS)


def test_a_written_report_carries_the_statistics_in_every_rendering(tmp_path: Path) -> None:
    paths = _report(tmp_path / "a")
    frame = pd.read_csv(paths.table_csv).set_index("method")
    for key in STAT_KEYS:
        assert {f"{key}_{part}" for part in BOOTSTRAP_PARTS} <= set(frame.columns)
    assert {"acc_rank", "acc_welch_p_vs_blip"} <= set(frame.columns)
    blip, ewc, joint = (frame.loc[m] for m in ("blip", "ewc", "joint"))
    assert blip["acc_mean"] == pytest.approx(0.85)
    assert blip["acc_mean_low"] < blip["acc_mean"] < blip["acc_mean_high"]
    assert blip["acc_iqm"] == pytest.approx(0.85)  # three values: nothing cut
    # Ranks: blip first on every seed; the reference is neither ranked nor tested.
    assert (blip["acc_rank"], ewc["acc_rank"]) == (1.0, 2.0)
    assert math.isnan(joint["acc_rank"]) and math.isnan(joint["acc_welch_p_vs_blip"])
    expected = stats.ttest_ind([0.8, 0.85, 0.9], [0.6, 0.65, 0.7], equal_var=False).pvalue
    assert ewc["acc_welch_p_vs_blip"] == pytest.approx(expected)
    assert math.isnan(blip["acc_welch_p_vs_blip"])
    # One seed: the value, no bounds.
    assert joint["acc_iqm"] == pytest.approx(0.95) and math.isnan(joint["acc_iqm_low"])

    pairs = pd.read_csv(paths.improvement_csv)
    assert set(pairs["metric"]) == {"acc", "bwt"}
    assert set(zip(pairs["x"], pairs["y"], strict=True)) == {("blip", "ewc"), ("ewc", "blip")}
    acc = pairs[pairs["metric"] == "acc"].set_index("x")
    assert acc.loc["blip", ["probability", "low", "high"]].tolist() == [1.0, 1.0, 1.0]
    assert acc.loc["ewc", "probability"] == 0.0

    tex = paths.table_tex.read_text()
    assert "ACC IQM & BWT (1/T, official) & BWT IQM" in tex and "p vs BLIP (ACC)" in tex
    assert f"{ewc['acc_welch_p_vs_blip']:.2g}" in tex
    report = paths.report_md.read_text()
    assert "| ACC | ACC IQM |" in report and "## Statistics" in report
    assert f"stratified bootstrap over seeds, {REPS} reps, 95% percentile intervals" in report
    assert "Seeds per row: from 1 to 3." in report
    assert "| blip | — | 1.000 [1.000, 1.000] |" in report
    assert "joint" not in report[report.index("## Statistics") :].split("## Failed")[0]
    assert "profile.png" not in report  # supervised: no performance profile


def test_a_report_is_reproducible(tmp_path: Path) -> None:
    first, second = _report(tmp_path / "a"), _report(tmp_path / "b")
    assert first.table_csv.read_text() == second.table_csv.read_text()
    assert first.improvement_csv.read_text() == second.improvement_csv.read_text()
