"""RL task sequences behind one registry, and the env creator RLlib calls.

A sequence is a list of tasks (name, number of actions) plus a builder for each task's env. The env
config RLlib passes carries ``{"sequence": name, "task": index}``; the task-sequence callback
changes ``task`` on every env runner at a task switch and rebuilds the env with ``make_env()``.

- ``atari6``: the paper's KungFuMaster, Boxing, Jamesbond, Krull, Riverraid, SpaceInvaders with
  their minimal action sets (14, 18, 18, 18, 18, 6), the ``atari_cnn`` trunk.
- ``cartpole3``: CartPole-v1 under three fixed observation permutations with sign flips, the MLP
  trunk; a continual sequence that trains in minutes on 2 CPU cores (tests, smoke runs).
- ``minatar4``/``minatar5``/``minatar3``: MinAtar's games (optional ``minatar`` package, GPL-3.0),
  10x10 object maps zero-padded to 10 channels, the MinAtar paper's ``minatar_cnn`` trunk;
  ``minatar3`` is minatar4 without Asterix, which is not learned at minatar4's budget.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym

from blip_ray.rl import envs

#: Seed of the cartpole3 observation transforms (fixed: the tasks are part of the benchmark).
CARTPOLE_TRANSFORM_SEED = 2021

#: The paper's RL values of the methods' hyperparameters (official ``ppo_blip.py``/``ppo_ewc.py``):
#: Atari's F_prior, and the end-of-task Fisher on the 2000-state rollout in 32 shuffled minibatches
#: of 2000 // 32 = 62 states.
PAPER_RL_METHOD_DEFAULTS: Mapping[str, Mapping[str, Any]] = {
    "blip": {"f_prior": 5e-18, "fisher_batches": 32, "fisher_batch_size": 62},
    "online_ewc": {"fisher_batch_size": 62},
}

#: ``builder(task_index, training) -> env`` with the task's own (unpadded) action space.
EnvBuilder = Callable[[int, bool], gym.Env]


@dataclasses.dataclass(frozen=True)
class RlTask:
    """One task of a sequence."""

    name: str
    num_actions: int
    """Size of the task's own (minimal) action set; its policy head has this many outputs."""


@dataclasses.dataclass(frozen=True)
class RlSequence:
    """A registered sequence of RL tasks that share one observation space."""

    name: str
    tasks: tuple[RlTask, ...]
    trunk: str
    """Trunk family of the module (``blip_ray.rl.module.TRUNKS``): ``atari_cnn``, ``minatar_cnn``
    or ``mlp``."""
    builder: EnvBuilder
    description: str
    steps_per_task: int
    """Default env-step budget per task."""
    ppo: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """Default PPO settings (``blip_ray.rl.settings.PpoSettings`` fields) over the paper's."""
    method_defaults: Mapping[str, Mapping[str, Any]] = dataclasses.field(
        default_factory=lambda: {k: dict(v) for k, v in PAPER_RL_METHOD_DEFAULTS.items()}
    )
    """Per method, hyperparameters that differ from the method's own defaults on this sequence
    (the spec's values override them)."""
    padded_actions: int | None = None
    """Size of the padded action space every task's env exposes; None: the largest task's."""
    requires: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Optional modules the envs import, each with the command that installs it."""

    def __post_init__(self) -> None:
        if self.padded_actions is not None and self.padded_actions < max(self.action_counts):
            raise ValueError(
                f"{self.name}: padded_actions {self.padded_actions} is below a task's "
                f"{max(self.action_counts)} actions"
            )

    def missing_requirement(self) -> str | None:
        """One line naming an optional module the envs need that is not installed, or None."""
        for module, install in self.requires.items():
            if importlib.util.find_spec(module) is None:
                return f"{self.name} needs the optional package {module!r}; install it: {install}"
        return None

    @property
    def action_counts(self) -> tuple[int, ...]:
        return tuple(task.num_actions for task in self.tasks)

    @property
    def max_actions(self) -> int:
        """Size of the padded action space every task's env exposes."""
        return self.padded_actions or max(self.action_counts)

    def single_task(self, task: int) -> RlSequence:
        """Task ``task`` alone, as the one-task sequence ``<name>:<task name>``: the same env
        behind the same padded action space, trunk, budget, PPO and method defaults. Trained
        with ``finetune`` it is the task's single-task reference (``blip-ray run --references``).
        """
        own = self.tasks[task]
        return dataclasses.replace(
            self,
            name=f"{self.name}{TASK_SEPARATOR}{own.name}",
            tasks=(own,),
            builder=functools.partial(_task_of, self.builder, task),
            description=f"{own.name} of {self.name} alone (its single-task reference)",
            padded_actions=self.max_actions,
        )

    def make_env(self, task: int, *, training: bool = True) -> gym.Env:
        """Task ``task``'s env for training (clipped rewards, life episodes where applicable) or
        evaluation (raw score), behind the sequence's padded action space."""
        if not 0 <= task < len(self.tasks):
            raise IndexError(f"{self.name} has tasks 0..{len(self.tasks) - 1}, not {task}")
        env = self.builder(task, training)
        if int(env.action_space.n) != self.tasks[task].num_actions:
            raise RuntimeError(
                f"{self.name} task {task} ({self.tasks[task].name}) has {env.action_space.n} "
                f"actions, the sequence says {self.tasks[task].num_actions}"
            )
        return envs.TaskEnv(
            env, num_actions=self.max_actions, task_index=task, task_name=self.tasks[task].name
        )


def _task_of(builder: EnvBuilder, task: int, _only: int, training: bool) -> gym.Env:
    return builder(task, training)


RL_SEQUENCES: dict[str, RlSequence] = {}
#: ``<sequence>:<task name>`` names one task of a registered sequence as a sequence of its own.
TASK_SEPARATOR = ":"


def register_rl_sequence(sequence: RlSequence) -> RlSequence:
    """Add ``sequence`` to :data:`RL_SEQUENCES`, the registry specs, CLI and tests read."""
    if sequence.name in RL_SEQUENCES:
        raise ValueError(f"RL sequence {sequence.name!r} registered twice")
    RL_SEQUENCES[sequence.name] = sequence
    return sequence


def find_rl_sequence(name: str) -> RlSequence | None:
    """The registered sequence ``name``, or one task of it named ``<sequence>:<task name>``
    (:meth:`RlSequence.single_task`); None when ``name`` is neither."""
    if name in RL_SEQUENCES:
        return RL_SEQUENCES[name]
    parent, _, task = name.partition(TASK_SEPARATOR)
    if parent not in RL_SEQUENCES:
        return None
    names = [own.name for own in RL_SEQUENCES[parent].tasks]
    return RL_SEQUENCES[parent].single_task(names.index(task)) if task in names else None


def get_rl_sequence(name: str) -> RlSequence:
    """:func:`find_rl_sequence`'s sequence; a KeyError names the known ones."""
    sequence = find_rl_sequence(name)
    if sequence is None:
        known = ", ".join(sorted(RL_SEQUENCES))
        raise KeyError(
            f"unknown RL sequence {name!r}; known: {known} (or one task of one, "
            f"<sequence>{TASK_SEPARATOR}<task>)"
        )
    return sequence


def make_training_env(env_config: Mapping[str, Any]) -> gym.Env:
    """RLlib's env creator: ``env_config["sequence"]``'s task ``env_config["task"]`` (default 0)."""
    sequence = get_rl_sequence(str(env_config["sequence"]))
    return sequence.make_env(int(env_config.get("task", 0)), training=True)


class ContinualEnv(gym.Wrapper):
    """The env class ``build_ppo_config`` hands RLlib: :func:`make_training_env` of the config.

    A class rather than a registered name because RLlib accepts env classes (not functions)
    directly, and a class travels by import path: trials restored in a new driver, whose Tune
    registry is empty, still find it.
    """

    def __init__(self, env_config: Mapping[str, Any]) -> None:
        super().__init__(make_training_env(env_config))


ATARI6_GAMES = (
    ("KungFuMaster", 14),
    ("Boxing", 18),
    ("Jamesbond", 18),
    ("Krull", 18),
    ("Riverraid", 18),
    ("SpaceInvaders", 6),
)


def _atari6_env(task: int, training: bool) -> gym.Env:
    return envs.make_atari_env(ATARI6_GAMES[task][0], training=training)


register_rl_sequence(
    RlSequence(
        name="atari6",
        tasks=tuple(RlTask(game, actions) for game, actions in ATARI6_GAMES),
        trunk="atari_cnn",
        builder=_atari6_env,
        description="The paper's six Atari games in its order, DeepMind preprocessing, 84x84x4",
        steps_per_task=10_000_000,
    )
)

_CARTPOLE3_TRANSFORMS = envs.cartpole_transforms(3, seed=CARTPOLE_TRANSFORM_SEED)


def _cartpole3_env(task: int, training: bool) -> gym.Env:
    permutation, signs = _CARTPOLE3_TRANSFORMS[task]
    return envs.make_cartpole_env(permutation, signs)


register_rl_sequence(
    RlSequence(
        name="cartpole3",
        tasks=tuple(RlTask(f"cartpole-{i}", 2) for i in range(3)),
        trunk="mlp",
        builder=_cartpole3_env,
        description="CartPole-v1 under 3 fixed observation permutations and sign flips (CPU)",
        steps_per_task=49_152,
        # Solves each task (return 500) in ~40k steps on 2 CPU cores. Unclipped returns reach
        # ~100, so the value error is not clamped and its weight is small: policy and value share
        # the trunk, and a large value loss would swamp the policy gradient under grad_clip 0.5.
        ppo={
            "num_envs": 8,
            "rollout_length": 128,
            "num_minibatches": 4,
            "num_epochs": 10,
            "clip_param": 0.2,
            "lr": 3e-3,
            "entropy_coeff": 0.0,
            "value_loss_coeff": 0.02,
            "vf_clip_param": 1e6,
        },
    )
)

#: ``(task name, MinAtar game, minimal actions)``. minatar4 starts as C-CHAIN's MinAtar chains
#: (Tang et al., ICML 2025, ``crl_minatar/crl_run_double_dqn.py``: space_invaders, asterix, then
#: freeway or seaquest) with Breakout second; minatar5 appends Seaquest, the hardest game.
MINATAR_GAMES = (
    ("SpaceInvaders", "space_invaders", 4),
    ("Breakout", "breakout", 3),
    ("Asterix", "asterix", 5),
    ("Freeway", "freeway", 3),
    ("Seaquest", "seaquest", 6),
)
#: PPO on MinAtar, chosen by measurement on Asterix alone (the slowest of minatar4's games to beat
#: the random policy; benchmarks/minatar4.yaml records the probes): 16 envs x 64 steps in 4
#: minibatches of 256 for 4 epochs, lr 1e-3, clip 0.2. At 500,000 steps Asterix reached 3.6 (the
#: random policy 0.4) where 64 x 128 in 8 minibatches at lr 5e-4 (common for PPO on MinAtar at
#: 10M steps) reached about 0.8: at budgets of a few hundred thousand steps the number of updates
#: decides. The value error is not clamped, since raw scores reach tens.
MINATAR_PPO = {
    "num_envs": 16,
    "rollout_length": 64,
    "num_minibatches": 4,
    "num_epochs": 4,
    "clip_param": 0.2,
    "lr": 1e-3,
    "vf_clip_param": 1e6,
}
#: Env steps per game that fit minatar4's committed run (8 methods and the single-task references,
#: 3 seeds, about two hours on 2 CPU cores) and clear the random policy on every game.
MINATAR_STEPS_PER_TASK = 300_000


def _minatar_env(games: tuple[str, ...], task: int, training: bool) -> gym.Env:
    return envs.make_minatar_env(games[task])


def _register_minatar(name: str, tasks: tuple[str, ...], description: str) -> None:
    games = {task: (game, actions) for task, game, actions in MINATAR_GAMES}
    register_rl_sequence(
        RlSequence(
            name=name,
            tasks=tuple(RlTask(task, games[task][1]) for task in tasks),
            trunk="minatar_cnn",
            builder=functools.partial(_minatar_env, tuple(games[task][0] for task in tasks)),
            description=description,
            steps_per_task=MINATAR_STEPS_PER_TASK,
            ppo=MINATAR_PPO,
            padded_actions=6,  # MinAtar's full action set (n, l, u, r, d, f)
            requires={"minatar": envs.MINATAR_INSTALL},
        )
    )


_MINATAR4 = ("SpaceInvaders", "Breakout", "Asterix", "Freeway")
_register_minatar(
    "minatar4", _MINATAR4, "MinAtar SpaceInvaders, Breakout, Asterix, Freeway; 10x10x10 object maps"
)
_register_minatar(
    "minatar5",
    (*_MINATAR4, "Seaquest"),
    "minatar4 then Seaquest, which needs far more env steps than the others",
)
#: minatar4 without Asterix: every game learned at the 300,000-step budget (single-task PPO at
#: 5.7x, 6.5x and 84x the random policy, results/minatar4/references/), where Asterix reached
#: 1.9x; alone for 800,000 steps it stays near 3x (benchmarks/minatar4-asterix-budget.yaml).
_register_minatar(
    "minatar3",
    ("SpaceInvaders", "Breakout", "Freeway"),
    "minatar4 without Asterix: every game learned at 300,000 env steps",
)
