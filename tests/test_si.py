"""SI: the path integral of the plain gradient on hand-computed steps, and a PPO run."""

from __future__ import annotations

import pytest
import torch
from cl_fixtures import ppo_learner
from ray.rllib.core import DEFAULT_MODULE_ID
from torch import nn

from blip_ray.methods import make_method


def linear_net(weight: list[float]) -> nn.Module:
    net = nn.Module()
    net.trunk = nn.Linear(len(weight), 1, bias=False)
    with torch.no_grad():
        net.trunk.weight.copy_(torch.tensor([weight]))
    return net


def step(net: nn.Module, method, x: list[float], *, lr: float) -> torch.Tensor:
    """One SGD step on ``(w . x)^2`` plus the method's penalty; returns the task loss's gradient."""
    inputs = torch.tensor([x])
    loss = net.trunk(inputs).square().sum()
    task_grad = torch.autograd.grad(loss, net.trunk.weight, retain_graph=True)[0]
    penalty = method.penalty(net, 0, inputs)
    total = loss if penalty is None else loss + penalty
    net.trunk.weight.grad = None
    total.backward()
    with torch.no_grad():
        net.trunk.weight.sub_(lr * net.trunk.weight.grad)
    method.after_step(net, 0)
    return task_grad


def first_task() -> tuple[nn.Module, object]:
    """SI (c 0.5, xi 1e-3) after a task of one step: the gradient of (w . x)^2 at w = (1, 1),
    x = (1, 0) is 2 (w . x) x = (2, 0); lr 0.25 moves w by (-0.5, 0), so W = -g . delta = (1, 0)."""
    method = make_method("si", c=0.5, xi=1e-3)
    net = linear_net([1.0, 1.0])
    method.setup(net)
    method.before_task(net, 0)
    step(net, method, [1.0, 0.0], lr=0.25)
    method.after_task(net, 0, samples=None)
    return net, method


def test_importance_is_the_path_integral_over_the_squared_move_plus_xi():
    net, method = first_task()  # omega = relu(W / (delta_total^2 + xi))
    expected = torch.tensor([[1.0 / (0.25 + 1e-3), 0.0]])
    torch.testing.assert_close(method.omega["weight"], expected)
    torch.testing.assert_close(method.anchor["weight"], torch.tensor([[0.5, 1.0]]))
    assert float(method.path["weight"].abs().sum()) == 0.0  # reset for the next task


def test_the_path_integral_uses_the_gradient_without_the_penalty():
    net, method = first_task()
    with torch.no_grad():
        net.trunk.weight.copy_(torch.tensor([[1.0, 1.0]]))  # away from the anchor (0.5, 1)
    method.before_task(net, 1)
    penalty = method.penalty(net, 1, None)
    assert float(penalty.detach()) == pytest.approx(0.5 * float(method.omega["weight"][0, 0]) / 4)
    task_grad = step(net, method, [0.0, 1.0], lr=0.1)  # task gradient (0, 2) at w = (1, 1)
    torch.testing.assert_close(task_grad, torch.tensor([[0.0, 2.0]]))
    # The weight moved by -lr (task + penalty) gradient, but W only integrates the task's part:
    moved = net.trunk.weight.detach() - torch.tensor([[1.0, 1.0]])
    torch.testing.assert_close(method.path["weight"], -task_grad * moved)
    assert float(moved[0, 0]) < 0  # the penalty pulled w1 back toward its anchor


def test_config_refuses_impossible_values():
    with pytest.raises(ValueError, match="xi: must be a finite number > 0"):
        make_method("si", xi=0.0)
    with pytest.raises(ValueError, match="c: must be a finite number >= 0"):
        make_method("si", c=-1.0)


def test_si_runs_in_the_ppo_learner_on_the_plain_ppo_gradient():
    learner, update = ppo_learner("si")
    update(96)
    assert sum(float(w.abs().sum()) for w in learner.method.path.values()) > 0
    learner.finish_task(0)
    assert sum(float(o.sum()) for o in learner.method.omega.values()) > 0
    learner.start_task(1)
    results = update(480)
    assert float(results[DEFAULT_MODULE_ID]["method_penalty"].peek()) > 0
