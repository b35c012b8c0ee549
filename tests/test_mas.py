"""MAS: the importance on hand-computed cases, its accumulation and penalty, and a PPO run."""

from __future__ import annotations

import pytest
import torch
from cl_fixtures import ppo_learner
from ray.rllib.core import DEFAULT_MODULE_ID
from torch import nn

from blip_ray.methods import TaskSamples, make_method
from blip_ray.methods.mas import output_importance


def linear_net(weight: list[float]) -> nn.Module:
    """A trunk ``f(x) = w . x`` (one output, no bias) with weight ``w``."""
    net = nn.Module()
    net.trunk = nn.Linear(len(weight), 1, bias=False)
    with torch.no_grad():
        net.trunk.weight.copy_(torch.tensor([weight]))
    return net


def samples_of(*rows: list[float]) -> TaskSamples:
    inputs = torch.tensor(rows)

    def batches(batch_size: int, *, shuffle: bool = False, limit: int | None = None):  # noqa: ANN202
        for start in range(0, len(inputs), batch_size):
            yield inputs[start : start + batch_size], None

    return TaskSamples(batches, lambda model, x: model.trunk(x))


def test_importance_is_the_mean_absolute_gradient_of_each_sample():
    # d (w.x)^2 / dw = 2 (w.x) x: x1 = (1, 0) -> (2, 0); x2 = (-1, 2) -> (-2, 4). The mean of the
    # absolute values is (2, 2); the absolute value of the batch's gradient would be (0, 2).
    importance = output_importance(linear_net([1.0, 1.0]), samples_of([1.0, 0.0], [-1.0, 2.0]))
    torch.testing.assert_close(importance["weight"], torch.tensor([[2.0, 2.0]]))


def test_importance_adds_up_over_tasks_and_weights_the_penalty():
    method = make_method("mas", lamb=0.5)
    net = linear_net([1.0, 1.0])
    method.setup(net)
    assert method.penalty(net, 0, None) is None
    method.after_task(net, 0, samples=samples_of([1.0, 0.0]))  # Omega (2, 0), anchor (1, 1)
    with torch.no_grad():
        net.trunk.weight.copy_(torch.tensor([[2.0, 1.0]]))
    method.after_task(net, 1, samples=samples_of([0.0, 1.0]))  # + (0, 2): Omega (2, 2)
    torch.testing.assert_close(method.omega["weight"], torch.tensor([[2.0, 2.0]]))
    with torch.no_grad():
        net.trunk.weight.copy_(torch.tensor([[3.0, -1.0]]))  # moved (1, -2) from the anchor (2, 1)
    penalty = method.penalty(net, 2, None)
    assert float(penalty.detach()) == pytest.approx(
        0.5 * (2 * 1**2 + 2 * 2**2)
    )  # lamb sum Omega d^2
    assert net.training  # the importance ran in eval mode and restored the mode


def test_config_refuses_a_negative_strength():
    with pytest.raises(ValueError, match="lamb: must be a finite number >= 0"):
        make_method("mas", lamb=-1.0)


def test_mas_runs_in_the_ppo_learner_on_the_policy_logits():
    learner, update = ppo_learner("mas")
    update(96)
    learner.finish_task(0)
    omega = learner.method.omega
    assert sum(float(o.sum()) for o in omega.values()) > 0
    learner.start_task(1)
    results = update(480)
    assert float(results[DEFAULT_MODULE_ID]["method_penalty"].peek()) > 0
