"""BLIP-PPO through the harness's RLlib path against a minimal PyTorch PPO, on MinAtar, in pairs.

What it measures (CPU, one torch thread each, sampling and learning in the driver process): env
steps per second of PPO training iterations on minatar4's first game (SpaceInvaders, the slowest
MinAtar game to simulate) with

- ``rllib``: the harness's path: RLlib's PPO with the continual learner and module, BLIP's
  quantized ``minatar_cnn`` trunk and its per-step clipping (``blip_ray.rl.config``);
- ``plain``: a single-file PPO written here in the CleanRL style: the same network (the same
  ``minatar_cnn`` trunk, plain, one policy and one value head), the same vectorized envs
  (``gymnasium.vector.SyncVectorEnv`` of the sequence's own env), batch, epochs, minibatches,
  GAE, clipped losses, Adam and gradient clipping.

After one warm-up iteration each, the pairs alternate ``rllib`` and ``plain`` (odd pairs start
with plain), so drift falls on both sides alike. Each pair gives one ratio of env steps per second,
RLlib path / plain PPO; ``minatar_rllib_ratio`` is the median over the pairs with the pairs' min
and max. The batch is 64 envs (as the sequence's default) x 32 steps in 4 minibatches for 2
epochs, so an iteration takes a fraction of a second; per optimizer step the work is the
sequence's.

Run: ``.venv/bin/python benchmarks/perf/minatar_throughput.py [--pairs N]`` (part of ``make
bench``; about 30 s on 2 cores with the default 5 pairs; not ``minatar.py``: run as a script, that
name would shadow the ``minatar`` package). Prints ``key=value`` lines: ``rllib_steps_per_s``,
``plain_steps_per_s``, ``minatar_rllib_ratio`` with ``_min``/``_max``/``_by_pair`` (target >= 0.7),
``others_cpu_s``, ``wall_s`` and ``targets_met``.
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
from pairs import (  # noqa: E402
    Run,
    interleaved_pairs,
    others_cpu_s,
    parse_pairs,
    print_ratio,
    start_local_ray,
    steady_rl_settings,
    timed_iteration,
    verdict,
)
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from blip_ray.models import ModelOptions  # noqa: E402
from blip_ray.models.minatar import minatar_trunk  # noqa: E402
from blip_ray.rl.config import build_ppo_config  # noqa: E402
from blip_ray.rl.sequences import get_rl_sequence  # noqa: E402
from blip_ray.rl.settings import PpoSettings  # noqa: E402

SEQUENCE = "minatar4"
PPO = PpoSettings(num_envs=64, rollout_length=32, num_epochs=2, num_minibatches=4)
ITERATIONS_PER_PAIR = 6
"""Training iterations per side and pair."""
TARGET = 0.7


def rllib_iteration() -> tuple[Run, object]:
    algo = build_ppo_config(steady_rl_settings(SEQUENCE, PPO)).build_algo()
    return timed_iteration(algo), algo


class Agent(nn.Module):
    """The ``minatar_cnn`` trunk with one policy and one value head (CleanRL's layout)."""

    def __init__(self, actions: int) -> None:
        super().__init__()
        options = ModelOptions((10, 10, 10), (actions,), variant="rl")
        self.trunk, features = minatar_trunk(options)
        self.pi, self.vf = nn.Linear(features, actions), nn.Linear(features, 1)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.trunk(obs.permute(0, 3, 1, 2))
        return self.pi(features), self.vf(features).squeeze(-1)


def plain_iteration() -> Run:
    """One PPO iteration per call: a rollout of the vectorized envs, GAE, then the updates."""
    sequence = get_rl_sequence(SEQUENCE)
    envs = gym.vector.SyncVectorEnv(
        [lambda: sequence.make_env(0, training=True) for _ in range(PPO.num_envs)]
    )
    agent = Agent(int(envs.single_action_space.n))
    optimizer = torch.optim.Adam(agent.parameters(), lr=PPO.lr, eps=PPO.adam_eps)
    steps, n = PPO.rollout_length, PPO.num_envs
    obs = torch.as_tensor(envs.reset(seed=0)[0])
    done = torch.zeros(n)

    def run() -> tuple[int, float]:
        nonlocal obs, done
        start = time.perf_counter()
        buf_obs = torch.zeros((steps, n, *obs.shape[1:]))
        buf_act, buf_logp, buf_rew, buf_done, buf_val = (torch.zeros(steps, n) for _ in range(5))
        with torch.no_grad():
            for t in range(steps):
                logits, value = agent(obs)
                dist = torch.distributions.Categorical(logits=logits)
                action = dist.sample()
                buf_obs[t], buf_done[t], buf_val[t] = obs, done, value
                buf_act[t], buf_logp[t] = action, dist.log_prob(action)
                nxt, reward, term, trunc, _ = envs.step(action.numpy())
                buf_rew[t] = torch.as_tensor(reward, dtype=torch.float32)
                obs = torch.as_tensor(nxt)
                done = torch.as_tensor(np.logical_or(term, trunc), dtype=torch.float32)
            next_value = agent(obs)[1]
            advantages, last = torch.zeros(steps, n), torch.zeros(n)
            for t in reversed(range(steps)):
                not_done = 1.0 - (done if t == steps - 1 else buf_done[t + 1])
                following = next_value if t == steps - 1 else buf_val[t + 1]
                delta = buf_rew[t] + PPO.gamma * following * not_done - buf_val[t]
                last = delta + PPO.gamma * PPO.gae_lambda * not_done * last
                advantages[t] = last
            returns = advantages + buf_val
        b_obs, b_act = buf_obs.flatten(0, 1), buf_act.flatten().long()
        b_logp, b_adv, b_ret = buf_logp.flatten(), advantages.flatten(), returns.flatten()
        size = steps * n // PPO.num_minibatches
        for _ in range(PPO.num_epochs):
            for idx in torch.randperm(steps * n).split(size):
                logits, value = agent(b_obs[idx])
                logp = F.log_softmax(logits, dim=1)
                new_logp = logp.gather(1, b_act[idx, None]).squeeze(1)
                ratio = (new_logp - b_logp[idx]).exp()
                adv = b_adv[idx]
                adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                clip = PPO.clip_param
                policy_loss = -torch.min(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv).mean()
                value_loss = (value - b_ret[idx]).square().mean()
                entropy = -(logp.exp() * logp).sum(1).mean()
                loss = policy_loss + PPO.value_loss_coeff * value_loss - PPO.entropy_coeff * entropy
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), PPO.grad_clip)
                optimizer.step()
        return steps * n, time.perf_counter() - start

    return run


def main() -> None:
    pairs = parse_pairs(__doc__.split("\n", 1)[0], "RLlib/plain")
    start = time.perf_counter()
    torch.set_num_threads(1)
    start_local_ray()
    rllib, algo = rllib_iteration()
    plain = plain_iteration()
    rllib(), plain()  # warm-up: env start, first allocations and kernel choices
    others = others_cpu_s()
    stats = interleaved_pairs(rllib, plain, pairs, ITERATIONS_PER_PAIR)
    others = others_cpu_s() - others
    algo.stop()
    ray.shutdown()
    print(f"pairs={pairs}")
    print(f"batch_env_steps={PPO.train_batch_size}")
    print(f"iterations_per_pair={ITERATIONS_PER_PAIR}")
    print(f"rllib_steps_per_s={statistics.median(stats.a):.2f}")
    print(f"plain_steps_per_s={statistics.median(stats.b):.2f}")
    print_ratio("minatar_rllib_ratio", stats)
    print(f"others_cpu_s={others:.2f}")
    print(f"wall_s={time.perf_counter() - start:.1f}")
    print(verdict(pairs, stats.median >= TARGET))


if __name__ == "__main__":
    main()
