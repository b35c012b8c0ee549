"""BLIP-PPO throughput against plain PPO on the paper's Atari network, measured alternately.

Run: ``.venv/bin/python benchmarks/perf/rl.py`` (part of ``make bench``; a few minutes on 2 CPU
cores). Prints ``key=value`` lines; ``rl_step_ratio`` = env steps per second of BLIP-PPO / plain
PPO, target >= 0.95.

Both runs use the same RLlib PPO, the same continual learner and module (conv 32-64-128 + fc 1024,
KungFuMaster's head) and the same config; "plain" is the fine-tuning method, whose trunk is plain
``nn.Conv2d``/``nn.Linear`` with no per-step work, while BLIP's trunk is quantized and clipped after
every optimizer step. The batch is cut from the paper's 16 x 125 to 8 x 32 env steps (2 epochs, 4
minibatches) so that a CPU iteration takes seconds; per optimizer step the work is the paper's.
Iterations alternate (BLIP, plain, BLIP, ...) after one warm-up each; the medians are compared.
"""

from __future__ import annotations

import os
import statistics
import time

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # keep Ray on loopback

import ray  # noqa: E402

from blip_ray.rl.config import PpoSettings, RlExperimentConfig, build_ppo_config  # noqa: E402

PPO_SETTINGS = PpoSettings(num_envs=8, rollout_length=32, num_epochs=2, num_minibatches=4)
ITERATIONS = 12


def build(method: str):
    cfg = RlExperimentConfig(
        sequence="atari6",
        method=method,
        steps_per_task=10_000_000,
        num_tasks=1,
        eval_interval=0,
        ppo=PPO_SETTINGS,
        num_env_runners=0,
        seed=0,
    )
    return build_ppo_config(cfg).build_algo()


def steps_per_second(algo) -> float:
    start = time.perf_counter()
    result = algo.train()
    elapsed = time.perf_counter() - start
    return result["env_runners"]["num_env_steps_sampled"] / elapsed


def main() -> None:
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        configure_logging=False,
        log_to_driver=False,
    )
    algos = {"blip": build("blip"), "plain": build("finetune")}
    for algo in algos.values():
        algo.train()  # warm-up: env start, first compilation of kernels
    rates: dict[str, list[float]] = {name: [] for name in algos}
    for i in range(ITERATIONS):
        order = ["blip", "plain"] if i % 2 == 0 else ["plain", "blip"]
        for name in order:
            rates[name].append(steps_per_second(algos[name]))
    blip, plain = statistics.median(rates["blip"]), statistics.median(rates["plain"])
    print(f"batch_env_steps={PPO_SETTINGS.train_batch_size}")
    print(f"blip_steps_per_s={blip:.2f}")
    print(f"plain_steps_per_s={plain:.2f}")
    print(f"rl_step_ratio={blip / plain:.3f}")
    print(f"targets_met={'yes' if blip / plain >= 0.95 else 'no'}")
    for algo in algos.values():
        algo.stop()
    ray.shutdown()


if __name__ == "__main__":
    main()
