"""BLIP's Fisher against a naive loop: one backward per sample with the same sampled targets."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from blip_ray.quant import (
    QuantConv2d,
    QuantLinear,
    blip_layers,
    estimate_fisher,
    sampled_label_log_prob,
)


class SmallNet(nn.Module):
    """Conv + linear trunk (with dropout, which the Fisher must switch off) and per-task heads."""

    def __init__(self, variant: str, head_sizes: list[int]) -> None:
        super().__init__()
        kw = {"variant": variant, "f_prior": 1e-15}
        self.trunk = nn.Sequential(
            QuantConv2d(3, 6, 3, stride=2, padding=1, **kw),
            nn.ReLU(),
            nn.Dropout(0.5),
            QuantConv2d(6, 8, 2, **kw),
            nn.ReLU(),
            nn.Flatten(),
            QuantLinear(8 * 2 * 2, 16, **kw),
            nn.ReLU(),
        )
        self.heads = nn.ModuleList(nn.Linear(16, n) for n in head_sizes)
        self.task = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads[self.task](self.trunk(x))


def classification_log_prob(model: nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return F.log_softmax(model(x), -1).gather(1, y[:, None]).squeeze(1)


def masked_policy_log_prob(model: nn.Module, batch, n_actions: int = 3) -> torch.Tensor:
    """RL use: a padded action space, logits past the game's actions masked out."""
    obs, actions = batch
    logits = model(obs)
    logits = logits.masked_fill(torch.arange(logits.shape[1]) >= n_actions, float("-inf"))
    return F.log_softmax(logits, -1).gather(1, actions[:, None]).squeeze(1)


def naive_fisher(model: nn.Module, batches, log_prob_fn) -> dict[str, torch.Tensor]:
    """One backward per sample of ``-log p_i / N`` (the per-sample gradient of the mean loss)."""
    model = copy.deepcopy(model).double().eval()
    params = {n: p for n, p in model.named_parameters() if n.startswith("trunk")}
    sums = {n: torch.zeros_like(p) for n, p in params.items()}
    total = 0
    for x, y in batches:
        n = x.shape[0]
        for i in range(n):
            model.zero_grad()
            (-log_prob_fn(model, (x[i : i + 1].double(), y[i : i + 1])).sum() / n).backward()
            for name, p in params.items():
                sums[name] += p.grad.square()
        total += n
    return {name: s / total for name, s in sums.items()}


def sample_targets(model, batches, n_valid: int):
    out = []
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        model.eval()
        for x in batches:
            logits = model(x)[:, :n_valid]
            out.append((x, torch.multinomial(logits.softmax(-1), 1, generator=gen).squeeze(1)))
        model.train()
    return out


@pytest.mark.parametrize(
    ("variant", "log_prob_fn", "heads", "valid"),
    [
        ("classification", classification_log_prob, [4, 5], 5),
        ("rl", masked_policy_log_prob, [6, 6], 3),
    ],
    ids=["classification", "rl"],
)
def test_fisher_equals_naive_per_sample_loop(variant, log_prob_fn, heads, valid):
    model = SmallNet(variant, heads)
    model.task = 1
    batches = sample_targets(model, [torch.randn(n, 3, 6, 6) for n in (7, 7, 5)], valid)
    total = estimate_fisher(model, batches, log_prob_fn)
    assert total == 19
    assert model.training, "the model's mode must be restored"
    expected = naive_fisher(model, batches, log_prob_fn)
    named = {f"trunk.{n}": m for n, m in model.trunk.named_children() if m in blip_layers(model)}
    for prefix, layer in named.items():
        for pname, _ in layer.blip_params():
            got = layer.state(pname, "fisher").double()
            ref = expected[f"{prefix}.{pname}"]
            assert ref.abs().sum() > 0
            rel = (got - ref).norm() / ref.norm()
            assert rel <= 1e-5, f"{prefix}.{pname}: relative error {rel:.2e}"


def test_fisher_keeps_the_official_one_over_n_squared_scale():
    """Doubling the minibatch of identical samples quarters the stored Fisher: E[g^2] / N^2."""
    torch.manual_seed(0)
    layer = QuantLinear(5, 3, f_prior=1e-15)
    x = torch.randn(1, 5).repeat(8, 1)
    y = torch.zeros(8, dtype=torch.long)

    def lp(model, batch):
        return classification_log_prob(model, batch)

    estimate_fisher(layer, [(x[:4], y[:4])] * 2, lp)
    small = layer.weight_fisher.clone()
    estimate_fisher(layer, [(x, y)], lp)
    torch.testing.assert_close(layer.weight_fisher, small / 4)


def test_sampled_label_log_prob_samples_from_the_model():
    logits = torch.tensor([[0.0, 50.0, 0.0]] * 64, requires_grad=True)
    lp = sampled_label_log_prob(logits)
    assert lp.shape == (64,)
    assert torch.allclose(lp, torch.zeros(64), atol=1e-6)  # the sure label is always drawn
    lp.sum().backward()
    assert logits.grad is not None


def test_fisher_rejects_empty_batches_and_weight_sharing():
    layer = QuantLinear(4, 2, f_prior=1e-15)
    with pytest.raises(ValueError, match="empty"):
        estimate_fisher(layer, [], lambda m, b: sampled_label_log_prob(m(b)))
    shared = nn.Sequential(layer, nn.ReLU())
    with pytest.raises(RuntimeError, match="twice"):
        estimate_fisher(
            shared,
            [torch.randn(3, 4)],
            lambda m, b: sampled_label_log_prob(torch.cat([m(b), layer(b)], 1)),
        )


def test_fisher_refuses_an_inplace_activation_that_overwrites_a_layer_output():
    net = nn.Sequential(QuantLinear(4, 3, f_prior=1e-15), nn.ReLU(inplace=True), nn.Linear(3, 2))
    with pytest.raises(RuntimeError, match="in-place"):
        estimate_fisher(net, [torch.randn(5, 4)], lambda m, b: sampled_label_log_prob(m(b)))
