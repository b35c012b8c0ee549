"""The Python API: a continual run in this process equals a trial of ``blip-ray run``; an
experiment opens as DataFrames; a trial's network loads from its checkpoint; no Ray imported."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_ray_free import ray_modules_after

from blip_ray import api, metrics
from blip_ray.api import load_model, open_experiment, run_continual
from blip_ray.experiments.run.launch import run_experiment
from blip_ray.experiments.specs.experiment import parse_spec
from blip_ray.supervised.build import build_continual
from blip_ray.supervised.loop import evaluate_all

TRAIN = {"lr": 0.1, "epochs": 3}
THREADS = torch.get_num_threads()
SPEC = {
    "name": "api",
    "benchmark": "pdigits",
    "fc_width": 32,
    "tasks": 2,
    "train": TRAIN,
    "methods": {"blip": {"f_prior": 1e-15, "fisher_batches": 2}, "finetune": {}},
    "seeds": [1],
}


def test_a_run_in_this_process_gives_the_matrix_and_its_metrics() -> None:
    result = run_continual("digits5", "finetune", tasks=2, train={"epochs": 2}, seed=3)
    assert result.task_names == ["digits-0-1", "digits-2-3"]
    assert result.matrix.shape == (2, 2) and result.initial_row.shape == (2,)
    assert result.metrics["acc"] == pytest.approx(result.matrix[-1].mean())
    # BWT by hand: R[1][0] - R[0][0] over T = 2 tasks (the official 1/T form, one earlier task)
    assert result.metrics["bwt"] == pytest.approx((result.matrix[1, 0] - result.matrix[0, 0]) / 2)
    assert result.capacity == [None, None]
    with pytest.raises(KeyError, match="unknown supervised benchmark 'cartpole3'"):
        run_continual("cartpole3")


def test_the_api_imports_no_ray() -> None:
    assert ray_modules_after("import blip_ray.api") == []


@pytest.mark.ray
def test_a_run_here_uses_a_default_trials_threads_and_restores_the_processs(monkeypatch):
    seen = []
    monkeypatch.setattr(
        api, "run_sequence", lambda *a, **k: seen.append(torch.get_num_threads()) or []
    )
    torch.set_num_threads(2)
    try:
        for threads in (None, 2):
            with pytest.raises(IndexError):  # no record from the stand-in loop
                run_continual("digits5", "finetune", tasks=1, threads=threads)
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(THREADS)
    assert seen == [parse_spec(SPEC).resources.threads, 2] and seen[0] == 1


def test_a_trial_equals_the_same_run_here_and_loads_back(ray_session, tmp_path) -> None:
    outcome = run_experiment(parse_spec(SPEC), storage=str(tmp_path), verbose=0)
    experiment = open_experiment(outcome.experiment_dir)
    summary = experiment.summary.set_index("method")
    assert sorted(summary.index) == ["blip", "finetune"] and set(summary["status"]) == {"ok"}
    assert len(experiment.matrices) == 2 * 2 * 2
    table = experiment.table.set_index("method")
    assert table.loc["blip", "acc_n"] == 1

    for method, hp in SPEC["methods"].items():
        trial = next(t for t in experiment.trials if t.method == method)
        # The bits depend on torch's thread count: a trial runs with its resources' (here the
        # default 1 CPU), and run_continual's default is the same whatever this process's count.
        here = run_continual(
            "pdigits", method, hyperparameters=hp, seed=1, train=TRAIN, tasks=2, fc_width=32
        )
        np.testing.assert_array_equal(here.matrix, np.array(trial.matrix))  # the same training
        assert summary.loc[method, "acc"] == pytest.approx(metrics.acc(trial.matrix))

        model = load_model(outcome.experiment_dir, method=method, seed=1)
        for name, value in here.model.state_dict().items():
            torch.testing.assert_close(model.state_dict()[name], value, rtol=0, atol=0)
        sequence, _, _ = build_continual(
            "pdigits", method, hyperparameters=hp, seed=1, network="mlp", tasks=2, fc_width=32
        )
        assert (
            evaluate_all(model, sequence, device=torch.device("cpu"), batch_size=256)
            == (trial.matrix[-1])
        )
    with pytest.raises(LookupError, match="no trial of method 'ewc' with seed 1"):
        load_model(outcome.experiment_dir, method="ewc", seed=1)
