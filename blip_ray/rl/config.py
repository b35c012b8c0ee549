"""A typed continual-RL experiment config and the ``PPOConfig`` it builds.

``build_ppo_config(RlExperimentConfig(...))`` returns an RLlib ``PPOConfig`` (new API stack) with
the continual module, learner and callback wired in; a Tune trainable passes it to
``tune.Tuner(PPO, param_space=config)`` with ``stop=stop_criteria(cfg)``, or builds it in-process
with ``config.build_algo()`` and calls ``train()`` until ``result["tasks_done"] == num_tasks``.
Defaults are the paper's Atari PPO settings (DESIGN: atari6 row).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from blip_ray.rl.callbacks import ContinualTaskCallback
from blip_ray.rl.learners import ContinualPPOLearner
from blip_ray.rl.methods import get_rl_method
from blip_ray.rl.module import ContinualPPOModule, ModuleSettings
from blip_ray.rl.sequences import ContinualEnv, get_rl_sequence
from blip_ray.rl.settings import SETTINGS_KEY, ContinualSettings

#: Most env runners a trial starts when sized automatically (trials share the cluster).
MAX_AUTO_ENV_RUNNERS = 4


@dataclasses.dataclass(frozen=True)
class PpoSettings:
    """PPO hyperparameters; defaults are the paper's (official ``run_*.sh`` + a2c-ppo-acktr)."""

    num_envs: int = 16
    """Parallel envs in total (split over the env runners)."""
    rollout_length: int = 125
    """Steps per env per update: 16 x 125 = 2000 env steps per PPO update."""
    num_epochs: int = 4
    num_minibatches: int = 8
    """Minibatches per epoch: 2000 / 8 = 250 samples each."""
    clip_param: float = 0.1
    value_loss_coeff: float = 0.5
    """The paper's value coefficient. The official loss is ``coeff * 0.5 * (v - R)^2``, RLlib's
    ``vf_loss_coeff * (v - R)^2``, so RLlib gets ``vf_loss_coeff = 0.5 * value_loss_coeff``."""
    vf_clip_param: float = 10.0
    """RLlib clamps the squared value error at this value; it has no PPO2-style clipped value
    loss around the old predictions (the official ``use_clipped_value_loss``)."""
    entropy_coeff: float = 0.01
    lr: float = 2.5e-4
    """Adam's learning rate at each task start, decaying linearly to 0 within the task."""
    adam_eps: float = 1e-5
    grad_clip: float = 0.5
    """Max global gradient norm."""
    gamma: float = 0.99
    gae_lambda: float = 0.95

    def __post_init__(self) -> None:
        if self.train_batch_size % self.num_minibatches:
            raise ValueError(
                f"{self.num_minibatches} minibatches do not divide the batch of "
                f"{self.train_batch_size} env steps"
            )

    @property
    def train_batch_size(self) -> int:
        return self.num_envs * self.rollout_length

    @property
    def minibatch_size(self) -> int:
        return self.train_batch_size // self.num_minibatches


@dataclasses.dataclass(frozen=True)
class RlExperimentConfig:
    """One continual RL run: a sequence, a method, budgets, evaluation, PPO and resources."""

    sequence: str = "atari6"
    """Registered RL sequence (``blip_ray.rl.sequences.RL_SEQUENCES``)."""
    method: str = "blip"
    """``blip``, ``online_ewc``, ``finetune`` or ``ft_fix`` (``RL_METHODS``)."""
    method_hp: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """Method hyperparameters over its RL defaults, e.g. ``{"f_prior": 5e-18}`` or
    ``{"lamb": 5000.0}``."""
    steps_per_task: int | None = None
    """Env steps per task; None: the sequence's default (atari6: the paper's 10M)."""
    num_tasks: int | None = None
    """Train only the first tasks of the sequence (None: all)."""
    eval_episodes: int = 10
    eval_interval: int = 100
    """Iterations between evaluations inside a task (the paper: every 100 updates); 0: only at
    task ends."""
    eval_max_steps: int | None = None
    """Cap on agent steps per evaluation episode (smoke runs); None: the env's limit."""
    seed: int = 0
    ppo: PpoSettings | None = None
    """PPO settings; None: the sequence's defaults (atari6: the paper's, i.e. ``PpoSettings()``)."""
    num_env_runners: int | None = None
    """Remote env runners; None sizes them from the CPUs (0 on <= 2 CPUs: sample in-process)."""
    num_gpus_per_learner: float | None = None
    """GPUs of the (local) learner; None: 1 if the trial was given a GPU (outside a trial: if the
    cluster or machine has one)."""

    def __post_init__(self) -> None:
        sequence = get_rl_sequence(self.sequence)
        get_rl_method(self.method).make(self.method_hp)  # rejects unknown hyperparameters
        if self.num_tasks is not None and not 1 <= self.num_tasks <= len(sequence.tasks):
            raise ValueError(f"num_tasks must be in 1..{len(sequence.tasks)}, got {self.num_tasks}")
        if self.task_steps < self.ppo_settings.train_batch_size:
            raise ValueError(
                f"steps_per_task ({self.task_steps}) is below one PPO batch "
                f"({self.ppo_settings.train_batch_size} env steps)"
            )

    @property
    def tasks(self) -> int:
        """Tasks trained (``num_tasks`` or the whole sequence)."""
        return self.num_tasks or len(get_rl_sequence(self.sequence).tasks)

    @property
    def task_steps(self) -> int:
        """Env steps per task (``steps_per_task`` or the sequence's default)."""
        return self.steps_per_task or get_rl_sequence(self.sequence).steps_per_task

    @property
    def ppo_settings(self) -> PpoSettings:
        """``ppo`` or the sequence's default PPO settings."""
        return self.ppo or PpoSettings(**get_rl_sequence(self.sequence).ppo)


def size_env_runners(num_envs: int, cpus: float, *, limit: int = MAX_AUTO_ENV_RUNNERS) -> int:
    """Remote env runners for a trial on ``cpus`` CPUs: 0 on <= 2 CPUs (PPO's default of 2 runners
    plus the trial's own CPU never schedules there), else the largest divisor of ``num_envs`` up
    to ``min(cpus - 1, limit)`` so the envs split evenly."""
    budget = min(int(cpus) - 1, limit)
    if budget < 2:
        return 0
    return max(r for r in range(1, budget + 1) if num_envs % r == 0)


def _cluster_resources() -> tuple[float, float]:
    """``(CPUs, GPUs)`` a run may use: of the Ray cluster when connected, else of this machine.

    Inside a Ray worker (a Tune trial) the GPUs are only those Ray assigned to it: a trial that
    reserved none must not put its learner on a GPU that another trial holds.
    """
    import ray

    if ray.is_initialized():
        resources = ray.cluster_resources()
        cpus = float(resources.get("CPU", 1))
        if ray.get_runtime_context().worker.mode == ray.WORKER_MODE:
            return cpus, float(len(ray.get_gpu_ids()))
        return cpus, float(resources.get("GPU", 0))
    import torch

    return float(os.cpu_count() or 1), float(torch.cuda.device_count())


def continual_settings(cfg: RlExperimentConfig) -> ContinualSettings:
    return ContinualSettings(
        sequence=cfg.sequence,
        num_tasks=cfg.tasks,
        steps_per_task=cfg.task_steps,
        method=cfg.method,
        method_hp=dict(cfg.method_hp),
        lr=cfg.ppo_settings.lr,
        adam_eps=cfg.ppo_settings.adam_eps,
        eval_episodes=cfg.eval_episodes,
        eval_interval=cfg.eval_interval,
        eval_max_steps=cfg.eval_max_steps,
        eval_seed=cfg.seed + 10_000,
    )


def module_spec(cfg: RlExperimentConfig) -> RLModuleSpec:
    """The continual module's spec (spaces are taken from the env by RLlib)."""
    sequence = get_rl_sequence(cfg.sequence)
    rl_method = get_rl_method(cfg.method)
    method = rl_method.make(cfg.method_hp)
    settings = ModuleSettings(
        trunk=sequence.trunk,
        action_counts=sequence.action_counts[: cfg.tasks],
        quantized=rl_method.quantized_trunk,
        max_bit=getattr(method.config, "max_bit", ModuleSettings.max_bit),
    )
    return RLModuleSpec(module_class=ContinualPPOModule, model_config=settings.to_dict())


def build_ppo_config(cfg: RlExperimentConfig) -> PPOConfig:
    """The RLlib ``PPOConfig`` of a continual run (new API stack, local learner)."""
    ppo = cfg.ppo_settings
    cpus, gpus = _cluster_resources()
    runners = cfg.num_env_runners
    if runners is None:
        runners = size_env_runners(ppo.num_envs, cpus)
    if runners and ppo.num_envs % runners:
        raise ValueError(f"{ppo.num_envs} envs do not split over {runners} env runners")
    learner_gpus = cfg.num_gpus_per_learner
    if learner_gpus is None:
        learner_gpus = 1.0 if gpus >= 1 else 0.0
    return (
        PPOConfig()
        .environment(env=ContinualEnv, env_config={"sequence": cfg.sequence, "task": 0})
        .env_runners(
            num_env_runners=runners,
            num_envs_per_env_runner=ppo.num_envs // max(runners, 1),
            rollout_fragment_length=ppo.rollout_length,
        )
        .learners(
            num_learners=0,
            num_gpus_per_learner=learner_gpus,
            learner_class=ContinualPPOLearner,
            learner_config_dict={SETTINGS_KEY: continual_settings(cfg).to_dict()},
        )
        .rl_module(rl_module_spec=module_spec(cfg))
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
        .debugging(seed=cfg.seed)
    )


def stop_criteria(cfg: RlExperimentConfig) -> dict[str, int]:
    """Tune ``stop`` for a whole run: every task trained, ended and evaluated."""
    return {"tasks_done": cfg.tasks}
