"""BLIP-PPO throughput against plain PPO on the paper's Atari network, in interleaved pairs.

What it measures (CPU, 2 Ray CPUs, sampling and learning in the driver process): env steps per
second of PPO training iterations with BLIP's continual learner over the same with fine-tuning's.
Both use the same RLlib PPO, the same continual learner and module (conv 32-64-128 + fc 1024,
KungFuMaster's head, the first task of ``atari6``) and the same settings; "plain" is the
fine-tuning method, whose trunk is plain ``nn.Conv2d``/``nn.Linear`` with no per-step work, while
BLIP's trunk is quantized and clipped after every optimizer step. The batch is cut from the
paper's 16 x 125 to 8 x 32 env steps (2 epochs, 4 minibatches) so that a CPU iteration takes about
1.3 s; per optimizer step the work is the paper's.

After two warm-up iterations each, the pairs run one after the other; a pair is 12 training
iterations of each side (3072 env steps, ~15 s a side), alternating BLIP, plain, plain, BLIP, BLIP,
plain, ... (odd pairs start with plain), so drift and short disturbances fall on both sides alike.
Each pair gives one ratio of env steps per second, BLIP / plain; ``rl_step_ratio`` is the median
over the pairs, with the pairs' min and max as its spread.

Run: ``.venv/bin/python benchmarks/perf/rl.py [--pairs N]`` (part of ``make bench``; about 3 min
on 2 CPU cores with the default 5 pairs). Prints ``key=value`` lines: ``pairs``,
``blip_steps_per_s`` / ``plain_steps_per_s`` (medians over the pairs), ``rl_step_ratio`` with
``_min`` / ``_max`` and every pair's ratio (``_by_pair``), target >= 0.95; ``others_cpu_s`` (CPU
time other processes used while timing, Ray's own daemons included: about 7 s on a quiet
machine, re-run if much more), ``wall_s`` and ``targets_met=yes|no`` (``unchecked`` with fewer
than 5 pairs). On a quiet 2-core machine expect a ratio of about 0.96-0.99, repeating within about
+-0.02, with pair spreads of 0.02-0.07: BLIP adds the per-step clamp (about 2% of the learner
update) and keeps the last batch's observations for the end-of-task Fisher.
"""

from __future__ import annotations

import os
import statistics
import time

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # keep Ray on loopback

import ray  # noqa: E402
from pairs import (  # noqa: E402
    interleaved_pairs,
    others_cpu_s,
    parse_pairs,
    print_ratio,
    start_local_ray,
    steady_rl_settings,
    timed_iteration,
    verdict,
)

from blip_ray.rl.config import build_ppo_config  # noqa: E402
from blip_ray.rl.settings import PpoSettings  # noqa: E402

SEQUENCE = "atari6"
PPO_SETTINGS = PpoSettings(num_envs=8, rollout_length=32, num_epochs=2, num_minibatches=4)
ITERATIONS_PER_PAIR = 12
"""Training iterations per side and pair."""
WARMUP_ITERATIONS = 2
TARGET = 0.95


def main() -> None:
    pairs = parse_pairs(__doc__.split("\n", 1)[0], "BLIP/plain")
    start = time.perf_counter()
    start_local_ray()
    algos = {
        side: build_ppo_config(steady_rl_settings(SEQUENCE, PPO_SETTINGS, method=m)).build_algo()
        for side, m in (("blip", "blip"), ("plain", "finetune"))
    }
    for _ in range(WARMUP_ITERATIONS):  # env start, first allocations and kernel choices
        for algo in algos.values():
            algo.train()
    others = others_cpu_s()
    stats = interleaved_pairs(
        timed_iteration(algos["blip"]),
        timed_iteration(algos["plain"]),
        pairs,
        ITERATIONS_PER_PAIR,
    )
    others = others_cpu_s() - others
    for algo in algos.values():
        algo.stop()
    ray.shutdown()
    print(f"pairs={pairs}")
    print(f"batch_env_steps={PPO_SETTINGS.train_batch_size}")
    print(f"iterations_per_pair={ITERATIONS_PER_PAIR}")
    print(f"blip_steps_per_s={statistics.median(stats.a):.2f}")
    print(f"plain_steps_per_s={statistics.median(stats.b):.2f}")
    print_ratio("rl_step_ratio", stats)
    print(f"others_cpu_s={others:.2f}")
    print(f"wall_s={time.perf_counter() - start:.1f}")
    print(verdict(pairs, stats.median >= TARGET))


if __name__ == "__main__":
    main()
