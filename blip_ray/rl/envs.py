"""Environments of the RL task sequences: the paper's Atari preprocessing, MinAtar's games and a
permuted CartPole.

No Ray here beyond RLlib's Atari wrapper classes (plain gymnasium wrappers, imported only when an
Atari env is built, so that reading a spec never imports RLlib); MinAtar, an optional dependency,
is imported only when one of its games is built. The envs build and step in any process. Every env
handed to RLlib is wrapped last in :class:`TaskEnv`, which gives all tasks of a sequence one padded
action space and tags the env with its task.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

#: Frames per agent step (NoFrameskip-v4 + the DeepMind wrappers' MaxAndSkip).
ATARI_FRAMESKIP = 4
#: Episode cap in emulator frames (ALE v5 default; 27,000 agent steps).
ATARI_MAX_FRAMES = 108_000
#: Stacked grayscale frames per observation.
ATARI_FRAME_STACK = 4
#: Side of the square grayscale frame.
ATARI_DIM = 84
#: Random no-ops at the start of a game (DeepMind's NoopResetEnv).
ATARI_NOOP_MAX = 30

#: MinAtar's default probability of repeating the previous action (``minatar/environment.py``).
MINATAR_STICKY_ACTION_PROB = 0.1
#: Side of MinAtar's square grid.
MINATAR_DIM = 10
#: Channels of every MinAtar observation: the most any game has (Seaquest's 10); games with fewer
#: get zero channels after their own, so all games share one observation space.
MINATAR_CHANNELS = 10
#: Agent steps after which a MinAtar episode is truncated, in training and evaluation. MinAtar has
#: no limit of its own (Freeway ends itself after 2,500 steps); a policy that never loses Breakout,
#: or idles in Seaquest, would otherwise never finish an episode.
MINATAR_MAX_EPISODE_STEPS = 10_000
#: How to install the optional MinAtar dependency (GPL-3.0; the ``minatar`` extra).
MINATAR_INSTALL = "pip install 'blip-ray[minatar]' (in a checkout: pip install -e '.[minatar]')"


class TaskEnv(gym.ActionWrapper):
    """One task of a sequence behind the sequence-wide ``Discrete(num_actions)`` action space.

    RLlib builds one module and one connector pipeline from a single action space, while each game
    keeps its minimal action set (14, 18, ..., 6). The module masks logits past the task's actions,
    so those indices are never sampled; should one arrive anyway it becomes action 0 (NOOP in ALE)
    and is counted in ``invalid_actions``. ``task_index``/``task_name`` tag the env so tests and
    callbacks can check which task a runner's env runs (``vector_env.get_attr("task_index")``).
    """

    def __init__(self, env: gym.Env, *, num_actions: int, task_index: int, task_name: str) -> None:
        super().__init__(env)
        if not isinstance(env.action_space, gym.spaces.Discrete):
            raise TypeError(f"TaskEnv needs a Discrete action space, got {env.action_space}")
        self.task_actions = int(env.action_space.n)
        if num_actions < self.task_actions:
            raise ValueError(
                f"padded action space ({num_actions}) is smaller than the task's "
                f"{self.task_actions} actions"
            )
        self.action_space = gym.spaces.Discrete(num_actions)
        self.task_index = task_index
        self.task_name = task_name
        self.invalid_actions = 0

    def action(self, action: int | np.integer) -> int:
        index = int(action)
        if 0 <= index < self.task_actions:
            return index
        self.invalid_actions += 1
        return 0


class WholeGame(gym.Wrapper):
    """Evaluation episodes that span a whole game, as the official ``bench.Monitor`` scores them.

    The training chain ends an episode at every lost life (``EpisodicLifeEnv``) and, through
    ``FireResetEnv``, presses FIRE to relaunch the game. The official evaluation runs that same
    chain but scores whole games (its Monitor sits inside the life wrapper), so here a life loss
    continues the game through the chain's own reset, and only a real game over ends the episode.
    """

    def __init__(self, env: gym.Env) -> None:
        from ray.rllib.env.wrappers.atari_wrappers import EpisodicLifeEnv, get_wrapper_by_cls

        super().__init__(env)
        life_env = get_wrapper_by_cls(env, EpisodicLifeEnv)
        if life_env is None:
            raise ValueError("WholeGame wraps an env chain that contains EpisodicLifeEnv")
        self._life_env = life_env

    def step(self, action):  # noqa: ANN001, ANN201  (gymnasium's signature)
        obs, reward, terminated, truncated, info = self.env.step(action)
        if terminated and not truncated and not self._life_env.was_real_terminated:
            obs, info = self.env.reset()
            terminated = False
        return obs, reward, terminated, truncated, info


def make_atari_env(game: str, *, training: bool) -> gym.Env:
    """``ALE/<game>`` with NoFrameskip-v4 semantics and the DeepMind wrappers, as the official code.

    Order (baselines' ``make_atari`` + ``wrap_deepmind``): no-op reset (<= 30), max-and-skip 4,
    episodic life, FIRE on reset where the game has FIRE, 84x84 grayscale, reward clipping
    (training only), 4-frame stack. Observations are ``(84, 84, 4)`` uint8 in 0..255; the module
    permutes them channels-first and divides by 255 (the official ``CNNBase`` does ``x / 255``).
    Evaluation keeps raw rewards and scores whole games (:class:`WholeGame`).
    """
    from ray.rllib.env.wrappers.atari_wrappers import (
        ClipRewardEnv,
        EpisodicLifeEnv,
        FireResetEnv,
        FrameStack,
        MaxAndSkipEnv,
        NoopResetEnv,
        WarpFrame,
    )

    env = gym.make(
        f"ale_py:ALE/{game}-v5",
        frameskip=1,
        repeat_action_probability=0.0,
        full_action_space=False,
        max_num_frames_per_episode=ATARI_MAX_FRAMES,
    )
    env = NoopResetEnv(env, noop_max=ATARI_NOOP_MAX)
    env = MaxAndSkipEnv(env, skip=ATARI_FRAMESKIP)
    env = EpisodicLifeEnv(env)
    if "FIRE" in env.unwrapped.get_action_meanings():
        env = FireResetEnv(env)
    env = WarpFrame(env, dim=ATARI_DIM)
    if training:
        env = ClipRewardEnv(env)
    env = FrameStack(env, k=ATARI_FRAME_STACK)
    return env if training else WholeGame(env)


class MinAtarEnv(gym.Env):
    """One MinAtar game as a gymnasium env with the game's minimal action set.

    Follows MinAtar's own gymnasium binding (``minatar/gym.py``, ``BaseEnv`` with
    ``use_minimal_action_set=True``, the ``-v1`` ids) over ``minatar/environment.py``'s
    ``Environment``: action ``i`` is ``minimal_action_set()[i]`` (e.g. Breakout's n, l, r), sticky
    actions repeat the previous action with probability 0.1, and ``reset(seed=s)`` seeds the one
    ``RandomState`` MinAtar draws both the sticky actions and the game's events from. Unlike
    ``Environment.reset``, a reset also forgets the previous episode's last action, so a seeded
    episode plays the same whatever came before it. Observations are ``state()`` (10x10xC bools)
    as float32 0/1, zero-padded to :data:`MINATAR_CHANNELS` channels (float, so the module does not
    divide them by 255 as it does uint8 Atari frames). Rewards are the raw game score, never
    clipped: +1 per brick, alien, treasure, crossing or enemy, and in Seaquest one per remaining
    oxygen cell when surfacing with six divers.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        game: str,
        *,
        sticky_action_prob: float = MINATAR_STICKY_ACTION_PROB,
        difficulty_ramping: bool = True,
    ) -> None:
        try:
            from minatar import Environment
        except ImportError as err:
            raise ImportError(
                f"MinAtar is not installed; install it with: {MINATAR_INSTALL}"
            ) from err
        self.game = Environment(
            game, sticky_action_prob=sticky_action_prob, difficulty_ramping=difficulty_ramping
        )
        self.game_name = game
        self.action_set = [int(a) for a in self.game.minimal_action_set()]
        self.game_channels = int(self.game.state_shape()[2])
        if self.game_channels > MINATAR_CHANNELS:
            raise ValueError(
                f"{game} has {self.game_channels} channels, more than {MINATAR_CHANNELS}"
            )
        self.action_space = gym.spaces.Discrete(len(self.action_set))
        self.observation_space = gym.spaces.Box(
            0.0, 1.0, (MINATAR_DIM, MINATAR_DIM, MINATAR_CHANNELS), np.float32
        )
        self._seeded = False

    def reset(self, *, seed=None, options=None):  # noqa: ANN001, ANN201  (gymnasium's signature)
        super().reset(seed=seed)
        if seed is not None or not self._seeded:  # unseeded: from gymnasium's own random seed
            self.game.seed(seed if seed is not None else int(self.np_random.integers(2**31)))
            self._seeded = True
        self.game.last_action = 0
        self.game.reset()
        return self._observation(), {}

    def step(self, action):  # noqa: ANN001, ANN201
        reward, terminal = self.game.act(self.action_set[int(action)])
        return self._observation(), float(reward), bool(terminal), False, {}

    def _observation(self) -> np.ndarray:
        observation = np.zeros(self.observation_space.shape, dtype=np.float32)
        observation[..., : self.game_channels] = self.game.state()
        return observation


def make_minatar_env(game: str) -> gym.Env:
    """MinAtar ``game`` (``space_invaders``, ``breakout``, ...), truncated after
    :data:`MINATAR_MAX_EPISODE_STEPS` steps. Training and evaluation use the same env: one life per
    game and raw rewards, so there is nothing to undo for scoring."""
    return gym.wrappers.TimeLimit(MinAtarEnv(game), max_episode_steps=MINATAR_MAX_EPISODE_STEPS)


class TransformObservation(gym.ObservationWrapper):
    """``obs[permutation] * signs``: a fixed re-encoding of a vector observation (one per task).

    The space becomes unbounded so every task of a sequence shares one observation space.
    """

    def __init__(self, env: gym.Env, *, permutation: np.ndarray, signs: np.ndarray) -> None:
        super().__init__(env)
        shape = env.observation_space.shape
        if shape is None or len(shape) != 1 or sorted(permutation) != list(range(shape[0])):
            raise ValueError(f"permutation {permutation} does not match observations {shape}")
        self.permutation = np.asarray(permutation, dtype=np.int64)
        self.signs = np.asarray(signs, dtype=np.float32)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=shape, dtype=np.float32)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return (observation[self.permutation] * self.signs).astype(np.float32)


def cartpole_transforms(num_tasks: int, *, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``num_tasks`` distinct, non-identity ``(permutation, signs)`` pairs for 4 inputs."""
    rng = np.random.default_rng(seed)
    transforms: list[tuple[np.ndarray, np.ndarray]] = []
    seen = {(tuple(range(4)), (1.0, 1.0, 1.0, 1.0))}
    while len(transforms) < num_tasks:
        permutation = rng.permutation(4)
        signs = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=4)
        key = (tuple(int(i) for i in permutation), tuple(float(s) for s in signs))
        if key not in seen:
            seen.add(key)
            transforms.append((permutation, signs))
    return transforms


def make_cartpole_env(permutation: np.ndarray, signs: np.ndarray) -> gym.Env:
    """``CartPole-v1`` (500-step episodes) seen through one task's fixed observation transform."""
    return TransformObservation(gym.make("CartPole-v1"), permutation=permutation, signs=signs)
