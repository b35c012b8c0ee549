"""The continual-RL config builder: the paper's PPO values, sizing, validation, and (in its own Ray
instance with a logical GPU) where the learner runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from cl_fixtures import continual_settings

from blip_ray.rl.callbacks import ContinualTaskCallback
from blip_ray.rl.config import ContinualPPOConfig, build_ppo_config
from blip_ray.rl.learners import ContinualPPOLearner, LastBatchObservations
from blip_ray.rl.module import ContinualPPOModule, ModuleSettings
from blip_ray.rl.settings import PpoSettings, RlSettings, size_env_runners


def test_atari6_defaults_are_the_papers() -> None:
    settings = continual_settings("blip", sequence="atari6")
    config = build_ppo_config(settings)
    assert isinstance(config, ContinualPPOConfig) and config.continual is settings
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
    assert settings.rl.steps_per_task == 10_000_000 and settings.num_tasks == 6
    assert settings.rl.ppo.adam_eps == 1e-5 and settings.rl.eval_episodes == 10
    # the paper's RL values of BLIP's hyperparameters come with the sequence
    blip = settings.make_method().config
    assert (blip.f_prior, blip.fisher_batches, blip.fisher_batch_size) == (5e-18, 32, 62)
    assert continual_settings("blip", hp={"f_prior": 1e-15}).make_method().config.f_prior == 1e-15


def test_the_learner_pipeline_ends_with_the_last_batch_piece() -> None:
    config = build_ppo_config(continual_settings("finetune"))
    pipeline = config.build_learner_connector(None, None)
    assert isinstance(pipeline.connectors[-1], LastBatchObservations)


def test_baselines_get_a_plain_trunk_and_their_defaults() -> None:
    for method in ("finetune", "frozen", "online_ewc"):
        config = build_ppo_config(continual_settings(method, sequence="atari6"))
        assert not ModuleSettings.from_dict(config.rl_module_spec.model_config).quantized
    settings = continual_settings("online_ewc", num_tasks=2)
    assert settings.rl.steps_per_task == 49_152
    assert settings.rl.ppo.lr == 3e-3  # the sequence's CPU settings
    assert settings.make_method().config.fisher_batch_size == 62


@pytest.mark.parametrize(("cpus", "runners"), [(1, 0), (2, 0), (3, 2), (4, 2), (6, 4), (64, 4)])
def test_env_runners_sized_from_cpus(cpus: int, runners: int) -> None:
    assert size_env_runners(16, cpus) == runners
    assert RlSettings.for_sequence("atari6", cpus=cpus).num_env_runners == runners


def test_invalid_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="steps_per_task: 1000 is below one PPO batch of 2000"):
        RlSettings.for_sequence("atari6", steps_per_task=1000)
    with pytest.raises(ValueError, match="tasks: cartpole3 has 3 tasks, got 4"):
        continual_settings("blip", num_tasks=4)
    with pytest.raises(ValueError, match="do not divide"):
        PpoSettings(num_envs=3, rollout_length=5, num_minibatches=4)
    with pytest.raises(ValueError, match=r"ppo.gamma: must be in \[0, 1\]"):
        PpoSettings(gamma=1.5)
    with pytest.raises(ValueError, match="num_env_runners: 16 envs"):
        RlSettings.for_sequence("atari6", num_env_runners=3)


def test_settings_survive_the_param_space_round_trip() -> None:
    settings = RlSettings.for_sequence("cartpole3", reference_returns={"cartpole-0": 500.0})
    assert RlSettings.from_dict(settings.to_dict()) == settings
    smoke = settings.smoke()
    assert smoke.steps_per_task == smoke.ppo.train_batch_size == 64


GPU_PROBE = """
import json, os
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
import ray
from blip_ray.rl.config import build_ppo_config
from blip_ray.rl.settings import ContinualSettings, RlSettings

def learner_gpus():
    rl = RlSettings.for_sequence("cartpole3", num_env_runners=0)
    settings = ContinualSettings("cartpole3", 3, "blip", method_hp={}, seed=0, rl=rl)
    return build_ppo_config(settings).num_gpus_per_learner

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
