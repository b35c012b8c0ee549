"""The continual-RL config builder: the paper's PPO values, sizing, validation, and (in its own Ray
instance with a logical GPU) where the learner runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from blip_ray.rl import (
    ContinualPPOLearner,
    ContinualPPOModule,
    ContinualTaskCallback,
    PpoSettings,
    RlExperimentConfig,
    build_ppo_config,
    size_env_runners,
    stop_criteria,
)
from blip_ray.rl.module import ModuleSettings
from blip_ray.rl.settings import settings_from_config


def test_atari6_defaults_are_the_papers() -> None:
    cfg = RlExperimentConfig(num_env_runners=0, num_gpus_per_learner=0)
    config = build_ppo_config(cfg)
    assert config.train_batch_size_per_learner == 2000 and config.minibatch_size == 250
    assert config.num_epochs == 4 and config.clip_param == 0.1
    assert config.vf_loss_coeff == 0.25  # 0.5 x the official 0.5 * (v - R)^2
    assert config.entropy_coeff == 0.01 and config.lr == 2.5e-4
    assert config.grad_clip == 0.5 and config.grad_clip_by == "global_norm"
    assert (config.gamma, config.lambda_) == (0.99, 0.95)
    assert not config.use_kl_loss
    assert config.num_envs_per_env_runner == 16 and config.rollout_fragment_length == 125
    assert config.learner_class is ContinualPPOLearner
    assert config.callbacks_class is ContinualTaskCallback
    assert config.env_config == {"sequence": "atari6", "task": 0}
    spec = config.rl_module_spec
    assert spec.module_class is ContinualPPOModule
    module = ModuleSettings.from_dict(spec.model_config)
    assert module.trunk == "atari_cnn" and module.quantized
    assert module.action_counts == (14, 18, 18, 18, 18, 6)
    settings = settings_from_config(config)
    assert settings.steps_per_task == 10_000_000 and settings.num_tasks == 6
    assert settings.adam_eps == 1e-5 and settings.eval_episodes == 10
    assert stop_criteria(cfg) == {"tasks_done": 6}


def test_baselines_get_a_plain_trunk_and_their_defaults() -> None:
    for method in ("finetune", "ft_fix", "online_ewc"):
        config = build_ppo_config(RlExperimentConfig(method=method, num_env_runners=0))
        assert not ModuleSettings.from_dict(config.rl_module_spec.model_config).quantized
    cfg = RlExperimentConfig(sequence="cartpole3", method="online_ewc", num_tasks=2)
    settings = settings_from_config(build_ppo_config(cfg))
    assert settings.num_tasks == 2 and settings.steps_per_task == 49_152
    assert cfg.ppo_settings.lr == 3e-3  # the sequence's CPU settings


@pytest.mark.parametrize(("cpus", "runners"), [(1, 0), (2, 0), (3, 2), (4, 2), (6, 4), (64, 4)])
def test_env_runners_sized_from_cpus(cpus: int, runners: int) -> None:
    assert size_env_runners(16, cpus) == runners


def test_invalid_configs_are_rejected() -> None:
    with pytest.raises(ValueError, match="below one PPO batch"):
        RlExperimentConfig(steps_per_task=1000)
    with pytest.raises(ValueError, match="num_tasks"):
        RlExperimentConfig(sequence="cartpole3", num_tasks=4)
    with pytest.raises(ValueError, match="divide"):
        PpoSettings(num_envs=3, rollout_length=5, num_minibatches=4)
    with pytest.raises(ValueError, match="split"):
        build_ppo_config(RlExperimentConfig(num_env_runners=3))


GPU_PROBE = """
import json, os
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
import ray
from blip_ray.rl.config import RlExperimentConfig, build_ppo_config

def learner_gpus():
    cfg = RlExperimentConfig(sequence="cartpole3", method="blip", num_env_runners=0)
    return build_ppo_config(cfg).num_gpus_per_learner

ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False,
         _node_ip_address="127.0.0.1", configure_logging=False, log_to_driver=False)
probe = ray.remote(learner_gpus)
print(json.dumps({
    "driver": learner_gpus(),
    "trial_with_gpu": ray.get(probe.options(num_gpus=1).remote()),
    "trial_without_gpu": ray.get(probe.options(num_gpus=0).remote()),
}))
ray.shutdown()
"""


@pytest.mark.ray
def test_a_trial_puts_its_learner_on_a_gpu_only_when_given_one() -> None:
    """On a cluster advertising one (logical) GPU: the driver sees it, a trial holding it gets a
    GPU learner, a trial without one keeps its learner on the CPU."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run(
        [sys.executable, "-c", GPU_PROBE], env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-3000:]
    gpus = json.loads(done.stdout.strip().splitlines()[-1])
    assert gpus == {"driver": 1.0, "trial_with_gpu": 1.0, "trial_without_gpu": 0.0}
