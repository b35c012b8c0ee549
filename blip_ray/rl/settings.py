"""Typed settings of a continual PPO run, resolved once when the spec is read (no Ray imports).

:class:`RlSettings` is the spec's ``rl:`` section (its keys are its fields, :class:`PpoSettings`
under ``ppo``) with the sequence's defaults filled in and every rule a trial could fail on checked;
:class:`ContinualSettings` is one trial, which ``ContinualPPOConfig`` carries to the learner.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from blip_ray.methods import ContinualMethod, make_method
from blip_ray.rl.sequences import get_rl_sequence

#: Evaluation policies: the argmax of the task's head (the paper's), or a draw from its softmax.
EVAL_POLICIES = ("greedy", "sampled")

#: Evaluation episodes of a trial are seeded apart from its training seed, so the trained and the
#: random policy are scored on the same episodes whatever the training consumed: episode ``i`` of
#: the trained policy uses ``seed + EVAL_SEED_OFFSET + i``, of the random policy
#: ``seed + RANDOM_POLICY_SEED_OFFSET + i`` (its actions draw from that seed's generator too).
EVAL_SEED_OFFSET = 10_000
RANDOM_POLICY_SEED_OFFSET = 20_000
#: A second stream of evaluation episodes, reserved for hyperparameter selection: episode ``i``
#: uses ``seed + SELECTION_SEED_OFFSET + i``, disjoint from the reported ones above (fewer than
#: 10,000 episodes per evaluation), so choosing a setting never reads the reported scores.
SELECTION_SEED_OFFSET = 30_000
EVAL_STREAMS = {"final": EVAL_SEED_OFFSET, "selection": SELECTION_SEED_OFFSET}
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
    """Adam's epsilon (the official PPO uses 1e-5; PyTorch's default is 1e-8)."""
    grad_clip: float = 0.5
    """Max global gradient norm."""
    gamma: float = 0.99
    gae_lambda: float = 0.95

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name in ("entropy_coeff", "gamma", "gae_lambda"):
                if value < 0:
                    raise ValueError(f"ppo.entropy_coeff: must be >= 0, got {value}")
            elif not value > 0:
                raise ValueError(f"ppo.{field.name}: must be > 0, got {value}")
        for name in ("gamma", "gae_lambda"):  # 0 is valid: no discounting beyond one step, TD(0)
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"ppo.{name}: must be in [0, 1], got {getattr(self, name)}")
        if self.train_batch_size % self.num_minibatches:
            raise ValueError(
                f"ppo.num_minibatches: {self.num_minibatches} minibatches do not divide the batch "
                f"of {self.train_batch_size} env steps (num_envs x rollout_length)"
            )

    @property
    def train_batch_size(self) -> int:
        return self.num_envs * self.rollout_length

    @property
    def minibatch_size(self) -> int:
        return self.train_batch_size // self.num_minibatches


def size_env_runners(num_envs: int, cpus: float, *, limit: int = MAX_AUTO_ENV_RUNNERS) -> int:
    """Remote env runners for a trial on ``cpus`` CPUs: 0 on <= 2 CPUs (PPO's default of 2 runners
    plus the trial's own CPU never schedules there), else the largest divisor of ``num_envs`` up
    to ``min(cpus - 1, limit)`` so the envs split evenly."""
    budget = min(int(cpus) - 1, limit)
    if budget < 2:
        return 0
    return max(r for r in range(1, budget + 1) if num_envs % r == 0)


@dataclasses.dataclass(frozen=True)
class RlSettings:
    """The ``rl:`` section of a spec, resolved: what every trial of an RL experiment shares."""

    steps_per_task: int
    """Env steps per task; task ``t`` ends once ``(t + 1) * steps_per_task`` env steps have been
    sampled (checked after every training iteration). At least one PPO batch."""
    ppo: PpoSettings = dataclasses.field(default_factory=PpoSettings)
    """The sequence's PPO settings with the spec's overrides applied."""
    eval_episodes: int = 10
    """Evaluation episodes per task (the paper: 10)."""
    eval_policy: str = "greedy"
    """Actions of the evaluation episodes: ``greedy``, the argmax of the task's head (the paper's
    deterministic protocol), or ``sampled``, drawn from the head's softmax as in training (seeded
    like the episodes). The random-policy baseline is uniform either way."""
    eval_interval: int = 100
    """Training iterations between evaluations inside a task (learning curves); 0: task ends."""
    eval_max_steps: int | None = None
    """Cap on the steps of one evaluation episode (None: the game's own end)."""
    num_env_runners: int = 0
    """Remote env runners per trial (0: sample in the trial's own process)."""
    reference_returns: dict[str, float] = dataclasses.field(default_factory=dict)
    """Raw return of a single-task reference run per task name (e.g. PPO trained on that game
    alone, same budget): 1 of the report's per-game normalization. Tasks without one use the best
    return observed in the experiment."""

    def __post_init__(self) -> None:
        batch = self.ppo.train_batch_size
        if self.steps_per_task < batch:
            raise ValueError(
                f"steps_per_task: {self.steps_per_task} is below one PPO batch of {batch} env "
                f"steps (ppo num_envs x rollout_length); use at least {batch}"
            )
        for name, low in (("eval_episodes", 1), ("eval_interval", 0), ("num_env_runners", 0)):
            if getattr(self, name) < low:
                raise ValueError(f"{name}: must be >= {low}, got {getattr(self, name)}")
        if self.eval_policy not in EVAL_POLICIES:
            raise ValueError(
                f"eval_policy: expected one of {', '.join(EVAL_POLICIES)}, got {self.eval_policy!r}"
            )
        if self.eval_max_steps is not None and self.eval_max_steps < 1:
            raise ValueError(f"eval_max_steps: must be >= 1, got {self.eval_max_steps}")
        if self.num_env_runners and self.ppo.num_envs % self.num_env_runners:
            raise ValueError(
                f"num_env_runners: {self.ppo.num_envs} envs (ppo.num_envs) do not split over "
                f"{self.num_env_runners} env runners; use a divisor of {self.ppo.num_envs}"
            )

    @classmethod
    def for_sequence(
        cls,
        sequence: str,
        *,
        cpus: float = 1.0,
        ppo: Mapping[str, Any] | None = None,
        steps_per_task: int | None = None,
        num_env_runners: int | None = None,
        **values: Any,
    ) -> RlSettings:
        """The sequence's defaults under the given values; env runners sized from ``cpus``."""
        rl_sequence = get_rl_sequence(sequence)
        ppo_settings = PpoSettings(**{**rl_sequence.ppo, **(ppo or {})})
        if num_env_runners is None:
            num_env_runners = size_env_runners(ppo_settings.num_envs, cpus)
        return cls(
            steps_per_task=steps_per_task or rl_sequence.steps_per_task,
            ppo=ppo_settings,
            num_env_runners=num_env_runners,
            **values,
        )

    def smoke(self) -> RlSettings:
        """Seconds instead of hours: one tiny PPO batch per task, short evaluations."""
        ppo = dataclasses.replace(
            self.ppo, num_envs=2, rollout_length=32, num_minibatches=2, num_epochs=1
        )
        return dataclasses.replace(
            self,
            steps_per_task=ppo.train_batch_size,
            ppo=ppo,
            eval_episodes=1,
            eval_interval=0,
            eval_max_steps=50,
            num_env_runners=0,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain values (Tune's param space, ``params.json``); :meth:`from_dict` reads them."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RlSettings:
        return cls(**{**data, "ppo": PpoSettings(**data["ppo"])})


@dataclasses.dataclass(frozen=True)
class ContinualSettings:
    """One continual PPO run: a sequence, a method with its seed, and the shared RL settings."""

    sequence: str
    """Name of the RL task sequence (``blip_ray.rl.sequences.RL_SEQUENCES``)."""
    num_tasks: int
    """Tasks trained, the first ``num_tasks`` of the sequence."""
    method: str
    """Method name (``blip_ray.methods.METHODS``)."""
    method_hp: Mapping[str, Any]
    """Hyperparameters over the method's defaults and the sequence's ``method_defaults``."""
    seed: int
    """Seeds PPO (RLlib's ``debugging(seed=)``) and, with offsets, the evaluation episodes."""
    rl: RlSettings
    """What every trial of the experiment shares."""
    num_gpus_per_learner: float | None = None
    """GPUs of the (local) learner; None: 1 if the trial was given a GPU (outside a trial: if the
    cluster or machine has one)."""

    def __post_init__(self) -> None:
        tasks = len(get_rl_sequence(self.sequence).tasks)
        if not 1 <= self.num_tasks <= tasks:
            raise ValueError(f"tasks: {self.sequence} has {tasks} tasks, got {self.num_tasks}")

    def make_method(self) -> ContinualMethod:
        """The method with the sequence's defaults for it under ``method_hp``."""
        defaults = get_rl_sequence(self.sequence).method_defaults.get(self.method, {})
        return make_method(self.method, **{**defaults, **self.method_hp})
