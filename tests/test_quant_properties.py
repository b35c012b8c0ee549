"""Properties of BLIP's state under arbitrary training (hypothesis drives tasks, steps, Fisher)."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from blip_ray.quant import (
    QuantConv2d,
    QuantLinear,
    blip_layers,
    capacity,
    clip_,
    quantize,
    set_f_prior,
)

MAX_BIT = 8  # small so that bits saturate within a few tasks and the cap is exercised


def make_trunk(variant: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    kw = {"variant": variant, "max_bit": MAX_BIT}
    return nn.Sequential(
        QuantConv2d(2, 3, 2, **kw), nn.ReLU(), nn.Flatten(), QuantLinear(3 * 2 * 2, 4, **kw)
    )


def fake_task_end(model: nn.Module, task: int, gen: torch.Generator, log_scale: float) -> None:
    """A task end with a Fisher spread over decades around the prior (set directly, no data)."""
    for layer in blip_layers(model):
        for name, p in layer.blip_params():
            noise = torch.randn(p.shape, generator=gen) * log_scale
            layer.state(name, "fisher").copy_(layer.state(name, "fisher_old") * noise.exp() * 4)
        layer.end_task(task)


def sgd_steps(model: nn.Module, steps: int, lr: float, gen: torch.Generator) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(steps):
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=gen)
        opt.step()
        clip_(model)


plans = st.lists(
    st.tuples(st.integers(0, 6), st.floats(1e-3, 3.0), st.floats(0.1, 8.0)), min_size=1, max_size=5
)


@settings(max_examples=40, deadline=None)
@given(variant=st.sampled_from(["classification", "rl"]), seed=st.integers(0, 2**16), plan=plans)
def test_clipped_training_keeps_frozen_bits(variant, seed, plan):
    model = make_trunk(variant, seed)
    set_f_prior(model, 1e-12)
    gen = torch.Generator().manual_seed(seed)
    previous_bits = {id(p): torch.zeros_like(p, dtype=torch.int8) for p in model.parameters()}
    for task, (steps, lr, log_scale) in enumerate(plan):
        sgd_steps(model, steps, lr, gen)
        fake_task_end(model, task, gen, log_scale)
        sgd_steps(model, steps + 1, lr, gen)
        for layer in blip_layers(model):
            for name, p in layer.blip_params():
                bits, prev = layer.state(name, "bits"), layer.state(name, "prev")
                bound = layer.bounds[name]
                step = bound * torch.exp2(-bits.float())
                # Within one step (the official +-1 LSB clip) of the value at the task end, up to
                # float rounding of the difference (a few ulps of the range) ...
                assert ((p - prev).abs() <= step + bound * 2.0**-21).all()
                assert (p.abs() <= bound * (1 - 2.0**-MAX_BIT)).all()
                # ... so re-quantizing with the frozen bits lands on that value or a neighbour,
                # and exactly on it wherever the move is under half a step.
                requant = quantize(p, bits, bound)
                moved = ((requant - prev).abs() / step).round()
                assert (moved <= 1).all()
                near = (p - prev).abs() < 0.49 * step
                assert torch.equal(requant[near & (bits > 0)], prev[near & (bits > 0)])
                # Bits never decrease and never exceed max_bit; zero bits quantize to zero.
                assert (bits >= previous_bits[id(p)]).all() and (bits <= MAX_BIT).all()
                assert (requant[bits == 0] == 0).all()
                previous_bits[id(p)] = bits.clone()
    assert 0.0 <= capacity(model).total <= 1.0


@settings(max_examples=25, deadline=None)
@given(
    variant=st.sampled_from(["classification", "rl"]),
    seed=st.integers(0, 2**16),
    tasks=st.integers(1, 3),
)
def test_state_dict_round_trip_restores_identical_behaviour(variant, seed, tasks):
    gen = torch.Generator().manual_seed(seed)
    model = make_trunk(variant, seed)
    set_f_prior(model, 1e-12)
    for task in range(tasks):
        sgd_steps(model, 3, 0.5, gen)
        fake_task_end(model, task, gen, 4.0)
    restored = make_trunk(variant, seed + 1)
    restored.load_state_dict(model.state_dict())
    x = torch.randn(5, 2, 3, 3, generator=gen)
    assert torch.equal(model(x), restored(x))
    grads = [torch.randn(p.shape, generator=gen) for p in model.parameters()]
    for net in (model, restored):
        for p, g in zip(net.parameters(), grads, strict=True):
            p.data.add_(g)
        clip_(net)
        fake_task_end(net, tasks, torch.Generator().manual_seed(seed), 4.0)
    for (ka, a), (kb, b) in zip(
        model.state_dict().items(), restored.state_dict().items(), strict=True
    ):
        assert ka == kb and torch.equal(a, b), ka
    assert capacity(model) == capacity(restored)


def test_capacity_counts_bits_over_the_budget():
    model = make_trunk("classification", 0)
    set_f_prior(model, 1e-12)
    assert capacity(model).total == 0
    layers = blip_layers(model)
    layers[0].weight_bits.fill_(MAX_BIT)
    cap = capacity(model)
    n0 = layers[0].weight.numel()
    assert cap.per_layer["0"] == n0 / (n0 + layers[0].bias.numel())
    assert cap.per_layer["3"] == 0
    assert cap.total == n0 / cap.num_params
    assert cap.frozen_bits == n0 * MAX_BIT
