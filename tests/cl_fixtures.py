"""A synthetic task sequence and small networks: every method runs on them in under a second."""

from __future__ import annotations

import torch
from torch import nn

from blip_ray.data.base import Split, Task, TaskSequence
from blip_ray.models import ModelOptions, MultiHeadNet, trunk_linear
from blip_ray.models.task_state import TaskLinear
from blip_ray.quant import QuantLinear
from blip_ray.rl.sequences import get_rl_sequence
from blip_ray.rl.settings import ContinualSettings, RlSettings


def synthetic_sequence(
    *, tasks: int = 3, dim: int = 20, train: int = 300, seed: int = 0
) -> TaskSequence:
    """Binary tasks, each labelled by a different random linear rule on Gaussian inputs."""
    gen = torch.Generator().manual_seed(seed)

    def split(rule: torch.Tensor, n: int) -> Split:
        x = torch.randn(n, dim, generator=gen)
        return Split(x, (x @ rule).argmax(1))

    out = []
    for t in range(tasks):
        rule = torch.randn(dim, 2, generator=gen)
        out.append(Task(f"rule{t}", 2, split(rule, train), split(rule, 100), split(rule, 200)))
    return TaskSequence("synthetic", out, (dim,))


def small_net(
    sequence: TaskSequence,
    *,
    quantized: bool,
    bayesian: bool = False,
    hidden: int = 64,
    seed: int = 0,
    task_state: str | None = None,
) -> MultiHeadNet:
    """One trunk layer (plain, BLIP's quantized or UCL's Bayesian) -> ReLU -> per-task heads;
    ``task_state`` gives the plain layer HAT's gates or PackNet's owners."""
    torch.manual_seed(seed)
    dim = sequence.input_shape[0]
    if bayesian:
        options = ModelOptions((dim,), tuple(sequence.head_sizes), bayesian=True)
        layer = trunk_linear(options, dim, hidden)
    elif quantized:
        layer = QuantLinear(dim, hidden)
    else:
        layer = TaskLinear(dim, hidden, num_tasks=len(sequence), task_state=task_state)
    return MultiHeadNet(nn.Sequential(layer, nn.ReLU()), hidden, sequence.head_sizes)


def method_net(sequence: TaskSequence, method: object, **kwargs: object) -> MultiHeadNet:
    """:func:`small_net` built as ``method`` asks (quantized trunk, per-task state)."""
    return small_net(
        sequence,
        quantized=method.quantized_trunk,
        bayesian=method.bayesian_trunk,
        task_state=method.trunk_task_state,
        **kwargs,
    )


def grid_spec(name: str, *extra: str) -> str:
    """A deterministic 2-method x 2-seed pdigits grid of 3 tasks, under a second per task;
    ``extra`` lines are appended (``max_failures: 2``)."""
    lines = [
        f"name: {name}",
        "benchmark: pdigits",
        "fc_width: 32",
        "tasks: 3",
        "train: {lr: 0.1, epochs: 60, lr_patience: 1000}   # every epoch run",
        "methods: {finetune: {}, ewc: {lamb: 100}}",
        "seeds: [0, 1]",
        *extra,
    ]
    return "\n".join(lines) + "\n"


def continual_settings(
    method: str = "blip",
    *,
    sequence: str = "cartpole3",
    num_tasks: int | None = None,
    hp: dict | None = None,
    num_env_runners: int = 0,
    **rl: object,
) -> ContinualSettings:
    """One continual PPO run's settings: the sequence's defaults under ``rl`` (RlSettings
    fields, ``ppo`` a dict of overrides), on CPU."""
    return ContinualSettings(
        sequence=sequence,
        num_tasks=num_tasks or len(get_rl_sequence(sequence).tasks),
        method=method,
        method_hp=hp or {},
        seed=0,
        rl=RlSettings.for_sequence(sequence, num_env_runners=num_env_runners, **rl),
        num_gpus_per_learner=0,
    )


def ppo_learner(method: str, **hp: object) -> tuple[object, object]:
    """A cartpole3 PPO learner running ``method`` (2 tasks of 384 env steps), and
    ``update(lifetime)``: one PPO update on 96 env steps sampled with the learner's weights."""
    from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner
    from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME

    from blip_ray.rl.config import build_ppo_config

    ppo = {"num_envs": 2, "rollout_length": 48, "num_minibatches": 2, "num_epochs": 2}
    settings = continual_settings(method, hp=hp, num_tasks=2, steps_per_task=384, ppo=ppo)
    config = build_ppo_config(settings)
    learner = config.build_learner(env=get_rl_sequence("cartpole3").make_env(0))
    runner = SingleAgentEnvRunner(config=config)

    def update(lifetime: int) -> dict:
        runner.set_state(learner.get_state(components="rl_module", inference_only=True))
        episodes = runner.sample(num_timesteps=96, random_actions=False)
        return learner.update(
            episodes=episodes,
            timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: lifetime},
            num_epochs=2,
            minibatch_size=48,
            shuffle_batch_per_epoch=True,
        )

    return learner, update
