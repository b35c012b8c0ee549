"""Interleaved A/B pairs, the measurement the overhead benchmarks share.

A pair times ``chunks`` calls of each side, alternating A, B, B, A, A, B, ... (odd pairs start
with B), so a slow drift or a short disturbance falls on both sides alike. Each pair gives one
ratio, A's rate over B's; a benchmark reports the median over the pairs with their min and max.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

DEFAULT_PAIRS = 5
MIN_PAIRS_FOR_VERDICT = 5

Run = Callable[[], tuple[float, float]]
"""One timed call: (work done, e.g. epochs or env steps; seconds)."""


@dataclass(frozen=True)
class PairStats:
    """Per pair, each side's rate (work per second); ratios are A's over B's."""

    a: list[float]
    b: list[float]

    @property
    def ratios(self) -> list[float]:
        return [a / b for a, b in zip(self.a, self.b, strict=True)]

    @property
    def median(self) -> float:
        return statistics.median(self.ratios)

    @property
    def spread(self) -> tuple[float, float]:
        return min(self.ratios), max(self.ratios)


def interleaved_pairs(a: Run, b: Run, pairs: int, chunks: int) -> PairStats:
    """``pairs`` pairs of A's and B's rates over ``chunks`` calls each (see the module doc)."""
    rates: dict[str, list[float]] = {"a": [], "b": []}
    for i in range(pairs):
        work, seconds = {"a": 0.0, "b": 0.0}, {"a": 0.0, "b": 0.0}
        for j in range(chunks):
            for key in ("a", "b") if (i + j) % 2 == 0 else ("b", "a"):
                done, spent = (a if key == "a" else b)()
                work[key] += done
                seconds[key] += spent
        for key in rates:
            rates[key].append(work[key] / seconds[key])
    return PairStats(rates["a"], rates["b"])


def others_cpu_s() -> float:
    """CPU seconds used so far by all other processes (and the hypervisor), from /proc/stat."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:9]]  # user nice system idle iowait ...
    busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
    own = os.times()
    return busy - own.user - own.system


def parse_pairs(description: str, sides: str) -> int:
    """The ``--pairs N`` flag of a benchmark script (``sides``: e.g. ``BLIP/SGD``)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--pairs",
        type=int,
        default=DEFAULT_PAIRS,
        help=f"interleaved {sides} pairs (default {DEFAULT_PAIRS}; the verdict needs "
        f">= {MIN_PAIRS_FOR_VERDICT})",
    )
    args = parser.parse_args()
    if args.pairs < 1:
        parser.error("--pairs must be >= 1")
    return args.pairs


def verdict(pairs: int, met: bool) -> str:
    """The ``targets_met=`` line: ``unchecked`` with too few pairs to trust the median."""
    return f"targets_met={'unchecked' if pairs < MIN_PAIRS_FOR_VERDICT else 'yes' if met else 'no'}"


def print_ratio(key: str, stats: PairStats) -> None:
    """``key=``, ``key_min=``, ``key_max=`` and ``key_by_pair=`` lines of the pairs' ratios."""
    low, high = stats.spread
    print(f"{key}={stats.median:.3f}")
    print(f"{key}_min={low:.3f}")
    print(f"{key}_max={high:.3f}")
    print(f"{key}_by_pair={','.join(f'{r:.3f}' for r in stats.ratios)}")


def start_local_ray() -> None:
    """A local Ray instance of 2 CPUs on loopback, quiet, for an RL benchmark."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        configure_logging=False,
        log_to_driver=False,
    )


def steady_rl_settings(
    sequence: str, ppo: Any, *, method: str = "blip", hp: dict[str, Any] | None = None
) -> Any:
    """The continual PPO settings under which the RL benchmarks time training iterations: the
    sequence's first task, which never ends (no end-of-task step), no evaluation, sampling and
    learning in the driver, a CPU learner."""
    from blip_ray.rl.settings import ContinualSettings, RlSettings

    rl = RlSettings(
        steps_per_task=1_000_000_000,
        ppo=ppo,
        eval_episodes=1,
        eval_interval=0,
        eval_max_steps=100,
        num_env_runners=0,
    )
    return ContinualSettings(sequence, 1, method, dict(hp or {}), 0, rl, num_gpus_per_learner=0)


def timed_iteration(algo: Any) -> Run:
    """A closure running one training iteration of the RLlib ``algo``: its env steps, seconds."""

    def run() -> tuple[int, float]:
        start = time.perf_counter()
        result = algo.train()
        return int(result["env_runners"]["num_env_steps_sampled"]), time.perf_counter() - start

    return run
