"""The results table as table.csv and table.tex: the same numbers as report.md's markdown table,
booktabs rules, the best continual value per score in bold (by the metric's direction), LaTeX
special characters escaped. Hand-built trials, no Ray."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from blip_ray.metrics import METRICS
from blip_ray.records.trials import TrialResult
from blip_ray.report import write_report
from blip_ray.report.latex import latex_escape
from blip_ray.report.results_table import STAT_KEYS

T_975_1 = 12.706204736  # Student t quantile t_{0.975, 1}: two seeds

# Two tasks, so by hand: ACC = (R10 + R11)/2, BWT = (R10 - R00)/2, BWT (GEM) = R10 - R00,
# forgetting = R00 - R10, FWT = R01 - 0.5 (the untrained network's 0.5 on every task).
MATRICES = {
    ("my_method", 0): [[0.9, 0.6], [0.8, 0.8]],  # ACC 0.8, forgetting 0.1, FWT 0.1
    ("my_method", 1): [[0.9, 0.6], [0.9, 0.9]],  # ACC 0.9, forgetting 0.0, FWT 0.1
    ("sgd", 0): [[0.9, 0.4], [0.5, 0.9]],  # ACC 0.7, forgetting 0.4, FWT -0.1
    ("sgd", 1): [[0.9, 0.9], [0.7, 0.9]],  # ACC 0.8, forgetting 0.2, FWT 0.4
    ("joint", 0): [[0.95, 0.5], [0.95, 0.95]],  # a reference: best ACC, never bold
}


def _trial(method: str, seed: int) -> TrialResult:
    return TrialResult(
        trial_id=f"{method}_{seed}",
        method=method,
        seed=seed,
        hyperparameters={"lam_bda": 5} if method == "my_method" else {},
        status="ok",
        task_names=["t0", "t1"],
        matrix=MATRICES[(method, seed)],
        initial_row=[0.5, 0.5],
        capacity=[0.25, 0.5] if method == "my_method" else [None, None],
        capacity_label="weights owned" if method == "my_method" else None,
        state_bytes=[1024, 2048] if method == "my_method" else [0, 0],
        role="reference" if method == "joint" else "continual",
    )


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory):
    trials = [_trial(method, seed) for method, seed in MATRICES]
    return write_report(trials, tmp_path_factory.mktemp("paper"), title="Paper 50% & co")


def _cell(mean: float, half_width: float, n: int) -> str:
    """The markdown rendering of a Student-t score, rebuilt from table.csv's three columns."""
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.3f} (n=1)" if n == 1 else f"{mean:.3f} ± {half_width:.3f}"


def _interval(point: float, low: float, high: float) -> str:
    """The markdown rendering of a bootstrapped score, rebuilt from its table.csv columns."""
    if math.isnan(point):
        return "n/a"
    return f"{point:.3f} (n=1)" if math.isnan(low) else f"{point:.3f} [{low:.3f}, {high:.3f}]"


def _score_cells(row: pd.Series) -> list[str]:
    """The markdown's score cells of a table.csv row: a bootstrapped score and its IQM, or a
    Student-t score."""
    cells = []
    for metric in METRICS:
        key = metric.key
        if key in STAT_KEYS:
            cells.append(_interval(*(row[f"{key}_{p}"] for p in ("mean", "mean_low", "mean_high"))))
            cells.append(_interval(*(row[f"{key}_{p}"] for p in ("iqm", "iqm_low", "iqm_high"))))
        else:
            cells.append(_cell(*(row[f"{key}_{p}"] for p in ("mean", "ci95", "n"))))
    return cells


def test_table_csv_holds_the_markdown_tables_numbers(paths) -> None:
    frame = pd.read_csv(paths.table_csv)
    assert list(frame["method"]) == ["my_method", "sgd", "joint"]  # the markdown's order
    assert list(frame["role"]) == ["continual", "continual", "reference"]
    mine = frame.iloc[0]
    assert mine["hyperparameters"] == "lam_bda=5" and mine["seeds"] == 2
    # ACC 0.8 and 0.9: mean 0.85, half width t_{0.975,1} * s / sqrt(2) = 12.706 * 0.05; the
    # bootstrap's resampled means are 0.8, 0.85, 0.9 (chances 1/4, 1/2, 1/4): bounds 0.8 and 0.9.
    assert mine["acc_mean"] == pytest.approx(0.85) and mine["acc_n"] == 2
    assert mine["acc_ci95"] == pytest.approx(T_975_1 * 0.05)
    assert (mine["acc_mean_low"], mine["acc_mean_high"]) == pytest.approx((0.8, 0.9))
    assert (mine["acc_iqm"], mine["acc_iqm_low"], mine["acc_iqm_high"]) == pytest.approx(
        (0.85, 0.8, 0.9)
    )
    # Ranks per seed: my_method beats sgd on both (0.8 > 0.7, 0.9 > 0.8); joint is not ranked.
    assert list(frame["acc_rank"][:2]) == [1.0, 2.0] and math.isnan(frame.iloc[2]["acc_rank"])
    assert frame["acc_welch_p_vs_blip"].isna().all()  # no BLIP row to test against
    assert mine["forgetting_mean"] == pytest.approx(0.05)
    assert mine["capacity_mean"] == pytest.approx(0.5) and mine["capacity_label"] == "weights owned"
    assert (mine["state_bytes_first"], mine["state_bytes_last"]) == (1024, 2048)
    assert math.isnan(frame.iloc[2]["acc_ci95"]) and frame.iloc[2]["acc_n"] == 1
    assert math.isnan(frame.iloc[1]["capacity_mean"])

    report = paths.report_md.read_text()
    lines = [line for line in report.splitlines() if line.startswith("| ")][1:4]
    for line, (_, row) in zip(lines, frame.iterrows(), strict=True):
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        assert cells[0].split(" (")[0] == row["method"] and cells[1] == row["hyperparameters"]
        assert cells[2 : 2 + len(METRICS) + len(STAT_KEYS)] == _score_cells(row)
    assert "table.csv" in report and "table.tex" in report


def test_table_tex_has_booktabs_rules_and_the_best_continual_value_bold(paths) -> None:
    tex = paths.table_tex.read_text().splitlines()
    assert tex[0].startswith("% Paper 50\\% \\& co: ACC, BWT and forgetting: mean and IQM")
    assert tex[1] == "\\begin{tabular}{ll" + "r" * 13 + "}"
    assert (tex[2], tex[4], tex[-2], tex[-1]) == (
        "\\toprule",
        "\\midrule",
        "\\bottomrule",
        "\\end{tabular}",
    )
    assert tex[3] == (
        "Method & Hyperparameters & ACC & ACC IQM & BWT (1/T, official) & BWT IQM & "
        "BWT (1/(T-1), GEM) & Forgetting & Forgetting IQM & FWT & Capacity & State & "
        "Rank (ACC) & p vs BLIP (ACC) & Seeds \\\\"
    )
    mine, sgd, rule, joint = tex[5:9]
    # ACC, both BWTs and forgetting (lowest is best: 0.05 against 0.3) go to my_method;
    # FWT (0.1 against 0.15) to sgd. joint's ACC 0.95 is higher, but a reference does not compete.
    # Bootstrapped scores show [bounds] (two seeds: the two per-seed values), the IQM beside them.
    assert mine == (
        "my\\_method & lam\\_bda=5 & \\textbf{0.850 [0.800, 0.900]} & 0.850 [0.800, 0.900] & "
        "\\textbf{-0.025 [-0.050, 0.000]} & -0.025 [-0.050, 0.000] & "
        "\\textbf{-0.050 $\\pm$ 0.635} & \\textbf{0.050 [0.000, 0.100]} & 0.050 [0.000, 0.100] & "
        "0.100 $\\pm$ 0.000 & 0.500 $\\pm$ 0.000 (weights owned) & "
        "1.0 KiB $\\rightarrow$ 2.0 KiB & 1.00 & n/a & 2 \\\\"
    )
    assert sgd == (
        "sgd & defaults & 0.750 [0.700, 0.800] & 0.750 [0.700, 0.800] & "
        "-0.150 [-0.200, -0.100] & -0.150 [-0.200, -0.100] & -0.300 $\\pm$ 1.271 & "
        "0.300 [0.200, 0.400] & 0.300 [0.200, 0.400] & \\textbf{0.150 $\\pm$ 3.177} & n/a & "
        "0 B & 2.00 & n/a & 2 \\\\"
    )
    assert rule == "\\midrule"  # the references are set apart
    assert joint.startswith("joint (reference) & defaults & 0.950 (n=1) & ")
    assert "textbf" not in joint


def test_latex_special_characters_are_escaped() -> None:
    text = latex_escape("a_b 50% & #1 $x {y} ~z ^w \\v")
    assert text == (
        "a\\_b 50\\% \\& \\#1 \\$x \\{y\\} \\textasciitilde{}z \\textasciicircum{}w "
        "\\textbackslash{}v"
    )


def test_no_ok_trial_writes_an_empty_table_not_a_broken_one(tmp_path: Path) -> None:
    failed = TrialResult("f", "sgd", 0, {}, status="failed", error="boom", task_names=["t0"])
    paths = write_report([failed], tmp_path, title="none")
    assert "begin{tabular}" not in paths.table_tex.read_text()
    frame = pd.read_csv(paths.table_csv)
    assert len(frame) == 0 and {"acc_mean", "acc_ci95", "acc_n", "acc_iqm"} <= set(frame.columns)
    assert "No trials with status ok" in paths.report_md.read_text()
