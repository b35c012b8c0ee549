"""The task loop: the paper's protocol, per-task records, and exact restarts."""

from __future__ import annotations

import pytest
import torch
from cl_fixtures import method_net, small_net, synthetic_sequence

from blip_ray.data import Split
from blip_ray.methods import make_method
from blip_ray.supervised import TrainSettings, run_sequence

SETTINGS = TrainSettings(lr=0.1, epochs=6, batch_size=32)


@pytest.mark.parametrize(
    ("name", "hp"),
    [
        ("blip", {"f_prior": 1e-12, "fisher_batches": 3}),
        ("ewc", {}),
        ("lwf", {}),
        ("si", {}),
        ("mas", {}),
        ("agem", {"per_class": 4, "memory_batch": 16}),
        ("er", {"per_class": 4}),
        ("joint", {}),
        ("hat", {}),
        ("packnet", {"retrain_epochs": 2}),
        ("ucl", {"alpha": 0.3, "beta": 0.002}),
    ],
)
def test_restart_after_any_task_reproduces_the_uninterrupted_run(name, hp):
    seq = synthetic_sequence(tasks=3)

    def fresh():
        method = make_method(name, **hp)
        return method_net(seq, method), method

    model, method = fresh()
    full = list(run_sequence(seq, model, method, settings=SETTINGS, seed=7))
    for stop in (0, 1):
        model2, method2 = fresh()
        resumed = list(
            run_sequence(seq, model2, method2, settings=SETTINGS, seed=7, resume=full[stop].state)
        )
        assert [r.task for r in resumed] == list(range(stop + 1, 3))
        assert resumed[-1].matrix == full[-1].matrix
        for key, value in full[-1].state.model.items():
            assert torch.equal(resumed[-1].state.model[key], value), key


def test_records_carry_the_matrix_baseline_and_timings():
    seq = synthetic_sequence(tasks=3)
    records = list(
        run_sequence(
            seq, small_net(seq, quantized=False), make_method("finetune"), settings=SETTINGS, seed=0
        )
    )
    last = records[-1]
    assert len(last.matrix) == 3 and all(len(r) == 3 for r in last.matrix)
    assert last.matrix[:2] == records[1].matrix
    # unseen tasks are evaluated too: row 0 has values for tasks 1 and 2
    assert len(records[0].row) == 3
    assert len(last.initial_row) == 3 and all(0 <= v <= 1 for v in last.initial_row)
    assert all(r.train_s > 0 and r.eval_s > 0 for r in records)


def test_learning_rate_decay_stops_training_early():
    seq = synthetic_sequence(tasks=1, train=64)
    # patience 1, factor 10, lr_min just under lr: the first plateau ends the task
    settings = TrainSettings(
        lr=0.5, epochs=200, lr_patience=1, lr_factor=10.0, lr_min=0.4, batch_size=64
    )
    record = next(
        run_sequence(
            seq, small_net(seq, quantized=False), make_method("finetune"), settings=settings, seed=0
        )
    )
    assert record.epochs < 200
    assert record.final_lr == pytest.approx(0.05)


def test_best_validation_weights_are_restored():
    seq = synthetic_sequence(tasks=1)
    model = small_net(seq, quantized=False)
    record = next(run_sequence(seq, model, make_method("finetune"), settings=SETTINGS, seed=0))
    from blip_ray.supervised.loop import TaskBatches

    batches = TaskBatches(seq.tasks[0], torch.device("cpu"), torch.Generator())
    assert batches.valid_loss(model, 100) == pytest.approx(record.best_valid_loss, rel=1e-5)


def test_bad_settings_fail_clearly():
    with pytest.raises(ValueError, match="epochs"):
        TrainSettings(epochs=0)
    with pytest.raises(ValueError, match="device"):
        TrainSettings(device="tpu")


def test_the_validation_matrix_is_taken_on_the_validation_split():
    seq = synthetic_sequence(tasks=2)
    for task in seq.tasks:  # test = the validation inputs with every label flipped
        task.test = Split(task.valid.x.clone(), 1 - task.valid.y)
    records = list(
        run_sequence(
            seq, small_net(seq, quantized=False), make_method("finetune"), settings=SETTINGS, seed=0
        )
    )
    last = records[-1]
    assert len(last.valid_matrix) == 2 and last.valid_matrix[:1] == records[0].valid_matrix
    for valid_row, test_row in zip(last.valid_matrix, last.matrix, strict=True):
        assert valid_row == pytest.approx([1 - value for value in test_row], abs=1e-12)
    assert last.valid_matrix[0][0] > 0.8  # learned on validation, so "wrong" on the flipped test
    assert last.initial_valid_row == pytest.approx([1 - v for v in last.initial_row], abs=1e-12)
    resumed = list(
        run_sequence(
            seq,
            small_net(seq, quantized=False),
            make_method("finetune"),
            settings=SETTINGS,
            seed=0,
            resume=records[0].state,
        )
    )
    assert resumed[-1].valid_matrix == last.valid_matrix
