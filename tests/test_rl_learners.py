"""The continual PPO learner built in-process (no Ray): clipping, task lifecycle, methods, state."""

from __future__ import annotations

import copy
import dataclasses
import random
import types
from typing import Any

import numpy as np
import pytest
import torch
from cl_fixtures import continual_settings
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.connectors.learner import GeneralAdvantageEstimation
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner
from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME

import blip_ray.quant
from blip_ray import quant
from blip_ray.methods import METHODS, ContinualMethod, MethodConfig, TaskSamples, register_method
from blip_ray.rl.config import build_ppo_config
from blip_ray.rl.learners import (
    ContinualPPOLearner,
    ValueTargetsWithoutGradients,
    _all_finite,
    rollout_samples,
    task_learning_rate,
)
from blip_ray.rl.sequences import get_rl_sequence
from blip_ray.rl.settings import PpoSettings

STEPS = 96
PPO = {"num_envs": 2, "rollout_length": 48, "num_minibatches": 2, "num_epochs": 2, "lr": 0.05}
MINIBATCH = PpoSettings(**PPO).minibatch_size


def make_config(method: str, **hp: Any):  # noqa: ANN201
    settings = continual_settings(method, hp=hp, num_tasks=2, steps_per_task=4 * STEPS, ppo=PPO)
    return build_ppo_config(settings)


def make_learner(config: Any) -> Any:
    return config.build_learner(env=get_rl_sequence("cartpole3").make_env(0))


def train(learner: Any, runner: SingleAgentEnvRunner, *, lifetime: int = STEPS) -> dict:
    """One PPO update on fresh episodes sampled with the learner's current weights."""
    runner.set_state(learner.get_state(components="rl_module", inference_only=True))
    episodes = runner.sample(num_timesteps=STEPS, random_actions=False)
    return learner.update(
        episodes=episodes,
        timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: lifetime},
        num_epochs=PPO["num_epochs"],
        minibatch_size=MINIBATCH,
        shuffle_batch_per_epoch=True,
    )


def module_of(learner: Any) -> Any:
    return learner.module[DEFAULT_MODULE_ID].unwrapped()


def optimizer_of(learner: Any) -> torch.optim.Optimizer:
    return learner.get_optimizers_for_module(DEFAULT_MODULE_ID)[0][1]


def violations(module: Any) -> int:
    """Elements of quantized parameters outside BLIP's clipping interval."""
    count = 0
    for layer in quant.blip_layers(module):
        for name, param in layer.blip_params():
            lower, upper = layer.state(name, "lower"), layer.state(name, "upper")
            count += int(((param < lower) | (param > upper)).sum())
    return count


@pytest.fixture(scope="module")
def blip_config() -> Any:
    return make_config("blip")


@pytest.fixture(scope="module")
def runner(blip_config: Any) -> SingleAgentEnvRunner:
    return SingleAgentEnvRunner(config=blip_config)


def test_learning_rate_restarts_and_decays_per_task() -> None:
    rate = lambda steps, task: task_learning_rate(  # noqa: E731
        1.0, lifetime_steps=steps, task=task, steps_per_task=100
    )
    assert [rate(s, 0) for s in (0, 25, 100, 150)] == [1.0, 0.75, 0.0, 0.0]
    assert [rate(s, 1) for s in (100, 150, 200)] == [1.0, 0.5, 0.0]


def test_blip_clips_once_per_optimizer_step_within_bounds(
    blip_config: Any, runner: SingleAgentEnvRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    learner = make_learner(blip_config)
    assert isinstance(learner, ContinualPPOLearner)
    train(learner, runner)
    learner.finish_task(0)
    assert quant.capacity(module_of(learner)).total > 0
    learner.start_task(1)
    module = module_of(learner)
    frozen = [
        (layer, name, param.detach().clone())
        for layer in quant.blip_layers(module)
        for name, param in layer.blip_params()
    ]
    assert any(int(layer.state(name, "bits").max()) > 0 for layer, name, _ in frozen)

    clips, steps = [], []
    real_clip = blip_ray.quant.clip_
    monkeypatch.setattr(blip_ray.quant, "clip_", lambda model: (clips.append(1), real_clip(model)))
    optimizer_of(learner).register_step_post_hook(lambda *_: steps.append(len(clips)))
    train(learner, runner, lifetime=4 * STEPS + STEPS)
    assert len(steps) >= 2 * (STEPS // MINIBATCH)
    assert len(clips) == len(steps)
    assert steps == list(range(len(steps)))  # each step ran before its own clip, none skipped
    assert violations(module) == 0
    for layer, name, before in frozen:
        bits = layer.state(name, "bits").float()
        moved = (getattr(layer, name).detach() - before).abs()
        allowed = layer.bounds[name] * torch.exp2(-bits)
        assert bool((moved <= allowed + 1e-7).all()), f"{name} left its frozen bits"

    # RLlib's plain PPO learner on the same quantized module and state does not clip.
    plain_config = blip_config.copy(copy_frozen=False).learners(learner_class=PPOTorchLearner)
    plain = make_learner(plain_config)
    module_of(plain).set_state(module.get_state())
    assert violations(module_of(plain)) == 0
    clips.clear()
    train(plain, runner)
    assert not clips and violations(module_of(plain)) > 0


@pytest.mark.parametrize("rule", ["keep", "reinit"])
def test_blip_zero_bit_rule_reaches_the_learners_task_end(
    rule: str, runner: SingleAgentEnvRunner
) -> None:
    # F_prior 1e-12 (the sequence's is 5e-18) leaves a few hundred trunk parameters without bits
    learner = make_learner(make_config("blip", f_prior=1e-12, zero_bit_weights=rule))
    assert learner.method.config.zero_bit_weights == rule
    assert learner.method.config.fisher_batch_size == 62  # over the sequence's RL defaults
    train(learner, runner)
    module = module_of(learner)
    trained = {
        (id(layer), name): param.detach().clone()
        for layer in quant.blip_layers(module)
        for name, param in layer.blip_params()
    }
    learner.finish_task(0)
    unfrozen_seen = 0
    for layer in quant.blip_layers(module):
        for name, param in layer.blip_params():
            bits, before = layer.state(name, "bits"), trained[(id(layer), name)]
            unfrozen = bits == 0
            unfrozen_seen += int(unfrozen.sum())
            expected = quant.quantize(before, bits, layer.bounds[name])
            assert torch.equal(param[~unfrozen].detach(), expected[~unfrozen])
            if rule == "keep":
                assert torch.equal(param[unfrozen].detach(), before[unfrozen])
            else:
                assert (param[unfrozen].abs() <= layer.bounds[name]).all()
                assert (param[unfrozen] != before[unfrozen]).all()
    assert unfrozen_seen > 0, "the test must leave some parameters without bits"


def test_update_is_rllibs_to_the_bit_without_its_gradient_checks_and_value_graph(
    blip_config: Any, runner: SingleAgentEnvRunner
) -> None:
    """The fused finiteness check and the GAE value pass without autograd change nothing: the
    same update with RLlib's own GAE piece and ``apply_gradients`` gives the same weights."""
    ours = make_learner(blip_config)
    rllib = make_learner(blip_config)
    rllib.set_state(ours.get_state())
    pieces = rllib._learner_connector.connectors
    [i] = [i for i, c in enumerate(pieces) if isinstance(c, ValueTargetsWithoutGradients)]
    assert not any(type(c) is GeneralAdvantageEstimation for c in pieces)
    pieces[i] = GeneralAdvantageEstimation(gamma=pieces[i].gamma, lambda_=pieces[i].lambda_)

    def rllib_apply_gradients(self: ContinualPPOLearner, gradients: dict) -> None:
        PPOTorchLearner.apply_gradients(self, gradients)
        with torch.no_grad():
            self.method.after_step(self.continual_module, self.active_task)

    rllib.apply_gradients = types.MethodType(rllib_apply_gradients, rllib)
    before = {k: v.detach().clone() for k, v in module_of(ours).named_parameters()}
    value_passes = []  # (a pass over the whole batch, autograd on) per value computation
    real_values = module_of(ours).compute_values

    def compute_values(batch: dict, embeddings: Any = None) -> torch.Tensor:
        value_passes.append((embeddings is None, torch.is_grad_enabled()))
        return real_values(batch, embeddings)

    module_of(ours).compute_values = compute_values
    runner.set_state(ours.get_state(components="rl_module", inference_only=True))
    episodes = runner.sample(num_timesteps=STEPS, random_actions=False)
    for learner in (ours, rllib):
        random.seed(0), np.random.seed(0), torch.manual_seed(0)
        learner.update(
            episodes=copy.deepcopy(episodes),
            timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: STEPS},
            num_epochs=PPO["num_epochs"],
            minibatch_size=MINIBATCH,
            shuffle_batch_per_epoch=True,
        )
    assert (True, False) in value_passes and (True, True) not in value_passes
    after = dict(module_of(ours).named_parameters())
    assert any(not torch.equal(after[k], before[k]) for k in before)
    # Parameters and buffers (the NaN-filled return matrix too) equal to the bit.
    torch.testing.assert_close(
        module_of(ours).state_dict(), module_of(rllib).state_dict(), rtol=0, atol=0, equal_nan=True
    )


def test_non_finite_gradients_go_through_rllibs_handling(blip_config: Any) -> None:
    assert _all_finite([torch.ones(3), torch.zeros(2, 2)]) and _all_finite([])
    assert not _all_finite([torch.ones(3), torch.tensor([1.0, float("inf")])])
    assert not _all_finite([torch.tensor([float("nan")]), torch.ones(3)])
    learner = make_learner(blip_config)
    gradients = {pid: torch.ones_like(p) for pid, p in learner._params.items()}
    next(iter(gradients.values())).view(-1)[0] = float("nan")
    learner.apply_gradients(gradients)
    # RLlib zeroes the NaN (nan_to_num) and steps; a plain step would spread it through Adam.
    params = list(module_of(learner).parameters())
    assert all(bool(torch.isfinite(p).all()) for p in params)


def test_start_task_resets_optimizer_and_learning_rate(runner: SingleAgentEnvRunner) -> None:
    learner = make_learner(make_config("finetune"))
    optimizer = optimizer_of(learner)
    assert optimizer.defaults["eps"] == 1e-5
    train(learner, runner, lifetime=2 * STEPS)
    assert optimizer.state and optimizer.param_groups[0]["lr"] == pytest.approx(0.05 / 2)
    seq_no = learner._weights_seq_no
    learner.finish_task(0)
    learner.start_task(1)
    assert not optimizer.state and optimizer.param_groups[0]["lr"] == 0.05
    assert learner.active_task == 1 and learner._weights_seq_no > seq_no
    with pytest.raises(RuntimeError, match="active"):
        learner.finish_task(0)


def test_frozen_freezes_the_trunk_after_task_0(runner: SingleAgentEnvRunner) -> None:
    config = make_config("frozen")
    learner = make_learner(config)
    module = module_of(learner)
    train(learner, runner)
    learner.finish_task(0)
    learner.start_task(1)
    trunk = [p.detach().clone() for p in module.trunk.parameters()]
    heads = [h.weight.detach().clone() for h in module.pi]
    train(learner, runner, lifetime=5 * STEPS)
    assert all(torch.equal(a, b) for a, b in zip(trunk, module.trunk.parameters(), strict=True))
    assert torch.equal(heads[0], module.pi[0].weight)  # other tasks' heads get no gradient
    assert not torch.equal(heads[1], module.pi[1].weight)

    restored = make_learner(config)  # the freeze is a rule, re-applied from the restored task
    restored.set_state(learner.get_state())
    assert restored.active_task == 1
    assert not any(p.requires_grad for p in module_of(restored).trunk.parameters())


def test_online_ewc_accumulates_fisher_and_penalises(runner: SingleAgentEnvRunner) -> None:
    config = make_config("online_ewc")
    learner = make_learner(config)
    assert learner.method.config.lamb == 5000.0
    train(learner, runner)
    learner.finish_task(0)
    first = {n: f.clone() for n, f in learner.method.fisher.items()}
    assert set(first) == {n for n, _ in module_of(learner).trunk.named_parameters()}
    assert sum(float(f.sum()) for f in first.values()) > 0
    learner.start_task(1)
    results = train(learner, runner, lifetime=5 * STEPS)
    assert float(results[DEFAULT_MODULE_ID]["method_penalty"].peek()) > 0
    penalty = learner.method.penalty(module_of(learner), 1, None)
    assert penalty is not None and float(penalty.detach()) > 0  # the trunk left the anchor
    learner.finish_task(1)
    assert all(bool((learner.method.fisher[n] >= f).all()) for n, f in first.items())

    restored = make_learner(config)
    restored.set_state(learner.get_state())
    for name, fisher in learner.method.fisher.items():
        torch.testing.assert_close(restored.method.fisher[name], fisher)
        torch.testing.assert_close(restored.method.anchor[name], learner.method.anchor[name])


def test_unknown_method_hyperparameters_are_rejected() -> None:
    with pytest.raises(ValueError, match="no hyperparameter"):
        make_config("blip", lamb=1.0)
    with pytest.raises(KeyError, match="known"):
        make_config("ewc_offline")


def test_rollout_samples_are_shuffled_minibatches_scored_by_the_task_head() -> None:
    states = torch.arange(2000, dtype=torch.float32)[:, None]
    samples = rollout_samples(states, 1)
    batches = [x for x, target in samples.batches(62) if target is None]
    assert len(batches) == 32 and all(b.shape == (62, 1) for b in batches)  # 1984 of 2000
    seen = torch.cat(batches).flatten()
    assert len(set(seen.tolist())) == 1984 and not torch.equal(seen, seen.sort().values)
    assert len(list(samples.batches(62, limit=5))) == 5
    assert [b.shape[0] for b, _ in rollout_samples(states[:10], 0).batches(62)] == [10]
    with pytest.raises(RuntimeError, match="no training batch recorded"):
        next(rollout_samples(None, 0).batches(62))


def test_a_method_registered_once_runs_in_the_ppo_learner(runner: SingleAgentEnvRunner) -> None:
    """One class behind the one registry serves the RL track with no RL-specific code: its
    end-of-task step reads the last batch through TaskSamples, its penalty enters PPO's loss."""

    @dataclasses.dataclass(frozen=True)
    class AnchorConfig(MethodConfig):
        strength: float = 1.0

    class Anchor(ContinualMethod):
        config_class = AnchorConfig
        tracks = ("supervised", "rl")

        def setup(self, model: Any) -> None:
            self.anchor: dict[str, torch.Tensor] | None = None
            self.seen: list[tuple[int, int]] = []

        def penalty(self, model: Any, task_id: int, inputs: Any) -> torch.Tensor | None:
            if self.anchor is None:
                return None
            params = dict(model.trunk.named_parameters())
            return sum((params[n] - a).square().sum() for n, a in self.anchor.items())

        def after_task(self, model: Any, task_id: int, *, samples: TaskSamples) -> None:
            batches = list(samples.batches(16, limit=3))
            self.seen.append((len(batches), int(samples.logits(model, batches[0][0]).shape[-1])))
            self.anchor = {n: p.detach().clone() for n, p in model.trunk.named_parameters()}

    register_method("anchor_for_test")(Anchor)
    try:
        learner = make_learner(make_config("anchor_for_test", strength=2.0))
        assert learner.method.config.strength == 2.0
        train(learner, runner)
        learner.finish_task(0)
        assert learner.method.seen == [(3, 2)]  # 3 minibatches of states, CartPole's 2 actions
        learner.start_task(1)
        results = train(learner, runner, lifetime=5 * STEPS)
        assert float(results[DEFAULT_MODULE_ID]["method_penalty"].peek()) > 0
    finally:
        METHODS.pop("anchor_for_test")
