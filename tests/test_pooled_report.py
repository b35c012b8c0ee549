"""``blip-ray report DIR DIR --out OUT`` pools experiments of one benchmark and settings, and
``blip-ray compare DIR DIR`` shows several side by side; experiment directories are written by
hand (spec record, params.json, result.json rows), so no Ray."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from blip_ray.cli import main
from blip_ray.records.layout import RUN_RECORD, SPEC_RECORD
from blip_ray.records.rows import TaskRow

T_975_2 = 4.302652730  # Student t quantile t_{0.975, 2}: three seeds
# Two tasks: ACC = mean of the last row.
ACC_07, ACC_08 = [[0.9, 0.1], [0.5, 0.9]], [[0.9, 0.1], [0.7, 0.9]]
ACC_09 = [[0.9, 0.1], [0.9, 0.9]]
RL = {"steps_per_task": 64, "eval_episodes": 2, "eval_policy": "sampled", "reference_returns": {}}


def _spec(**overrides: Any) -> dict[str, Any]:
    """A spec record as ``blip-ray run`` saves it (the keys that decide results)."""
    spec = {
        "name": "pd",
        "benchmark": "pdigits",
        "network": "mlp",
        "width": 1.0,
        "fc_width": None,
        "tasks": 2,
        "methods": {"finetune": {}},
        "seeds": [0],
        "samples": 1,
        "train": {"lr": 0.1, "batch_size": 64, "epochs": 40},
        "train_search": {},
        "download": True,
        "inject_failure": None,
        "rl": None,
        "references": False,
    }
    return {**spec, **overrides}


def _experiment(path: Path, trials: list[tuple[str, int, list[list[float]]]], **spec: Any) -> Path:
    """An experiment directory with one finished trial per (method, seed, matrix)."""
    path.mkdir(parents=True)
    record = _spec(**spec)
    (path / SPEC_RECORD).write_text(json.dumps(record))
    (path / RUN_RECORD).write_text(json.dumps({"title": path.name, "wall_s": 60.0, "planned": 2}))
    rl = record["rl"]
    names = ["cartpole-0", "cartpole-1"] if rl else ["pdigits-0", "pdigits-1"]
    for method, seed, matrix in trials:
        trial_dir = path / f"{method}_{seed}"
        trial_dir.mkdir()
        run = {"benchmark": record["benchmark"], "train_searched": [], "rl": rl}
        params = {"run": run, "method": {"name": method, "hp": {}, "seed": seed}}
        (trial_dir / "params.json").write_text(json.dumps(params))
        rows = [
            TaskRow(
                task=t,
                task_name=names[t],
                num_tasks=2,
                task_names=names,
                metric="return" if rl else "accuracy",
                row=matrix[t],
                matrix=matrix[: t + 1],
                initial_row=None if rl else [0.1, 0.1],
                capacity=None,
                state_bytes=0,
                random_row=[10.0, 20.0] if rl else None,
            ).to_result()
            for t in range(2)
        ]
        lines = [json.dumps({**row, "trial_id": trial_dir.name}) for row in rows]
        (trial_dir / "result.json").write_text("\n".join(lines) + "\n")
    return path


def _table_line(text: str, method: str) -> str:
    (line,) = [line for line in text.splitlines() if line.startswith(f"| {method} |")]
    return line


def test_pooling_two_experiments_reports_the_union_with_ci_over_the_pooled_seeds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = _experiment(tmp_path / "a", [("finetune", 0, ACC_07), ("finetune", 1, ACC_08)])
    b = _experiment(
        tmp_path / "b",
        [("finetune", 2, ACC_09), ("ewc", 0, ACC_08)],
        methods={"finetune": {}, "ewc": {}},  # methods and seeds may differ: that is the point
        seeds=[2],
        download=False,
    )
    out = tmp_path / "pooled"
    assert main(["report", str(a), str(b), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    # ACC 0.7, 0.8, 0.9: mean 0.8; a resample of three seeds averages 0.7 (or 0.9) with chance
    # 1/27 > 2.5%, so those are the bootstrap bounds. The pooled seeds are one sample.
    assert "| 0.800 [0.700, 0.900] | 0.800 [0.700, 0.900] |" in _table_line(printed, "finetune")
    assert _table_line(printed, "finetune").endswith("| 3 |")
    assert "| 0.800 (n=1) |" in _table_line(printed, "ewc")
    summary = pd.read_csv(out / "summary.csv")
    assert sorted(zip(summary["method"], summary["seed"], strict=True)) == [
        ("ewc", 0),
        ("finetune", 0),
        ("finetune", 1),
        ("finetune", 2),
    ]
    table = pd.read_csv(out / "table.csv").set_index("method")
    assert table.loc["finetune", "acc_mean"] == pytest.approx(0.8)
    assert table.loc["finetune", "acc_ci95"] == pytest.approx(T_975_2 * 0.1 / 3**0.5)
    assert table.loc["finetune", "acc_n"] == 3
    # s = 0.1: the Student t half width t_{0.975,2} * 0.1 / sqrt(3) stays in table.csv
    assert table.loc["finetune", "acc_ci95"] == pytest.approx(T_975_2 * 0.1 / 3**0.5)
    bounds = table.loc["finetune", ["acc_mean_low", "acc_mean_high"]].tolist()
    assert bounds == pytest.approx([0.7, 0.9])
    # Ranked on seed 0, the one both hold: ewc 0.8 beats finetune 0.7.
    assert table["acc_rank"].to_dict() == {"ewc": 1.0, "finetune": 2.0}
    # P(finetune > ewc): 0.9 wins, 0.8 ties, 0.7 loses against ewc's 0.8: 1.5 / 3; one ewc seed,
    # no interval.
    pairs = pd.read_csv(out / "improvement.csv").set_index(["metric", "x", "y"])
    assert pairs.loc[("acc", "finetune", "ewc"), "probability"] == pytest.approx(0.5)
    assert math.isnan(pairs.loc[("acc", "finetune", "ewc"), "low"])
    report = (out / "report.md").read_text()
    assert "## Statistics" in report and "Seeds per row: from 1 to 3." in report
    assert report.startswith("# pooled (pdigits, 2 experiments pooled)")
    assert "Pooled from 2 experiments: a, b." in report
    assert "Wall time summed over the experiments: 2m 00s" in report
    assert (out / "table.tex").is_file()
    assert not (a / "report.md").exists() and not (b / "report.md").exists()


def test_one_experiment_with_out_writes_there_and_alone_rewrites_in_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = _experiment(tmp_path / "a", [("finetune", 0, ACC_07)])
    assert main(["report", str(a), "--out", str(tmp_path / "elsewhere")]) == 0
    assert (tmp_path / "elsewhere" / "report.md").is_file() and not (a / "report.md").exists()
    assert main(["report", str(a)]) == 0
    assert (a / "report.md").read_text().startswith("# a\n")
    assert {"table.csv", "table.tex"} <= {p.name for p in a.iterdir()}


@pytest.mark.parametrize(
    ("spec", "first", "second"),
    [
        ({"benchmark": "digits5"}, 'benchmark="pdigits"', 'benchmark="digits5"'),
        ({"train": {"lr": 0.05, "batch_size": 64, "epochs": 40}}, "train.lr=0.1", "train.lr=0.05"),
        ({"tasks": 3}, "tasks=2", "tasks=3"),
    ],
)
def test_pooling_refuses_other_settings_naming_the_key_and_both_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], spec: dict, first: str, second: str
) -> None:
    a = _experiment(tmp_path / "a", [("finetune", 0, ACC_07)])
    b = _experiment(tmp_path / "b", [("finetune", 1, ACC_08)], **spec)
    assert main(["report", str(a), str(b), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("blip-ray: error: cannot pool: ")
    assert f"{a} has {first}, {b} has {second};" in err
    assert not (tmp_path / "out").exists()


def test_pooling_refuses_a_seed_finished_in_two_experiments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = _experiment(tmp_path / "a", [("finetune", 0, ACC_07), ("finetune", 1, ACC_08)])
    b = _experiment(tmp_path / "b", [("finetune", 1, ACC_09)])
    assert main(["report", str(a), str(b), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"finetune (defaults) seed 1 finished in both {a} and {b}; a seed counts once" in err


def test_pooling_needs_out_and_refuses_a_references_experiment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = _experiment(tmp_path / "a", [("finetune", 0, ACC_07)])
    b = _experiment(tmp_path / "b", [("finetune", 1, ACC_08)])
    assert main(["report", str(a), str(b)]) == 2
    assert "pooling 2 experiments needs --out DIR" in capsys.readouterr().err
    assert main(["report", str(a), str(b), "--out", str(a)]) == 2
    assert f"--out: {a} is one of the pooled experiments" in capsys.readouterr().err
    refs = _experiment(tmp_path / "refs", [("finetune", 2, ACC_09)], references=True)
    assert main(["report", str(a), str(refs), "--out", str(tmp_path / "out")]) == 2
    assert f"cannot pool {refs}: it is a references experiment" in capsys.readouterr().err


def test_pooled_rl_returns_share_one_scale_from_the_reference_returns_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Random policy 10 and 20 (the zero); reference returns 110 and 220 (the one).
    a = _experiment(tmp_path / "a", [("finetune", 0, [[60, 20], [35, 120]])], rl=RL)
    theirs = {**RL, "reference_returns": {"cartpole-0": 50.0}}  # not a setting: no refusal
    b = _experiment(tmp_path / "b", [("finetune", 1, [[110, 20], [85, 220]])], rl=theirs)
    out = tmp_path / "out"
    refs = tmp_path / "refs.yaml"
    refs.write_text("cartpole-0: 110\ncartpole-1: 220\n")
    flags = ["--out", str(out), "--reference-returns", str(refs)]
    assert main(["report", str(a), str(b), *flags]) == 0
    # Normalized last rows: a (0.25, 0.5) -> ACC 0.375; b (0.75, 1.0) -> ACC 0.875. The bootstrap
    # resamples each game's two seeds apart: the lowest resample (0.25, 0.5) has chance 1/16 >
    # 2.5%, so the bounds are 0.375 and 0.875; the IQM of 0.25, 0.5, 0.75, 1.0 is 0.625.
    line = _table_line(capsys.readouterr().out, "finetune")
    assert "| 0.625 [0.375, 0.875] | 0.625 [0.375, 0.875] |" in line
    report = (out / "report.md").read_text()
    assert (
        "over seeds (each of the 2 games a stratum" in report and "![Performance profiles" in report
    )
    assert (out / "profile.png").read_bytes()[:4] == b"\x89PNG"
    scale = "| cartpole-1 | 20 | random policy | 220 | reference |"
    assert scale in (out / "report.md").read_text()
    c = _experiment(tmp_path / "c", [("finetune", 2, [[60, 20], [35, 120]])], rl=RL)
    for trial in c.glob("*/params.json"):  # the trials carry their spec's reference returns
        params = json.loads(trial.read_text())
        params["run"]["rl"]["reference_returns"] = {"cartpole-1": 300.0}
        trial.write_text(json.dumps(params))
    assert main(["report", str(b), str(c), "--out", str(tmp_path / "o2")]) == 2
    assert "have different rl.reference_returns; pass --reference-returns" in (
        capsys.readouterr().err
    )


def test_compare_prints_both_runs_rows_and_notes_the_differing_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = _experiment(tmp_path / "a", [("finetune", 0, ACC_07), ("finetune", 1, ACC_08)])
    train = {"lr": 0.05, "batch_size": 64, "epochs": 40}
    b = _experiment(tmp_path / "b", [("finetune", 0, ACC_09)], train=train, tasks=3, seeds=[5])
    files = {p for p in tmp_path.rglob("*")}
    assert main(["compare", str(a), str(b)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "note: the runs differ in tasks: 2 | 3; train.lr: 0.1 | 0.05"
    assert lines[1].startswith("| Run | Method | Hyperparameters | ACC |")
    assert lines[3].startswith("| a | finetune | defaults | 0.750 [0.700, 0.800] |")
    assert lines[4].startswith("| b | finetune | defaults | 0.900 (n=1) |")
    assert len(lines) == 5
    assert {p for p in tmp_path.rglob("*")} == files  # compare writes nothing
    assert main(["compare", str(a)]) == 2
    assert "compare: give two or more experiment directories" in capsys.readouterr().err
