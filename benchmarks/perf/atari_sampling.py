"""atari6: an env runner's env stepping against ale-py's own vector env in pairs; RLlib's sampling.

What it measures (CPU, one process and one thread, as one env runner with 1 CPU has), on atari6's
first game (KungFuMaster) with 16 envs (the sequence's batch: 16 envs x 125 steps), random
actions over the game's minimal action set:

- ``harness``: the envs an env runner steps: ``gymnasium.vector.SyncVectorEnv`` of the sequence's
  own env (``blip_ray.rl.envs.make_atari_env``: ALE with RLlib's DeepMind wrappers in Python, no-op
  reset, max-and-skip 4, episodic life, FIRE reset, 84x84 grayscale, reward clipping, 4-frame
  stack; the action padding of the continual env);
- ``ale_vector``: ``ale_py.vector_env.AtariVectorEnv`` with the same preprocessing done in C++
  (the same game, frames, skip, max-pool, no-ops, episodic life, FIRE reset, clipping, stack)
  and one thread;
- ``rllib_sampling``: for context, the env runner's whole ``sample()`` of the harness's PPO for
  atari6 (BLIP's quantized trunk, the module's forward, connectors, episode bookkeeping): how much
  of sampling the envs are.

After a warm-up, the pairs alternate ``ale_vector`` and ``harness`` chunks of 32 vector steps
(512 env steps each; odd pairs start with harness); ``atari_vector_ratio`` is the median over the
pairs of ale_vector's env steps per second over harness's, with the pairs' min and max.
``env_share_of_sampling`` is rllib_sampling's rate over harness's: the part of an env runner's
sampling time that stepping its envs takes; replacing the envs can save at most that part.

Run: ``.venv/bin/python benchmarks/perf/atari_sampling.py [--pairs N]`` (not in ``make bench``;
about 2 minutes on 2 cores). Prints ``key=value`` lines.
"""

from __future__ import annotations

import os
import statistics
import time

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # keep Ray on loopback

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import ray  # noqa: E402
import torch  # noqa: E402
from ale_py.vector_env import AtariVectorEnv  # noqa: E402
from pairs import (  # noqa: E402
    Run,
    interleaved_pairs,
    others_cpu_s,
    parse_pairs,
    print_ratio,
    start_local_ray,
    steady_rl_settings,
)

from blip_ray.rl import envs  # noqa: E402
from blip_ray.rl.config import build_ppo_config  # noqa: E402
from blip_ray.rl.sequences import get_rl_sequence  # noqa: E402
from blip_ray.rl.settings import PpoSettings  # noqa: E402

SEQUENCE, GAME, ROM = "atari6", 0, "kung_fu_master"
NUM_ENVS = 16
VECTOR_STEPS = 32
"""Vector steps per timed chunk."""
CHUNKS_PER_PAIR = 4


def stepper(env: gym.vector.VectorEnv, actions: int, seed: int) -> Run:
    """Random actions over ``actions``, ``VECTOR_STEPS`` vector steps per call."""
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)

    def run() -> tuple[int, float]:
        start = time.perf_counter()
        for _ in range(VECTOR_STEPS):
            env.step(rng.integers(actions, size=NUM_ENVS))
        return VECTOR_STEPS * NUM_ENVS, time.perf_counter() - start

    return run


def harness_envs() -> gym.vector.VectorEnv:
    sequence = get_rl_sequence(SEQUENCE)
    return gym.vector.SyncVectorEnv(
        [lambda: sequence.make_env(GAME, training=True) for _ in range(NUM_ENVS)]
    )


def ale_vector_envs() -> gym.vector.VectorEnv:
    return AtariVectorEnv(
        ROM,
        NUM_ENVS,
        num_threads=1,
        max_num_frames_per_episode=envs.ATARI_MAX_FRAMES,
        repeat_action_probability=0.0,
        img_height=envs.ATARI_DIM,
        img_width=envs.ATARI_DIM,
        stack_num=envs.ATARI_FRAME_STACK,
        frameskip=envs.ATARI_FRAMESKIP,
        maxpool=True,
        noop_max=envs.ATARI_NOOP_MAX,
        episodic_life=True,
        reward_clipping=True,
        use_fire_reset=True,
    )


def rllib_sampling_steps_per_s(samples: int = 4) -> float:
    """The env runner's ``sample()`` rate with the harness's PPO for atari6 (16 envs x 32)."""
    ppo = PpoSettings(num_envs=NUM_ENVS, rollout_length=VECTOR_STEPS)
    settings = steady_rl_settings(SEQUENCE, ppo)
    algo = build_ppo_config(settings).build_algo()
    try:
        runner = algo.env_runner_group.local_env_runner
        runner.sample()  # warm-up
        steps, start = 0, time.perf_counter()
        for _ in range(samples):
            steps += sum(len(episode) for episode in runner.sample())
        return steps / (time.perf_counter() - start)
    finally:
        algo.stop()


def main() -> None:
    pairs = parse_pairs(__doc__.split("\n", 1)[0], "ale_vector/harness")
    start = time.perf_counter()
    torch.set_num_threads(1)
    actions = get_rl_sequence(SEQUENCE).action_counts[GAME]
    harness, vector = harness_envs(), ale_vector_envs()
    assert vector.single_action_space.n == actions, "the minimal action sets differ"
    ale_run, harness_run = stepper(vector, actions, 0), stepper(harness, actions, 0)
    ale_run(), harness_run()  # warm-up
    others = others_cpu_s()
    stats = interleaved_pairs(ale_run, harness_run, pairs, CHUNKS_PER_PAIR)
    others = others_cpu_s() - others
    harness.close(), vector.close()
    start_local_ray()
    sampling = rllib_sampling_steps_per_s()
    ray.shutdown()
    harness_rate = statistics.median(stats.b)
    print(f"pairs={pairs}")
    print(f"num_envs={NUM_ENVS}")
    print(f"ale_vector_steps_per_s={statistics.median(stats.a):.1f}")
    print(f"harness_steps_per_s={harness_rate:.1f}")
    print_ratio("atari_vector_ratio", stats)
    print(f"rllib_sampling_steps_per_s={sampling:.1f}")
    print(f"env_share_of_sampling={sampling / harness_rate:.3f}")
    print(f"others_cpu_s={others:.2f}")
    print(f"wall_s={time.perf_counter() - start:.1f}")


if __name__ == "__main__":
    main()
