"""BLIP's formulas: the layers' task-end step against a direct evaluation of DESIGN.md."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from blip_ray.quant import (
    ZERO_BIT_WEIGHTS,
    QuantConv2d,
    QuantLinear,
    allocate_bits,
    clip_,
    clip_bounds,
    quantize,
    quantize_task_end,
)

MAX_BIT = 20


def direct_quantize(w: torch.Tensor, bits: torch.Tensor, bound: float) -> torch.Tensor:
    """Element by element in float32 (the layers' precision), half-to-even like torch.round."""
    b32, out = np.float32(bound), []
    for wi, bi in zip(w.flatten().numpy(), bits.flatten().tolist(), strict=True):
        scale = np.float32(2.0**bi)
        out.append(0.0 if bi == 0 else np.round(wi / b32 * scale) / scale * b32)
    return torch.tensor(np.array(out, dtype=np.float32)).view_as(w)


def direct_bits(bits, fisher, fisher_old, t):
    ig = (0.5 / math.log(2)) * torch.log((fisher + (t + 1) * fisher_old) / ((t + 2) * fisher_old))
    return torch.minimum(
        bits.long() + torch.clamp(torch.ceil(ig), min=0).long(), torch.tensor(MAX_BIT)
    )


def two_step_clip(w, prev, bits, bound):
    step = bound * 2.0 ** (-bits.double())
    w = prev + torch.clamp(w - prev, -step, step)
    outer = bound * (1 - 2.0**-MAX_BIT)
    return torch.clamp(w, -outer, outer)


def test_quantize_matches_direct_rounding_and_zero_bits():
    w = (torch.rand(400) * 2 - 1) * 0.7
    bits = torch.randint(0, MAX_BIT + 1, (400,), dtype=torch.int8)
    bits[:50] = 0
    expected = direct_quantize(w, bits, 0.7)
    torch.testing.assert_close(quantize(w, bits, 0.7), expected, rtol=0, atol=1e-7)
    assert (quantize(w, bits, 0.7)[:50] == 0).all()


@pytest.mark.parametrize("variant", ["classification", "rl"])
def test_layer_task_ends_follow_the_formulas_over_several_tasks(variant):
    f_prior = 1e-15
    layer = QuantLinear(30, 20, variant=variant, f_prior=f_prior)
    scale = 30 if variant == "classification" else 30  # max(30, 20) == 30 for rl
    bounds = {"weight": 6 / math.sqrt(scale), "bias": 1.0}
    ref = {
        n: {
            "bits": torch.zeros_like(p, dtype=torch.long),
            "old": torch.full_like(p, f_prior * scale).double(),
        }
        for n, p in layer.blip_params()
    }
    for t in range(5):
        with torch.no_grad():
            for _, p in layer.blip_params():
                p.add_(torch.randn_like(p) * 0.05).clamp_(-0.9, 0.9)
        for name, p in layer.blip_params():
            # Fisher spread over many decades so some entries gain bits and some do not.
            fisher = f_prior * scale * torch.exp(torch.randn_like(p) * 4)
            layer.state(name, "fisher").copy_(fisher)
            ref[name]["fisher"] = fisher.double()
            ref[name]["w"] = p.detach().clone()
        layer.end_task(t)
        for name, p in layer.blip_params():
            r, bound = ref[name], bounds[name]
            expected_bits = direct_bits(r["bits"], r["fisher"], r["old"], t)
            assert torch.equal(layer.state(name, "bits").long(), expected_bits)
            expected_w = direct_quantize(r["w"], expected_bits, bound)
            torch.testing.assert_close(p.detach(), expected_w, rtol=0, atol=1e-7)
            assert torch.equal(layer.state(name, "prev"), p.detach())
            r["old"] = ((t + 1) * r["old"] + r["fisher"]) / (t + 2)
            torch.testing.assert_close(
                layer.state(name, "fisher_old").double(), r["old"], rtol=1e-6, atol=0
            )
            assert (layer.state(name, "fisher") == 0).all()
            r["bits"] = expected_bits
        assert ref["weight"]["bits"].sum() > 0, "test must exercise nonzero bits"
    assert layer.weight_bits.max() > 1


def test_allocate_bits_never_exceeds_max_bit_even_for_huge_gain():
    bits = torch.full((10,), 19, dtype=torch.int8)
    out = allocate_bits(bits, torch.full((10,), 1e30), torch.full((10,), 1e-30), task=0, max_bit=20)
    assert (out == 20).all()


def test_allocate_bits_rejects_nan_fisher():
    with pytest.raises(FloatingPointError, match="NaN"):
        allocate_bits(
            torch.zeros(3, dtype=torch.int8),
            torch.tensor([float("nan"), 0, 0]),
            torch.ones(3),
            task=0,
            max_bit=20,
        )


def test_single_clamp_equals_two_step_clipping():
    torch.manual_seed(1)
    bound = 0.3
    bits = torch.randint(0, MAX_BIT + 1, (5000,), dtype=torch.int8)
    prev = quantize((torch.rand(5000) * 2 - 1) * bound, bits, bound)
    lower, upper = clip_bounds(prev, bits, bound, max_bit=MAX_BIT)
    w = prev + torch.randn(5000) * bound * 2.0 ** (-bits.float()) * 2  # half of them out of range
    w[:100] = torch.sign(torch.randn(100)) * 2 * bound  # beyond the outer range
    one = torch.clamp(w, lower, upper)
    two = two_step_clip(w.double(), prev.double(), bits, bound).float()
    # prev + (w - prev) may differ from w by float rounding; one ulp of the range is the limit.
    assert (one - two).abs().max() <= bound * 2**-23
    assert (one != w).sum() > 1000, "the test must clip many elements"


def test_conv_layer_uses_conv_fans_for_both_variants():
    conv_c = QuantConv2d(4, 32, 8, stride=4, variant="classification", f_prior=1.0)
    conv_r = QuantConv2d(4, 32, 8, stride=4, variant="rl", f_prior=1.0)
    fan_in = 4 * 8 * 8
    assert conv_c.bounds["weight"] == pytest.approx(6 / math.sqrt(fan_in))
    assert conv_r.bounds["weight"] == pytest.approx(6 / math.sqrt(max(fan_in, 32)))
    assert (conv_c.weight_fisher_old == fan_in).all()
    conv_r2 = QuantConv2d(3, 64, 3, variant="rl", f_prior=1.0)  # 27 < 64: m = C_out
    assert (conv_r2.weight_fisher_old == 64).all() and (conv_r2.bias_fisher_old == 64).all()
    assert conv_c.bias.abs().max() == 0
    assert conv_c.weight.abs().max() <= conv_c.bounds["weight"]


def test_rl_variant_initialises_orthogonal_with_relu_gain():
    layer = QuantLinear(64, 16, variant="rl", f_prior=1.0)  # bound 6/8 leaves the init unclamped
    gram = layer.weight @ layer.weight.t()
    torch.testing.assert_close(gram, 2.0 * torch.eye(16), atol=1e-4, rtol=0)


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="variant"):
        QuantLinear(3, 3, variant="bogus")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_bit"):
        QuantLinear(3, 3, max_bit=0)
    layer = QuantLinear(3, 3)  # F_prior left at 0
    with pytest.raises(ValueError, match="F_prior"):
        layer.end_task(0)


def test_fresh_layer_clip_interval_is_clip_bounds_at_zero():
    layer = QuantConv2d(3, 4, 2, variant="rl", f_prior=1.0)
    for name, p in layer.blip_params():
        lower, upper = clip_bounds(
            torch.zeros_like(p),
            torch.zeros_like(p, dtype=torch.int8),
            layer.bounds[name],
            max_bit=MAX_BIT,
        )
        assert torch.equal(layer.state(name, "lower"), lower)
        assert torch.equal(layer.state(name, "upper"), upper)


def task_end_with_known_bits(rule: str, *, seed: int = 7, generator=None) -> tuple:
    """A QuantLinear(6, 4) with half of its weights and biases at 0 bits, the rest at 1..20, after
    one task end under ``rule``; returns it, its values before and its bit masks."""
    torch.manual_seed(0)
    layer = QuantLinear(6, 4, variant="rl", f_prior=1e-15)
    with torch.no_grad():
        layer.bias.uniform_(-0.9, 0.9)
    bits = {}
    for name, p in layer.blip_params():
        pattern = torch.randint(1, MAX_BIT + 1, p.shape, generator=torch.Generator().manual_seed(1))
        pattern.view(-1)[::2] = 0
        layer.state(name, "bits").copy_(pattern)
        bits[name] = pattern  # a zero Fisher gains no bits: the allocation stays this one
    before = {name: p.detach().clone() for name, p in layer.blip_params()}
    torch.manual_seed(seed)
    layer.end_task(0, zero_bit_weights=rule, generator=generator)
    return layer, before, bits


def test_zero_bit_rules_at_a_task_end():
    """``zero`` sets 0-bit parameters to 0.0, ``keep`` leaves their trained values, ``reinit``
    draws them as the official commented-out line; positions with bits are the same under all."""
    ends = {rule: task_end_with_known_bits(rule) for rule in ZERO_BIT_WEIGHTS}
    zero, before, bits = ends["zero"]
    for name, p in zero.blip_params():
        unfrozen = bits[name] == 0
        assert unfrozen.any() and (~unfrozen).any()
        assert torch.equal(zero.state(name, "bits"), bits[name].to(torch.int8))
        expected = quantize(before[name], bits[name], zero.bounds[name])
        assert torch.equal(p.detach(), expected)  # the quantizer alone, as without the option
        assert (p[unfrozen] == 0.0).all()
        bound = zero.bounds[name]
        for rule in ("keep", "reinit"):
            other = getattr(ends[rule][0], name).detach()
            assert torch.equal(other[~unfrozen], p[~unfrozen].detach()), (rule, name)
            assert torch.equal(ends[rule][0].state(name, "prev"), other)
        kept = getattr(ends["keep"][0], name).detach()
        assert torch.equal(kept[unfrozen], before[name][unfrozen])
        drawn = getattr(ends["reinit"][0], name).detach()
        assert (drawn[unfrozen] >= -bound).all() and (drawn[unfrozen] < bound).all()
        assert (drawn[unfrozen] != before[name][unfrozen]).all()
        assert drawn[unfrozen].std() > bound / 4  # spread over the range, not near 0


def test_reinit_is_the_official_draw_from_the_runs_generator():
    layer, before, bits = task_end_with_known_bits("reinit", seed=3)
    again, _, _ = task_end_with_known_bits("reinit", seed=3)
    other, _, _ = task_end_with_known_bits("reinit", seed=4)
    torch.manual_seed(3)
    for name, p in layer.blip_params():
        unfrozen, bound = bits[name] == 0, layer.bounds[name]
        # out_t = torch.empty_like(input).uniform_(-1.0,1.0) on the input / bound scale, drawn for
        # the weight, then the bias (registration order), from the seeded default generator
        official = torch.empty_like(before[name]).uniform_(-1.0, 1.0) * bound
        assert torch.equal(p[unfrozen].detach(), official[unfrozen])
        assert torch.equal(p.detach(), getattr(again, name).detach())
        assert not torch.equal(p[unfrozen].detach(), getattr(other, name)[unfrozen].detach())
    generator = torch.Generator().manual_seed(3)
    explicit, _, _ = task_end_with_known_bits("reinit", seed=99, generator=generator)
    assert torch.equal(explicit.weight, layer.weight)  # an explicit generator is used instead


@pytest.mark.parametrize("rule", ZERO_BIT_WEIGHTS)
def test_zero_bit_rules_leave_frozen_bits_to_the_clipping(rule):
    """After the task end, training moves a parameter with bits at most one step from its frozen
    value and a 0-bit one at most ``bound`` from the value the rule set."""
    layer, _, bits = task_end_with_known_bits(rule)
    frozen = {name: p.detach().clone() for name, p in layer.blip_params()}
    with torch.no_grad():
        for _, p in layer.blip_params():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(2)))
    clip_([layer])
    for name, p in layer.blip_params():
        bound = layer.bounds[name]
        step = bound * torch.exp2(-bits[name].float())
        # up to float rounding of the difference (a few ulps of the range)
        assert ((p - frozen[name]).abs() <= step + bound * 2.0**-21).all()
        assert (p.abs() <= bound * (1 - 2.0**-MAX_BIT)).all()
        assert (p != frozen[name]).all(), "the test must move every parameter"


def test_quantize_task_end_refuses_an_unknown_rule():
    with pytest.raises(ValueError, match="zero_bit_weights: must be one of zero, keep, reinit"):
        quantize_task_end(torch.ones(2), torch.zeros(2), 1.0, zero_bit_weights="random")
