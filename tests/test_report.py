"""Report on hand-built trials: CSV values equal metrics.py's, the table's CI is worked by hand."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from blip_ray.metrics import METRIC_NAMES, summary
from blip_ray.records.trials import TrialResult, normalize_rl_returns
from blip_ray.report import ReportPaths, markdown_table, write_report

TASKS = ["t0", "t1", "t2"]
BASE = [0.5, 0.5, 0.5]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Last rows chosen so ACC per seed is exact: blip 0.8 and 0.9, sgd 0.5 and 0.6, blip (other F_prior)
# 0.7 with one seed.
MATRICES = {
    ("blip", 0): [[0.9, 0.6, 0.5], [0.85, 0.9, 0.55], [0.8, 0.8, 0.8]],
    ("blip", 1): [[0.95, 0.5, 0.4], [0.9, 0.95, 0.6], [0.9, 0.9, 0.9]],
    ("sgd", 0): [[0.9, 0.5, 0.5], [0.4, 0.95, 0.5], [0.3, 0.3, 0.9]],
    ("sgd", 1): [[0.95, 0.4, 0.5], [0.5, 0.9, 0.6], [0.4, 0.5, 0.9]],
    ("blip_small", 0): [[0.9, 0.5, 0.5], [0.8, 0.9, 0.5], [0.6, 0.6, 0.9]],
}
BLIP_HP = {"F_prior": 1e-15, "max_bit": 20}


def _trial(key: str, seed: int, **overrides: object) -> TrialResult:
    """A finished 3-task trial of MATRICES[(key, seed)]; ``overrides`` replace any field."""
    blip = key.startswith("blip")
    hyperparameters = {"lr": 0.01}
    if blip:
        hyperparameters = {**BLIP_HP, "F_prior": 5e-16} if key == "blip_small" else BLIP_HP
    fields: dict = {
        "trial_id": f"{key}_{seed}",
        "method": "blip" if blip else key,
        "seed": seed,
        "hyperparameters": hyperparameters,
        "status": "ok",
        "task_names": TASKS,
        "matrix": MATRICES.get((key, seed), []),
        "initial_row": BASE,
        "capacity": [0.1, 0.2, 0.3 + 0.1 * seed] if blip else [None, None, None],
        "state_bytes": [1000, 2000, 3000] if blip else [0, 0, 0],
    }
    fields.update(overrides)
    return TrialResult(**fields)


def _failed() -> TrialResult:
    return _trial(
        "sgd",
        2,
        trial_id="sgd_2",
        status="failed",
        error="RuntimeError: CUDA out of memory",
        matrix=[[0.7, 0.4, 0.3]],
        capacity=[None],
        state_bytes=[0],
    )


@pytest.fixture(scope="module")
def trials() -> list[TrialResult]:
    keys = [("blip", 0), ("blip", 1), ("sgd", 0), ("sgd", 1), ("blip_small", 0)]
    return [_trial(method, seed) for method, seed in keys] + [_failed()]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory, trials: list[TrialResult]) -> ReportPaths:
    """Written once: plotting dominates the run time and the tests only read the files."""
    out_dir = tmp_path_factory.mktemp("report") / "out"  # not existing yet: write_report makes it
    return write_report(trials, out_dir, title="Digits test", wall_s=120.0)


def test_summary_csv_matches_metrics(report, trials: list[TrialResult]) -> None:
    frame = pd.read_csv(report.summary_csv).set_index("trial_id")
    assert list(frame.index) == [trial.trial_id for trial in trials]
    assert {"F_prior", "max_bit", "lr"} <= set(frame.columns)
    for trial in trials:
        expected = summary(trial.matrix, trial.initial_row)
        for name in METRIC_NAMES:
            assert frame.loc[trial.trial_id, name] == pytest.approx(expected[name], nan_ok=True)
        assert frame.loc[trial.trial_id, "tasks_done"] == len(trial.matrix)
    assert frame.loc["blip_1", "capacity"] == pytest.approx(0.4)
    assert frame.loc["blip_1", "state_bytes"] == 3000
    assert math.isnan(frame.loc["sgd_0", "capacity"])
    assert math.isnan(frame.loc["sgd_0", "F_prior"]) and frame.loc["sgd_0", "lr"] == 0.01
    assert "blip_0,blip,0,1e-15,,20," in report.summary_csv.read_text()  # max_bit not "20.0"
    failed = frame.loc["sgd_2"]
    assert failed["status"] == "failed" and failed["error"] == "RuntimeError: CUDA out of memory"
    assert failed["acc"] == pytest.approx(0.7) and failed["bwt"] == 0.0
    assert math.isnan(failed["forgetting"]) and math.isnan(failed["fwt"])


def test_matrices_csv_long_form(report, trials: list[TrialResult]) -> None:
    frame = pd.read_csv(report.matrices_csv)
    assert list(frame.columns) == [
        *("trial_id", "method", "seed", "trained_task", "eval_task", "task_name", "value"),
        *("raw_value", "valid_value"),
    ]
    assert frame["raw_value"].isna().all()  # accuracies have no raw score
    assert len(frame) == 5 * 9 + 3  # five finished 3x3 runs, one failed run with one row
    row = frame.query("trial_id == 'sgd_0' and trained_task == 1 and eval_task == 0")
    assert row["value"].item() == pytest.approx(0.4) and row["task_name"].item() == "t0"
    assert frame.query("trial_id == 'sgd_2'")["trained_task"].unique().tolist() == [0]


def test_report_md_table_sorted_with_ci(report) -> None:
    text = report.report_md.read_text()
    assert text.startswith("# Digits test")
    assert "accuracy (fraction)" in text
    assert "BWT (1/T, official)" in text and "BWT (1/(T-1), GEM)" in text
    # ACC 0.8 and 0.9: mean 0.85; resampling two seeds gives means 0.8, 0.85 and 0.9 with
    # chances 1/4, 1/2 and 1/4, so the 2.5% and 97.5% percentiles are 0.8 and 0.9 (IQM: the same,
    # nothing cut from two values).
    assert "| 0.850 [0.800, 0.900] | 0.850 [0.800, 0.900] |" in text
    # BWT (GEM) keeps the Student t half width t_{0.975,1} * 0.0707107 / sqrt(2) = 0.6353 * 0.5.
    assert "| -0.075 ± 0.318 |" in text
    assert "0.700 (n=1)" in text and "nan" not in text
    best, single = (text.index(f"| blip | F_prior={fp}") for fp in ("1e-15", "5e-16"))
    assert best < single < text.index("| sgd | lr=0.01")  # mean ACC 0.85, 0.7, 0.55
    assert "| 0.550 [0.500, 0.600] |" in text
    # Ranks on the one seed all three share (seed 0: ACC 0.8, 0.7, 0.5); Welch against blip.
    sgd = next(line for line in text.splitlines() if line.startswith("| sgd |"))
    assert sgd.endswith("| 3.00 | 0.051 | 2 |")  # t = 0.3 / sqrt(0.005 / 2 * 2) = 4.24, 2 df
    assert "Only trials with status ok count" in text
    assert "Trials: 5 ok, 1 failed, 0 incomplete (6 in all)." in text


def test_report_md_failed_wall_time_and_plots(report) -> None:
    text = report.report_md.read_text()
    failed = text[text.index("## Failed trials") : text.index("## Plots")]
    assert "sgd, seed 2, lr=0.01" in failed and "CUDA out of memory" in failed
    assert "3.00 trials per minute" in text  # 6 trials in 120 s
    for path in report.plots:
        assert f"]({path.name})" in text


def test_pngs_are_valid(report) -> None:
    names = {path.name for path in report.plots}
    assert {"matrix_sgd.png", "tasks_sgd.png", "capacity.png"} <= names
    assert "matrix_blip__F_prior-1e-15_max_bit-20.png" in names
    assert len(names) == 2 * 3 + 1  # matrix and tasks per (method, setting), one capacity plot
    for path in report.plots:
        data = path.read_bytes()
        assert data[:8] == PNG_SIGNATURE and len(data) > 1000


def test_no_capacity_plot_and_no_rate_without_them(tmp_path: Path) -> None:
    paths = write_report([_trial("sgd", 0), _failed()], tmp_path, title="t")
    assert not (tmp_path / "capacity.png").exists()
    text = paths.report_md.read_text()
    assert "per minute" not in text and "Wall time" not in text
    assert "0.500 (n=1)" in text  # (0.3 + 0.3 + 0.9) / 3, one seed


def test_hyperparameter_collision_is_prefixed(tmp_path: Path) -> None:
    trial = _trial("sgd", 0, hyperparameters={"acc": 3, "status": "x", "lr": [1, 2]})
    paths = write_report([trial], tmp_path, title="t")
    frame = pd.read_csv(paths.summary_csv)
    assert {"hp_acc", "hp_status", "lr"} <= set(frame.columns)
    assert frame.loc[0, "hp_acc"] == 3 and frame.loc[0, "acc"] == pytest.approx(0.5)
    assert frame.loc[0, "lr"] == "[1, 2]"


def test_a_reference_is_labelled_and_listed_last_and_growing_state_shows_its_growth() -> None:
    joint = [  # best ACC of all, yet after every continual method
        _trial(
            "joint",
            seed,
            matrix=[[0.9, 0.5, 0.5], [0.9, 0.9, 0.5], [0.95, 0.95, 0.95]],
            role="reference",
            state_bytes=[1024, 2048, 3072],
        )
        for seed in (0, 1)
    ]
    lines = markdown_table([*joint, _trial("sgd", 0), _trial("blip", 0)]).splitlines()
    assert [line.split(" | ")[0] for line in lines[2:]] == [
        "| blip",
        "| sgd",
        "| joint (reference)",
    ]
    assert "| 1.0 KiB → 3.0 KiB |" in lines[-1]  # grows with the tasks
    assert "| 0 B |" in lines[3]  # constant: one number


def test_capacity_of_bits_units_and_weights_is_labelled_in_the_table_and_one_plot(
    tmp_path: Path,
) -> None:
    matrix = MATRICES[("sgd", 0)]
    trials = [
        _trial("blip", 0),  # recorded before methods named their capacity: BLIP's bits
        _trial("hat", 0, capacity=[0.2, 0.3, 0.5], capacity_label="units used", matrix=matrix),
        _trial(
            "packnet", 0, capacity=[1 / 3, 2 / 3, 1], capacity_label="weights owned", matrix=matrix
        ),
    ]
    table = markdown_table(trials)
    assert "| 0.300 (n=1) (bits frozen) |" in table
    assert "| 0.500 (n=1) (units used) |" in table and "| 1.000 (n=1) (weights owned) |" in table
    paths = write_report(trials, tmp_path / "out", title="capacity")
    text = paths.report_md.read_text()
    assert (
        "Capacity used per task (blip: bits frozen; hat: units used; packnet: weights owned)"
        in text
    )
    assert (tmp_path / "out" / "capacity.png").read_bytes().startswith(PNG_SIGNATURE)


def test_the_capacity_plot_has_a_title_with_its_seeds(trials: list[TrialResult]) -> None:
    from blip_ray.report.plots import _plot_capacity
    from blip_ray.report.tables import ok_groups

    blip = [group for group in ok_groups(trials) if group.method == "blip"]
    title = _plot_capacity(blip).axes[0].get_title()
    assert title == "Network capacity used after each task, mean of 1 or 2 seeds"
    alone = _plot_capacity([group for group in blip if len(group.trials) == 1])
    assert alone.axes[0].get_title().endswith("mean of 1 seed")


def test_markdown_table_without_ok_trials() -> None:
    assert "No trials with status ok" in markdown_table([_failed()])


def test_long_normalized_return_run(tmp_path: Path) -> None:
    """14 tasks (heat map without annotations), RL values, no FWT baseline: FWT reads n/a."""
    tasks = 14
    matrix = [[0.5 + 0.03 * (t - u) if u <= t else 0.1 for u in range(tasks)] for t in range(tasks)]
    trial = _trial(
        "ppo",
        0,
        method="ppo",
        matrix=matrix,
        task_names=[f"game{u}" for u in range(tasks)],
        initial_row=None,
        metric="normalized_return",
    )
    paths = write_report([trial], tmp_path, title="Atari", wall_s=0.0)
    text = paths.report_md.read_text()
    assert "Values: normalized return." in text and "per minute" not in text
    row = next(line for line in text.splitlines() if line.startswith("| ppo |"))
    assert row.split(" | ")[9] == "n/a"  # the FWT column
    assert [p.name for p in paths.plots] == ["matrix_ppo.png", "tasks_ppo.png", "profile.png"]
    assert all(p.read_bytes()[:8] == PNG_SIGNATURE for p in paths.plots)


def _rl_trial(seed: int, matrix: list[list[float]], random_row: list[float]) -> TrialResult:
    return TrialResult(
        trial_id=f"rl_{seed}",
        method="blip",
        seed=seed,
        hyperparameters={},
        status="ok",
        task_names=["Pong", "Boxing"],
        matrix=matrix,
        initial_row=[0.0, 0.0],
        metric="return",
        random_row=random_row,
        reference={"Boxing": 50.0},
        budget={"steps_per_task": 30000, "eval_episodes": 3, "eval_max_steps": 2000},
    )


def test_rl_returns_normalize_between_random_and_reference_or_best(tmp_path: Path) -> None:
    trials = [
        _rl_trial(0, [[10.0, 2.0], [6.0, 30.0]], random_row=[-2.0, 1.0]),
        _rl_trial(1, [[18.0, 4.0], [12.0, 40.0]], random_row=[-6.0, 3.0]),
    ]
    normalize_rl_returns(trials)
    # Pong: random -4 (mean), top 18 (best observed); Boxing: random 2, top 50 (the reference).
    assert np.allclose(trials[0].matrix, [[14 / 22, 0 / 48], [10 / 22, 28 / 48]])
    assert np.allclose(trials[1].matrix, [[1.0, 2 / 48], [16 / 22, 38 / 48]])
    assert trials[0].raw_matrix == [[10.0, 2.0], [6.0, 30.0]]
    assert trials[0].initial_row == pytest.approx([4 / 22, -2 / 48])
    assert [s["source"] for s in trials[0].normalization] == ["best observed", "reference"]
    text = write_report(trials, tmp_path, title="rl").report_md.read_text()
    budget = text.split("## Budget")[1].split("##")[0]
    assert "30,000 env steps per task" in budget and "capped at 2,000 agent steps" in budget
    assert "3 deterministic (greedy) episodes per task" in budget  # a record without eval_policy
    table = text.split("## Normalization")[1].split("##")[0]
    assert "| Pong | -4 | random policy | 18 | best observed |" in table
    assert "| Boxing | 2 | random policy | 50 | reference |" in table
    assert "No usable scale" not in text
    raw = text.split("## Raw returns")[1].split("##")[0]
    assert "| blip | just trained | 14 | 35 |" in raw  # diagonal means: (10+18)/2, (30+40)/2
    assert "| blip | after the last | 9 | 35 |" in raw


def test_a_reference_below_the_random_policy_leaves_that_game_unscaled(tmp_path: Path) -> None:
    trial = _rl_trial(0, [[10.0, 2.0], [6.0, 30.0]], random_row=[-2.0, 60.0])
    normalize_rl_returns([trial])
    assert trial.matrix[1][0] == pytest.approx(8 / 12)
    assert all(math.isnan(row[1]) for row in trial.matrix)
    text = write_report([trial], tmp_path, title="rl").report_md.read_text()
    assert "No usable scale for Boxing: one is not above zero" in text
    frame = pd.read_csv(tmp_path / "matrices.csv")
    assert frame["raw_value"].tolist() == [10.0, 2.0, 6.0, 30.0]


def test_missing_random_returns_fall_back_to_the_untrained_policy_and_references_override() -> None:
    nan = float("nan")
    trials = [
        _rl_trial(0, [[10.0, 2.0], [6.0, 30.0]], random_row=[nan, 1.0]),
        _rl_trial(1, [[18.0, 4.0], [12.0, 40.0]], random_row=[nan, 3.0]),
    ]
    for t in trials:
        t.initial_row = [-4.0, 0.0]
    normalize_rl_returns(trials, {"Pong": 26.0})  # replaces the spec's {Boxing: 50}
    scale = trials[0].normalization
    assert [(s["low"], s["low_source"]) for s in scale] == [
        (-4, "untrained policy"),
        (2, "random policy"),
    ]
    assert [(s["high"], s["source"]) for s in scale] == [(26, "reference"), (40, "best observed")]
    assert np.allclose(trials[1].matrix[0], [22 / 30, 2 / 38])
    with pytest.raises(ValueError, match="unknown task 'Pongg'; this experiment's tasks are Pong"):
        normalize_rl_returns([_rl_trial(0, [[1.0, 1.0]], [0.0, 0.0])], {"Pongg": 1.0})


def test_an_interrupted_run_counts_the_trials_it_never_started(tmp_path: Path) -> None:
    trials = [_trial("sgd", 0), _trial("sgd", 1, status="incomplete", matrix=[[0.9, 0.5, 0.5]])]
    text = write_report(trials, tmp_path, title="t", planned=5).report_md.read_text()
    assert "Trials: 1 ok, 0 failed, 1 incomplete, 3 not started (5 planned)." in text


def test_rl_budget_names_a_sampled_evaluation_policy(tmp_path: Path) -> None:
    trial = _rl_trial(0, [[10.0, 2.0], [6.0, 30.0]], random_row=[-2.0, 1.0])
    trial.budget = {**trial.budget, "eval_policy": "sampled"}
    normalize_rl_returns([trial])
    text = write_report([trial], tmp_path, title="rl").report_md.read_text()
    assert "evaluation: 3 sampled-policy episodes per task" in text.split("## Budget")[1]


def test_learning_curves_draw_each_seed_thin_and_their_mean_thick() -> None:
    from blip_ray.report.plots import _plot_curves
    from blip_ray.report.tables import ok_groups

    def curve(values: list[tuple[float, float]], offset: int = 0) -> list[dict]:
        return [
            {"env_steps": 100 * (i + 1) + offset, "returns": list(v)} for i, v in enumerate(values)
        ]

    seeds = [
        curve([(1.0, 0.0), (3.0, 0.0), (5.0, 2.0)]),
        # one evaluation more, each a few env steps later (RLlib's counts differ between seeds)
        curve([(2.0, 0.0), (5.0, 0.0), (9.0, 4.0), (9.5, 4.5)], offset=8),
    ]
    trials = [
        _trial("sgd", seed, curve=points, matrix=MATRICES[("sgd", seed)][:2], task_names=TASKS)
        for seed, points in enumerate(seeds)
    ]
    (group,) = ok_groups(trials)
    axes = _plot_curves(group).axes[0]
    thick = {line.get_label(): line for line in axes.get_lines() if line.get_linewidth() == 2}
    assert sorted(thick) == ["t0 (mean of 2 seeds)", "t1 (mean of 2 seeds)"]
    np.testing.assert_allclose(thick["t0 (mean of 2 seeds)"].get_xdata(), [104, 204, 304])
    np.testing.assert_allclose(thick["t0 (mean of 2 seeds)"].get_ydata(), [1.5, 4.0, 7.0])
    np.testing.assert_allclose(thick["t1 (mean of 2 seeds)"].get_ydata(), [0.0, 0.0, 3.0])
    thin = [line for line in axes.get_lines() if line.get_linewidth() < 1 and len(line.get_xdata())]
    assert len(thin) == 4 and all(line.get_alpha() == 0.6 for line in thin)
    # each seed its own line style, the same in every game, named in the legend
    styles = [line.get_linestyle() for line in thin]
    assert styles[0] == styles[2] != styles[1] == styles[3]
    legend = [text.get_text() for text in axes.get_legend().get_texts()]
    assert legend[-2:] == ["seed 0", "seed 1"]


def test_validation_scores_are_reported_beside_the_test_scores(tmp_path) -> None:
    valid = [[0.9, 0.5], [0.6, 0.8]]  # differs from the test matrix: its own metrics
    two = {"task_names": ["t0", "t1"], "capacity": [0.1, 0.2], "state_bytes": [1, 2]}
    trial = _trial("blip", 0, matrix=[[0.8, 0.4], [0.7, 0.9]], initial_row=[0.5, 0.5], **two)
    trial.valid_matrix, trial.initial_valid_row = valid, [0.5, 0.5]
    legacy = _trial("sgd", 0, matrix=[[0.6, 0.5], [0.5, 0.7]], initial_row=[0.5, 0.5], **two)
    report = write_report([trial, legacy], tmp_path, title="t")
    summary_csv = pd.read_csv(report.summary_csv).set_index("trial_id")
    expected = summary(valid, [0.5, 0.5])
    for name in METRIC_NAMES:
        assert summary_csv.loc[trial.trial_id, f"valid_{name}"] == pytest.approx(expected[name])
        assert math.isnan(summary_csv.loc[legacy.trial_id, f"valid_{name}"])
    assert summary_csv.loc[trial.trial_id, "acc"] == pytest.approx(0.8)
    assert summary_csv.loc[trial.trial_id, "valid_acc"] == pytest.approx(0.7)
    matrices = pd.read_csv(report.matrices_csv)
    mine = matrices.query(f"trial_id == '{trial.trial_id}'")
    mine = mine.sort_values(["trained_task", "eval_task"])
    assert mine["valid_value"].tolist() == [0.9, 0.5, 0.6, 0.8]
    assert mine["value"].tolist() == [0.8, 0.4, 0.7, 0.9]
