"""One test per method (FACIL's habit) plus the registry; all on a synthetic 3-task sequence."""

from __future__ import annotations

import math

import pytest
import torch
from cl_fixtures import method_net, small_net, synthetic_sequence

from blip_ray import quant
from blip_ray.methods import METHODS, make_method
from blip_ray.supervised import NonFiniteLossError, TrainSettings, run_sequence

FAST = TrainSettings(lr=0.1, epochs=8, batch_size=32)
BLIP_FAST = {"f_prior": 1e-12, "fisher_batches": 3}


def run(name: str, *, tasks: int = 3, settings: TrainSettings = FAST, **hp):
    seq = synthetic_sequence(tasks=tasks)
    method = make_method(name, **hp)
    model = method_net(seq, method)
    records = list(run_sequence(seq, model, method, settings=settings, seed=0))
    return seq, model, method, records


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_runs_three_tasks(name):
    _, _, _, records = run(name, **(BLIP_FAST if name == "blip" else {}))
    assert [r.task for r in records] == [0, 1, 2]
    matrix = torch.tensor(records[-1].matrix)
    assert matrix.shape == (3, 3)
    assert ((matrix >= 0) & (matrix <= 1)).all()
    assert torch.diagonal(matrix).min() > 0.7, "each task must be learned"
    assert all(r.state_bytes >= 0 and r.epochs >= 1 for r in records)


def test_blip_freezes_bits_and_keeps_them():
    _, model, _, records = run("blip", **BLIP_FAST)
    caps = [r.capacity for r in records]
    assert 0 < caps[0] <= caps[1] <= caps[2] <= 1
    for layer in quant.blip_layers(model):
        for name, p in layer.blip_params():
            lower, upper = layer.state(name, "lower"), layer.state(name, "upper")
            assert ((p >= lower) & (p <= upper)).all()
            assert torch.equal(p.detach(), layer.state(name, "prev"))  # quantized at the task end
    assert len({r.state_bytes for r in records}) == 1, "BLIP's state is constant in the tasks"


def test_blip_zero_bit_rules_change_only_the_parameters_without_bits():
    """One task per rule, same seed: the same training, Fisher and bits; the task end differs
    only where no bit was frozen (0 under the default, the official rule)."""
    assert make_method("blip").config.zero_bit_weights == "zero"
    trunks = {}
    for rule in ("zero", "keep", "reinit"):
        # an F_prior that leaves about half the trunk without bits after one task
        _, model, _, _ = run("blip", tasks=1, f_prior=1e-8, fisher_batches=3, zero_bit_weights=rule)
        trunks[rule] = quant.blip_layers(model)
    for i, layer in enumerate(trunks["zero"]):
        for name, p in layer.blip_params():
            unfrozen = layer.state(name, "bits") == 0
            assert unfrozen.any() and (~unfrozen).any() and (p[unfrozen] == 0).all()
            for rule in ("keep", "reinit"):
                other = trunks[rule][i]
                assert torch.equal(other.state(name, "bits"), layer.state(name, "bits"))
                moved = getattr(other, name).detach()
                assert torch.equal(moved[~unfrozen], p[~unfrozen].detach())
                assert (moved[unfrozen] != 0).any(), rule


def test_blip_rejects_a_plain_trunk():
    seq = synthetic_sequence()
    with pytest.raises(ValueError, match="quantized"):
        make_method("blip").setup(small_net(seq, quantized=False))


def test_finetune_moves_the_trunk_and_forgets_more_than_frozen():
    _, _, _, ft = run("finetune")
    _, _, _, fr = run("frozen")
    ft_m, fr_m = torch.tensor(ft[-1].matrix), torch.tensor(fr[-1].matrix)
    # frozen: old heads and trunk untouched -> earlier tasks' accuracies never change
    assert torch.equal(fr_m[1:, 0], fr_m[0, 0].repeat(2))
    assert torch.equal(fr_m[2, 1], fr_m[1, 1])
    assert (ft_m[2, :2] != ft_m.diagonal()[:2]).any(), "fine-tuning must move old tasks"


def test_frozen_trunk_is_unchanged_after_the_first_task():
    seq = synthetic_sequence()
    method = make_method("frozen")
    model = small_net(seq, quantized=False)
    runner = run_sequence(seq, model, method, settings=FAST, seed=0)
    next(runner)
    after_first = {n: p.clone() for n, p in model.trunk.named_parameters()}
    list(runner)
    for n, p in model.trunk.named_parameters():
        assert torch.equal(p, after_first[n])


def test_offline_ewc_state_grows_while_online_ewc_stays_constant():
    _, _, _, ewc = run("ewc")
    _, _, _, online = run("online_ewc")
    sizes = [r.state_bytes for r in ewc]
    assert sizes[1] == 2 * sizes[0] and sizes[2] == 3 * sizes[0]
    assert len({r.state_bytes for r in online}) == 1 and online[0].state_bytes == sizes[0]


def test_ewc_penalty_is_zero_at_the_anchor_and_grows_away_from_it():
    seq, model, method, _ = run("ewc", tasks=2)
    # anchor of task 1 == current weights: only task 0's term remains
    x = seq.tasks[0].train.x[:4]
    base = method.penalty(model, 2, x)
    with torch.no_grad():
        for p in model.trunk.parameters():
            p.add_(0.1)
    assert method.penalty(model, 2, x) > base >= 0


def test_lwf_distils_old_heads_from_the_second_task():
    seq, model, method, records = run("lwf", tasks=2)
    x = seq.tasks[1].train.x[:16]
    assert method.penalty(model, 0, x) is None
    assert method.penalty(model, 1, x) > 0
    assert records[0].state_bytes == records[1].state_bytes > 0


def test_imm_mean_merge_averages_task_solutions():
    seq, model, method, _ = run("imm_mode", tasks=1, merge="mean")
    merged = {n: t.clone() for n, t in method.merged.items()}
    solution = {n: p.detach().clone() + 1.0 for n, p in model.trunk.named_parameters()}
    with torch.no_grad():
        for n, p in model.trunk.named_parameters():
            p.copy_(solution[n])
    method.after_task(model, 1, samples=None)
    for n, p in model.trunk.named_parameters():
        torch.testing.assert_close(p.detach(), (merged[n] + solution[n]) / 2)


def test_imm_mode_is_the_default_and_weights_solutions_by_their_fisher(monkeypatch):
    assert make_method("imm_mode").config.merge == "mode"
    seq, model, method, _ = run("imm_mode", tasks=1)
    old = {n: t.clone() for n, t in method.merged.items()}
    # Hand-computed case: old Fisher 1, new Fisher 3 -> (1 * old + 3 * new) / 4; where both
    # Fishers are 0 the plain mean is taken.
    method.fisher = {n: torch.ones_like(t) for n, t in old.items()}
    new_fisher = {n: torch.full_like(t, 3.0) for n, t in old.items()}
    first = next(iter(new_fisher))
    new_fisher[first].zero_()
    method.fisher[first].zero_()
    monkeypatch.setattr("blip_ray.methods.imm.task_fisher", lambda *a, **k: new_fisher)
    with torch.no_grad():
        for p in model.trunk.parameters():
            p.add_(4.0)
    new = {n: p.detach().clone() for n, p in model.trunk.named_parameters()}
    method.after_task(model, 1, samples=None)
    for n, p in model.trunk.named_parameters():
        expected = (old[n] + new[n]) / 2 if n == first else (old[n] + 3 * new[n]) / 4
        torch.testing.assert_close(p.detach(), expected)
        torch.testing.assert_close(method.fisher[n], new_fisher[n] + (0 if n == first else 1))


def test_imm_mode_merge_runs_with_fisher_weights():
    _, _, method, records = run("imm_mode", merge="mode")
    assert method.fisher is not None and records[-1].state_bytes > records[0].state_bytes / 2


def test_registry_rejects_unknown_names_and_hyperparameters():
    with pytest.raises(KeyError, match="unknown method 'no_such'; known: agem, blip, "):
        make_method("no_such")
    with pytest.raises(ValueError, match="no hyperparameter 'lambda'"):
        make_method("ewc", **{"lambda": 1.0})
    paper = {"blip", "finetune", "frozen", "ewc", "online_ewc", "lwf", "imm_mode"}
    assert paper <= set(METHODS)  # a new method is a new file, not an edit here


def test_nan_loss_stops_the_run_with_a_clear_error():
    with pytest.raises(NonFiniteLossError, match="task 0"):
        run("finetune", settings=TrainSettings(lr=1e38, epochs=3, batch_size=32))


@pytest.mark.parametrize(
    ("name", "hp", "message"),
    [
        ("blip", {"f_prior": 0.0}, "f_prior: must be a finite number > 0"),
        ("blip", {"f_prior": math.nan}, "f_prior: must be a finite number > 0"),
        ("blip", {"max_bit": 31}, "max_bit: must be in 1..30"),
        ("blip", {"zero_bit_weights": "random"}, "zero_bit_weights: must be zero, keep or reinit"),
        ("ewc", {"lamb": -1.0}, "lamb: must be >= 0"),
        ("online_ewc", {"gamma": 0.0}, r"gamma: must be in \(0, 1\]"),
        ("imm_mode", {"merge": "max"}, "merge: must be mean or mode"),
        ("lwf", {"temperature": 0.0}, "temperature: must be > 0"),
        ("frozen", {"freeze_after": 0}, "freeze_after: must be >= 1"),
    ],
)
def test_each_config_refuses_impossible_values(name, hp, message):
    with pytest.raises(ValueError, match=message):
        make_method(name, **hp)
