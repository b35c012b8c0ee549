"""UCL: the Bayesian trunk layers, the regulariser against the reference's formula, the rho
learning rate, and runs on the synthetic sequence."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from cl_fixtures import small_net, synthetic_sequence
from torch import nn
from torch.nn import functional as F

from blip_ray.methods import make_method
from blip_ray.methods.base import trunk_snapshot
from blip_ray.models import ModelOptions, MultiHeadNet, build_model, check_build
from blip_ray.models.bayesian import BayesianConv2d, BayesianLinear
from blip_ray.supervised import TrainSettings, run_sequence
from blip_ray.supervised.loop import _optimizer

RATIO = 0.25


def reference_regularization(saver_net, trainer_net, mini_batch_size, *, alpha, beta, saved):
    """``approaches/ucl.py`` ``custom_regularization`` of github.com/csm9493/UCL written out, less
    the data term: ``saver_net``/``trainer_net`` list the Bayesian layers in order; ``alpha`` the
    ``--alpha`` argument; ``saved`` the reference's ``self.saved`` (0 during the first task)."""
    sigma_weight_reg_sum = 0
    sigma_weight_normal_reg_sum = 0
    mu_weight_reg_sum = 0
    mu_bias_reg_sum = 0
    l1_mu_weight_reg_sum = 0
    l1_mu_bias_reg_sum = 0
    if saved:
        alpha = 1
    first = trainer_net[0].weight_mu
    if first.dim() == 4:
        prev_weight_strength = torch.zeros(first.shape[1], 1, 1, 1, dtype=first.dtype)
    else:
        prev_weight_strength = torch.zeros(first.shape[1], 1, dtype=first.dtype)
    for saver_layer, trainer_layer in zip(saver_net, trainer_net, strict=True):
        trainer_weight_mu = trainer_layer.weight_mu
        saver_weight_mu = saver_layer.weight_mu
        trainer_bias = trainer_layer.bias
        saver_bias = saver_layer.bias
        receptive = trainer_weight_mu[0][0].numel()
        fan_in = trainer_weight_mu.size(1) * receptive
        fan_out = trainer_weight_mu.size(0) * receptive
        trainer_weight_sigma = torch.log1p(torch.exp(trainer_layer.weight_rho))
        saver_weight_sigma = torch.log1p(torch.exp(saver_layer.weight_rho))
        if isinstance(trainer_layer, BayesianLinear):
            std_init = math.sqrt((2 / fan_in) * RATIO)
        if isinstance(trainer_layer, BayesianConv2d):
            std_init = math.sqrt((2 / fan_out) * RATIO)
        saver_weight_strength = std_init / saver_weight_sigma
        if len(saver_weight_mu.shape) == 4:
            out_features, in_features, _, _ = saver_weight_mu.shape
            curr_strength = saver_weight_strength.expand(out_features, in_features, 1, 1)
            prev_strength = prev_weight_strength.permute(1, 0, 2, 3).expand(
                out_features, in_features, 1, 1
            )
        else:
            out_features, in_features = saver_weight_mu.shape
            curr_strength = saver_weight_strength.expand(out_features, in_features)
            if len(prev_weight_strength.shape) == 4:
                feature_size = in_features // (prev_weight_strength.shape[0])
                prev_weight_strength = prev_weight_strength.reshape(
                    prev_weight_strength.shape[0], -1
                )
                prev_weight_strength = prev_weight_strength.expand(
                    prev_weight_strength.shape[0], feature_size
                )
                prev_weight_strength = prev_weight_strength.reshape(-1, 1)
            prev_strength = prev_weight_strength.permute(1, 0).expand(out_features, in_features)
        l2_strength = torch.max(curr_strength, prev_strength)
        bias_strength = torch.squeeze(saver_weight_strength)
        l1_sigma = saver_weight_sigma
        bias_sigma = torch.squeeze(saver_weight_sigma)
        prev_weight_strength = saver_weight_strength
        mu_weight_reg = (l2_strength * (trainer_weight_mu - saver_weight_mu)).norm(2) ** 2
        mu_bias_reg = (bias_strength * (trainer_bias - saver_bias)).norm(2) ** 2
        l1_mu_weight_reg = (
            torch.div(saver_weight_mu**2, l1_sigma**2) * (trainer_weight_mu - saver_weight_mu)
        ).norm(1)
        l1_mu_bias_reg = (
            torch.div(saver_bias**2, bias_sigma**2) * (trainer_bias - saver_bias)
        ).norm(1)
        l1_mu_weight_reg = l1_mu_weight_reg * (std_init**2)
        l1_mu_bias_reg = l1_mu_bias_reg * (std_init**2)
        weight_sigma = trainer_weight_sigma**2 / saver_weight_sigma**2
        normal_weight_sigma = trainer_weight_sigma**2
        sigma_weight_reg_sum = sigma_weight_reg_sum + (weight_sigma - torch.log(weight_sigma)).sum()
        sigma_weight_normal_reg_sum = (
            sigma_weight_normal_reg_sum
            + (normal_weight_sigma - torch.log(normal_weight_sigma)).sum()
        )
        mu_weight_reg_sum = mu_weight_reg_sum + mu_weight_reg
        mu_bias_reg_sum = mu_bias_reg_sum + mu_bias_reg
        l1_mu_weight_reg_sum = l1_mu_weight_reg_sum + l1_mu_weight_reg
        l1_mu_bias_reg_sum = l1_mu_bias_reg_sum + l1_mu_bias_reg
    loss = alpha * (mu_weight_reg_sum + mu_bias_reg_sum) / (2 * mini_batch_size)
    loss = loss + saved * (l1_mu_weight_reg_sum + l1_mu_bias_reg_sum) / (mini_batch_size)
    return loss + beta * (sigma_weight_reg_sum + sigma_weight_normal_reg_sum) / (
        2 * mini_batch_size
    )


def conv_trunk() -> tuple[nn.Sequential, int]:
    """2x6x6 -> conv 3x3 (pad 1) -> pool -> conv 2x2 -> flatten 4*2*2 -> 5 -> 6."""
    trunk = nn.Sequential(
        BayesianConv2d(2, 3, 3, padding=1, ratio=RATIO),
        nn.ReLU(),
        nn.MaxPool2d(2),
        BayesianConv2d(3, 4, 2, ratio=RATIO),
        nn.Flatten(),
        BayesianLinear(16, 5, ratio=RATIO),
        nn.ReLU(),
        BayesianLinear(5, 6, ratio=RATIO),
    )
    return trunk, 6


def mlp_trunk() -> tuple[nn.Sequential, int]:
    trunk = nn.Sequential(
        BayesianLinear(7, 5, ratio=RATIO), nn.ReLU(), BayesianLinear(5, 4, ratio=RATIO)
    )
    return trunk, 4


def randomized(trunk: nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in trunk.named_parameters():
            noise = torch.randn(param.shape, generator=gen, dtype=param.dtype)
            param.copy_(noise - 2.5 if name.endswith("rho") else 0.4 * noise)


@pytest.mark.parametrize("after_first_task", [False, True])
@pytest.mark.parametrize("build", [conv_trunk, mlp_trunk])
def test_penalty_equals_the_reference_formula(build, after_first_task):
    torch.manual_seed(0)
    trunk, dim = build()
    model = MultiHeadNet(trunk, dim, [2]).double()
    saver = copy.deepcopy(model)
    randomized(saver.trunk, seed=1)
    randomized(model.trunk, seed=2)
    method = make_method("ucl", alpha=0.3, beta=0.02, ratio=RATIO)
    method.setup(model)
    method.saved, method.after_first_task = trunk_snapshot(saver), after_first_task
    layers = [m for m in model.trunk if isinstance(m, BayesianConv2d | BayesianLinear)]
    saved = [m for m in saver.trunk if isinstance(m, BayesianConv2d | BayesianLinear)]
    inputs = torch.zeros(7, 1)  # only the batch size is read
    ours = method.penalty(model, 1, inputs)
    expected = reference_regularization(
        saved, layers, 7, alpha=0.3, beta=0.02, saved=int(after_first_task)
    )
    torch.testing.assert_close(ours, expected)
    params = list(model.trunk.parameters())
    for got, want in zip(
        torch.autograd.grad(ours, params), torch.autograd.grad(expected, params), strict=True
    ):
        torch.testing.assert_close(got, want)
    assert float(ours.detach()) > 0


def test_first_task_pulls_toward_the_initial_weights_with_strength_alpha():
    seq = synthetic_sequence(tasks=1)
    model = small_net(seq, quantized=False, bayesian=True)
    method = make_method("ucl", alpha=0.3, beta=0.0)
    method.setup(model)
    layer = model.trunk[0]
    with torch.no_grad():
        layer.weight_mu.add_(0.5)  # sigma still std_init: strength 1
    penalty = method.penalty(model, 0, torch.zeros(4, 1)).detach()
    expected = 0.3 * 0.25 * layer.weight_mu.numel() / (2 * 4)
    assert float(penalty) == pytest.approx(expected, rel=1e-5)


def test_sigma_is_node_wise_and_starts_at_std_init():
    linear, conv = BayesianLinear(300, 7, ratio=0.5), BayesianConv2d(3, 8, 3, ratio=0.125)
    assert linear.weight_rho.shape == (7, 1) and conv.weight_rho.shape == (8, 1, 1, 1)
    torch.testing.assert_close(linear.weight_sigma, torch.full((7, 1), math.sqrt(2 / 300 * 0.5)))
    # a convolution's fan is its fan_out, as the reference's
    torch.testing.assert_close(conv.weight_sigma, torch.full((8, 1, 1, 1), math.sqrt(2 / 72 / 8)))
    bound = math.sqrt(3 * 2 / 300 * 0.5)
    assert linear.weight_mu.abs().max() <= bound and linear.weight_mu.abs().max() > 0.9 * bound
    assert not linear.bias.any() and not conv.bias.any()
    names = {n for n, _ in BayesianLinear(2, 3, bias=False).named_parameters()}
    assert names == {"weight_mu", "weight_rho"}


def test_training_forward_samples_per_unit_and_eval_forward_is_the_mean():
    torch.manual_seed(0)
    layer = BayesianLinear(2, 3, ratio=0.5)
    with torch.no_grad():
        layer.weight_rho.copy_(torch.tensor([[-3.0], [-1.0], [0.5]]))
    x = torch.tensor([[1.0, 0.0]])
    layer.train()
    samples = torch.cat([layer(x) for _ in range(4000)])
    assert not torch.equal(samples[0], samples[1])
    torch.testing.assert_close(samples.std(0), layer.weight_sigma.detach()[:, 0], rtol=0.05, atol=0)
    layer.eval()
    torch.testing.assert_close(layer(x), F.linear(x, layer.weight_mu, layer.bias))
    assert torch.equal(layer(x), layer(x))


def test_rho_gets_its_own_learning_rate_divided_with_the_loops():
    seq = synthetic_sequence(tasks=1)
    model = small_net(seq, quantized=False, bayesian=True)
    method = make_method("ucl", lr_rho=0.002)
    method.setup(model)
    settings = TrainSettings(lr=0.1)
    for lr, lr_rho in ((0.1, 0.002), (0.1 / 3, 0.002 / 3)):
        optimizer = _optimizer(model, method, lr, settings)
        x, y = seq.tasks[0].train.x[:16], seq.tasks[0].train.y[:16]
        loss = F.cross_entropy(model(x, 0), y) + method.penalty(model, 0, x)
        optimizer.zero_grad()
        loss.backward()
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        optimizer.step()
        for name, param in model.named_parameters():
            rate = lr_rho if name.endswith("weight_rho") else lr
            torch.testing.assert_close(param.detach(), before[name] - rate * grads[name])
        assert grads["trunk.0.weight_rho"].abs().sum() > 0
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))


def test_ucl_runs_three_tasks_and_saves_each_tasks_model():
    seq = synthetic_sequence(tasks=3)
    method = make_method("ucl")
    model = small_net(seq, quantized=False, bayesian=True)
    settings = TrainSettings(lr=0.1, epochs=8, batch_size=32)
    records = list(run_sequence(seq, model, method, settings=settings, seed=0))
    assert torch.tensor(records[-1].matrix).diagonal().min() > 0.7
    assert method.after_first_task
    for name, param in model.trunk.named_parameters():
        assert torch.equal(method.saved[name], param.detach())
    assert len({r.state_bytes for r in records}) == 1  # one saved model, whatever the task count


def test_every_paper_network_but_resnet_builds_a_bayesian_trunk():
    for name, shape, width in (
        ("mlp", (1, 8, 8), 1.0),
        ("alexnet32", (3, 32, 32), 0.125),
        ("alexnet84", (3, 84, 84), 0.125),
    ):
        options = ModelOptions(input_shape=shape, head_sizes=(2, 3), bayesian=True, width=width)
        model = build_model(name, options)
        weighted = [m for m in model.trunk.modules() if isinstance(m, nn.Linear | nn.Conv2d)]
        assert not weighted and all(type(h) is nn.Linear for h in model.heads)
        assert all(
            n.endswith(("weight_mu", "weight_rho", "bias"))
            for n, _ in model.trunk.named_parameters()
        )
    with pytest.raises(ValueError, match="resnet18 has no Bayesian"):
        check_build("resnet18", ModelOptions((3, 32, 32), (2,), bayesian=True))
    with pytest.raises(ValueError, match="quantized or Bayesian, not both"):
        ModelOptions((4,), (2,), quantized=True, bayesian=True)


def test_setup_refuses_a_plain_trunk_or_another_ratio():
    seq = synthetic_sequence(tasks=1)
    with pytest.raises(ValueError, match="Bayesian trunk"):
        make_method("ucl").setup(small_net(seq, quantized=False))
    with pytest.raises(ValueError, match="ratio 0.25"):
        make_method("ucl", ratio=0.25).setup(small_net(seq, quantized=False, bayesian=True))


@pytest.mark.parametrize(
    ("hp", "message"),
    [
        ({"alpha": -1.0}, "alpha: must be a finite number >= 0"),
        ({"beta": math.inf}, "beta: must be a finite number >= 0"),
        ({"ratio": 0.0}, r"ratio: must be in \(0, 1\]"),
        ({"lr_rho": 0.0}, "lr_rho: must be a number > 0"),
    ],
)
def test_config_refuses_impossible_values(hp, message):
    with pytest.raises(ValueError, match=message):
        make_method("ucl", **hp)
