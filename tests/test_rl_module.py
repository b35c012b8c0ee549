"""The continual PPO RLModule without Ray: forward, values, masking, state round trips."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from blip_ray import quant
from blip_ray.rl.module import MASKED_LOGIT, ContinualPPOModule, ModuleSettings

ATARI_COUNTS = (14, 18, 18, 18, 18, 6)
IMAGE_SPACE = gym.spaces.Box(0, 255, (84, 84, 4), np.uint8)
VECTOR_SPACE = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)


def build(
    space: gym.spaces.Box,
    settings: ModuleSettings,
    *,
    actions: int,
    inference_only: bool = False,
) -> ContinualPPOModule:
    return RLModuleSpec(
        module_class=ContinualPPOModule,
        observation_space=space,
        action_space=gym.spaces.Discrete(actions),
        model_config=settings.to_dict(),
        inference_only=inference_only,
    ).build()


@pytest.fixture(scope="module")
def atari_settings() -> ModuleSettings:
    return ModuleSettings(trunk="atari_cnn", action_counts=ATARI_COUNTS, quantized=True)


@pytest.fixture(scope="module")
def atari_module(atari_settings: ModuleSettings) -> ContinualPPOModule:
    return build(IMAGE_SPACE, atari_settings, actions=18)


def frames(batch: int = 3) -> torch.Tensor:
    return torch.randint(0, 256, (batch, 84, 84, 4), dtype=torch.uint8)


def test_paper_trunk_and_heads(atari_module: ContinualPPOModule) -> None:
    trunk_params = sum(p.numel() for p in atari_module.trunk.parameters())
    assert trunk_params == 6_538_464  # conv 32-64-128 + fc 1024 (models/atari.py)
    assert len(quant.blip_layers(atari_module)) == 4
    assert [head.out_features for head in atari_module.pi] == list(ATARI_COUNTS)
    assert all(head.out_features == 1 for head in atari_module.vf)
    assert not any(isinstance(h, quant.QuantMixin) for h in [*atari_module.pi, *atari_module.vf])
    assert atari_module.action_counts.tolist() == list(ATARI_COUNTS)


@pytest.mark.parametrize("task", [0, 5])
def test_forward_masks_actions_past_the_game(atari_module: ContinualPPOModule, task: int) -> None:
    atari_module.set_active_task(task)
    out = atari_module.forward_exploration({Columns.OBS: frames()})
    logits = out[Columns.ACTION_DIST_INPUTS]
    count = ATARI_COUNTS[task]
    assert logits.shape == (3, 18) and set(out) == {Columns.ACTION_DIST_INPUTS}
    assert torch.all(logits[:, count:] == MASKED_LOGIT)
    assert torch.all(logits[:, :count].abs() < 1.0)  # small-gain policy head: near uniform
    dist = atari_module.get_exploration_action_dist_cls().from_logits(logits)
    actions = torch.stack([dist.sample() for _ in range(200)])
    assert int(actions.max()) < count
    assert torch.isfinite(dist.entropy()).all()
    atari_module.set_active_task(0)


def test_train_forward_and_values(atari_module: ContinualPPOModule) -> None:
    batch = {Columns.OBS: frames(5)}
    out = atari_module.forward_train(batch)
    assert out[Columns.EMBEDDINGS].shape == (5, 1024)
    values = atari_module.compute_values(batch, embeddings=out[Columns.EMBEDDINGS])
    assert values.shape == (5,)
    torch.testing.assert_close(values, atari_module.compute_values(batch))
    atari_module.set_active_task(3)
    assert not torch.allclose(values, atari_module.compute_values(batch))  # task 3's critic
    atari_module.set_active_task(0)


def test_images_scaled_like_the_official_cnn(atari_module: ContinualPPOModule) -> None:
    raw = frames(2)
    expected = atari_module.trunk(raw.permute(0, 3, 1, 2).float() / 255.0)
    torch.testing.assert_close(atari_module.features(raw), expected)


def test_state_round_trip_carries_task_and_blip_state(
    atari_module: ContinualPPOModule, atari_settings: ModuleSettings
) -> None:
    atari_module.set_active_task(4)
    atari_module.record_returns(0, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [6.0, 5.0, 4.0, 3.0, 2.0, 1.0])
    atari_module.trunk.conv1.weight_bits.fill_(3)
    state = atari_module.get_state()
    restored = build(IMAGE_SPACE, atari_settings, actions=18)
    restored.set_state(state)
    assert int(restored.active_task) == 4 and int(restored.tasks_done) == 1
    assert restored.finished_rows() == [[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]]
    assert int(restored.trunk.conv1.weight_bits.min()) == 3
    for key, value in atari_module.state_dict().items():
        torch.testing.assert_close(restored.state_dict()[key], value, equal_nan=True)
    atari_module.trunk.conv1.weight_bits.zero_()
    atari_module.set_active_task(0)


def test_weight_sync_state_leaves_blip_buffers_on_the_learner(
    atari_module: ContinualPPOModule, atari_settings: ModuleSettings
) -> None:
    synced = atari_module.get_state(inference_only=True)
    assert not any(key.endswith(("_bits", "_fisher", "_fisher_old", "_prev")) for key in synced)
    assert {"active_task", "tasks_done", "return_matrix", "trunk.fc.weight"} <= set(synced)
    runner_copy = build(IMAGE_SPACE, atari_settings, actions=18, inference_only=True)
    assert not quant.blip_layers(runner_copy)  # plain trunk, same parameter names
    atari_module.set_active_task(2)
    runner_copy.set_state(synced | atari_module.get_state(inference_only=True))
    assert int(runner_copy.active_task) == 2
    obs = {Columns.OBS: frames(2)}
    torch.testing.assert_close(
        runner_copy.forward_inference(obs)[Columns.ACTION_DIST_INPUTS],
        atari_module.forward_inference(obs)[Columns.ACTION_DIST_INPUTS],
    )
    atari_module.set_active_task(0)


def test_runner_copy_acts_in_eval_mode_without_switching() -> None:
    settings = ModuleSettings(trunk="mlp", action_counts=(2, 3), task_state="gates")
    learner = build(VECTOR_SPACE, settings, actions=3)
    runner_copy = build(VECTOR_SPACE, settings, actions=3, inference_only=True)
    runner_copy.set_state(learner.get_state(inference_only=True))
    assert learner.training and not any(m.training for m in runner_copy.modules())
    obs = {Columns.OBS: torch.randn(5, 4)}
    for forward in ("forward_exploration", "forward_inference"):
        want = getattr(learner, forward)(obs)[Columns.ACTION_DIST_INPUTS]
        assert learner.training  # RLlib's switch back after the call
        got = getattr(runner_copy, forward)(obs)[Columns.ACTION_DIST_INPUTS]
        assert not runner_copy.training and not got.requires_grad
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_mlp_trunk_for_vector_observations() -> None:
    settings = ModuleSettings(trunk="mlp", action_counts=(2, 3), quantized=True)
    module = build(VECTOR_SPACE, settings, actions=3)
    assert len(quant.blip_layers(module)) == 2 and module.feature_dim == 64
    module.set_active_task(0)
    logits = module.forward_inference({Columns.OBS: torch.randn(4, 4)})[Columns.ACTION_DIST_INPUTS]
    assert logits.shape == (4, 3) and torch.all(logits[:, 2] == MASKED_LOGIT)
    assert module.policy_logits(torch.randn(4, 4), 1).shape == (4, 3)
    plain = build(VECTOR_SPACE, ModuleSettings(trunk="mlp", action_counts=(2, 3)), actions=3)
    assert not quant.blip_layers(plain)
    assert set(plain.get_state()) == set(module.get_state(inference_only=True))


def test_rejects_inconsistent_spaces() -> None:
    settings = ModuleSettings(trunk="mlp", action_counts=(2, 5))
    with pytest.raises(ValueError, match="smaller than a task"):
        build(VECTOR_SPACE, settings, actions=3)
    with pytest.raises(ValueError, match="vector observations"):
        build(IMAGE_SPACE, settings, actions=5)
    with pytest.raises(ValueError, match="unknown trunk"):
        ModuleSettings(trunk="resnet", action_counts=(2,))
    module = build(VECTOR_SPACE, settings, actions=5)
    with pytest.raises(IndexError):
        module.set_active_task(2)
