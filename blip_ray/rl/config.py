"""``ContinualPPOConfig``: RLlib's ``PPOConfig`` carrying a continual run's typed settings.

RLlib's pattern for custom settings (``rllib/examples/learners/classes``): a config subclass with
the extra fields, which also installs what the learner needs. ``build_ppo_config(settings)``
returns one with the continual module, learner, learner connector and callback wired in;
``config.build_algo()`` gives the algorithm, whose learner and callback read
``config.continual`` (a :class:`~blip_ray.rl.settings.ContinualSettings`, not a dict).
"""

from __future__ import annotations

from typing import Any

from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.connectors.module_to_env import GetActions
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.utils.annotations import override

from blip_ray.rl.callbacks import ContinualTaskCallback
from blip_ray.rl.connectors import ActionsToEnv, BatchObservations
from blip_ray.rl.learners import ContinualPPOLearner, LastBatchObservations
from blip_ray.rl.module import ContinualPPOModule, ModuleSettings
from blip_ray.rl.sequences import ContinualEnv, get_rl_sequence
from blip_ray.rl.settings import ContinualSettings


class ContinualPPOConfig(PPOConfig):
    """``PPOConfig`` plus ``continual``, the settings of the continual run."""

    def __init__(self, algo_class: Any = None) -> None:
        super().__init__(algo_class=algo_class)
        self.continual: ContinualSettings | None = None

    @override(PPOConfig)
    def get_default_learner_class(self) -> type:
        return ContinualPPOLearner

    @override(PPOConfig)
    def build_learner_connector(self, input_observation_space, input_action_space, device=None):  # noqa: ANN001, ANN201  (RLlib's signature)
        pipeline = super().build_learner_connector(
            input_observation_space, input_action_space, device=device
        )
        pipeline.append(LastBatchObservations())
        return pipeline


def _cluster_gpus() -> float:
    """GPUs a run may use: of the Ray cluster when connected, else of this machine.

    Inside a Ray worker (a Tune trial) the GPUs are only those Ray assigned to it: a trial that
    reserved none must not put its learner on a GPU that another trial holds.
    """
    import ray

    if ray.is_initialized():
        if ray.get_runtime_context().worker.mode == ray.WORKER_MODE:
            return float(len(ray.get_gpu_ids()))
        return float(ray.cluster_resources().get("GPU", 0))
    import torch

    return float(torch.cuda.device_count())


def module_spec(settings: ContinualSettings) -> RLModuleSpec:
    """The continual module's spec (spaces are taken from the env by RLlib)."""
    sequence = get_rl_sequence(settings.sequence)
    method = settings.make_method()
    module = ModuleSettings(
        trunk=sequence.trunk,
        action_counts=sequence.action_counts[: settings.num_tasks],
        quantized=method.quantized_trunk,
        max_bit=getattr(method.config, "max_bit", ModuleSettings.max_bit),
        task_state=method.trunk_task_state,
    )
    return RLModuleSpec(module_class=ContinualPPOModule, model_config=module.to_dict())


def _env_to_module(env: Any = None, spaces: Any = None, device: Any = None) -> BatchObservations:
    return BatchObservations(device=device)


def _module_to_env(env: Any = None, spaces: Any = None) -> list[Any]:
    return [GetActions(), ActionsToEnv()]


def build_ppo_config(settings: ContinualSettings) -> ContinualPPOConfig:
    """The ``ContinualPPOConfig`` of a continual run (new API stack, one local learner)."""
    ppo, runners = settings.rl.ppo, settings.rl.num_env_runners
    learner_gpus = settings.num_gpus_per_learner
    if learner_gpus is None:
        learner_gpus = 1.0 if _cluster_gpus() >= 1 else 0.0
    config = (
        ContinualPPOConfig()
        .environment(
            env=ContinualEnv,
            env_config={"sequence": settings.sequence, "task": 0},
            # Discrete actions (the module refuses any other space): nothing to unsquash or clip,
            # and RLlib's connector would copy every action batch to find that out.
            normalize_actions=False,
            clip_actions=False,
        )
        .env_runners(
            num_env_runners=runners,
            num_envs_per_env_runner=ppo.num_envs // max(runners, 1),
            rollout_fragment_length=ppo.rollout_length,
            # The defaults' data in one step each (blip_ray.rl.connectors); RLlib's own action
            # sampling stays.
            env_to_module_connector=_env_to_module,
            add_default_connectors_to_env_to_module_pipeline=False,
            module_to_env_connector=_module_to_env,
            add_default_connectors_to_module_to_env_pipeline=False,
        )
        .learners(num_learners=0, num_gpus_per_learner=learner_gpus)
        .rl_module(rl_module_spec=module_spec(settings))
        .training(
            lr=ppo.lr,
            train_batch_size_per_learner=ppo.train_batch_size,
            minibatch_size=ppo.minibatch_size,
            num_epochs=ppo.num_epochs,
            shuffle_batch_per_epoch=True,
            clip_param=ppo.clip_param,
            vf_loss_coeff=0.5 * ppo.value_loss_coeff,
            vf_clip_param=ppo.vf_clip_param,
            entropy_coeff=ppo.entropy_coeff,
            use_kl_loss=False,
            kl_coeff=0.0,
            grad_clip=ppo.grad_clip,
            grad_clip_by="global_norm",
            gamma=ppo.gamma,
            lambda_=ppo.gae_lambda,
        )
        .callbacks(ContinualTaskCallback)
        .debugging(seed=settings.seed)
    )
    config.continual = settings
    return config
