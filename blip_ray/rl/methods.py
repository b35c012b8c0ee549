"""The continual-learning methods of the RL track, one registry entry each, on the shared methods.

Every entry reuses a ``blip_ray.methods`` method for what is the same in both tracks (BLIP's prior,
per-step clipping; online EWC's penalty and state; ft-fix's trunk freezing) and adds only what is
RL-specific: the end-of-task step on the observations of the task's last training batch, with
actions sampled from the task's own policy head (the official ``ppo_blip.py``/``ppo_ewc.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch

from blip_ray import quant
from blip_ray.methods import METHODS, ContinualMethod, make_method
from blip_ray.methods.base import trunk_parameters
from blip_ray.methods.ewc import minibatch_fisher
from blip_ray.rl.module import ContinualPPOModule

#: ``end_task(method, module, task, observations) -> info``: the RL end-of-task step.
TaskEndFn = Callable[[ContinualMethod, ContinualPPOModule, int, torch.Tensor | None], dict]


@dataclasses.dataclass(frozen=True)
class RlMethod:
    """An RL method: a shared method, its RL defaults, and its end-of-task step."""

    name: str
    method: str
    """Name of the shared method in ``blip_ray.methods.METHODS``."""
    defaults: Mapping[str, Any]
    """RL values of the shared method's hyperparameters (the paper's Atari settings)."""
    end_task: TaskEndFn
    needs_last_batch: bool
    """Whether the end-of-task step reads the observations of the task's last training batch."""

    @property
    def quantized_trunk(self) -> bool:
        return METHODS[self.method].quantized_trunk

    def make(self, hyperparameters: Mapping[str, Any]) -> ContinualMethod:
        """The shared method with ``hyperparameters`` over the RL defaults (unknown ones raise)."""
        return make_method(self.method, **{**self.defaults, **hyperparameters})


RL_METHODS: dict[str, RlMethod] = {}


def register_rl_method(
    name: str,
    *,
    method: str,
    defaults: Mapping[str, Any] | None = None,
    needs_last_batch: bool = False,
) -> Callable[[TaskEndFn], TaskEndFn]:
    """Decorator on an end-of-task function, filling :data:`RL_METHODS` under ``name``."""

    def wrap(end_task: TaskEndFn) -> TaskEndFn:
        if name in RL_METHODS:
            raise ValueError(f"RL method {name!r} registered twice")
        if method not in METHODS:
            raise KeyError(f"RL method {name!r} refers to unknown method {method!r}")
        RL_METHODS[name] = RlMethod(
            name=name,
            method=method,
            defaults=dict(defaults or {}),
            end_task=end_task,
            needs_last_batch=needs_last_batch,
        )
        return end_task

    return wrap


def get_rl_method(name: str) -> RlMethod:
    """The registered RL method ``name``; a KeyError names the known ones."""
    if name not in RL_METHODS:
        raise KeyError(f"unknown RL method {name!r}; known: {', '.join(sorted(RL_METHODS))}")
    return RL_METHODS[name]


def fisher_minibatches(
    observations: torch.Tensor, batch_size: int, *, limit: int | None = None
) -> Iterator[torch.Tensor]:
    """Shuffled minibatches of ``batch_size`` states, the last partial one dropped.

    The official code runs ``feed_forward_generator(advantages, 32)`` on the 2000-state rollout:
    32 shuffled minibatches of 2000 // 32 = 62 (1984 states). Fewer states than ``batch_size``
    give one minibatch of all of them.
    """
    count = observations.shape[0]
    if count == 0:
        raise ValueError("no observations recorded for the end-of-task Fisher")
    size = min(batch_size, count)
    batches = count // size if limit is None else min(limit, count // size)
    order = torch.randperm(count, device=observations.device)
    for i in range(batches):
        yield observations[order[i * size : (i + 1) * size]]


def _require(observations: torch.Tensor | None, name: str) -> torch.Tensor:
    if observations is None:
        raise RuntimeError(
            f"{name}: no training batch recorded in this task; its end-of-task step needs the "
            "observations of the task's last training batch"
        )
    return observations


@register_rl_method("finetune", method="finetune")
def _finetune_end(
    method: ContinualMethod, module: ContinualPPOModule, task: int, observations: Any
) -> dict:
    """Fine-tuning keeps nothing between tasks."""
    return {}


@register_rl_method("ft_fix", method="frozen")
def _ft_fix_end(
    method: ContinualMethod, module: ContinualPPOModule, task: int, observations: Any
) -> dict:
    """The trunk freezes in ``FrozenMethod.before_task`` of the next task (the paper: after 0)."""
    return {}


@register_rl_method(
    "blip",
    method="blip",
    defaults={"f_prior": 5e-18, "fisher_batches": 32, "fisher_batch_size": 62},
    needs_last_batch=True,
)
def blip_end_task(
    method: ContinualMethod, module: ContinualPPOModule, task: int, observations: Any
) -> dict:
    """Fisher (sampled actions, DESIGN's scale) -> bits -> quantize, through ``quant.end_task``."""
    states = _require(observations, "blip")
    config = method.config

    def log_prob(net: ContinualPPOModule, obs: torch.Tensor) -> torch.Tensor:
        return quant.sampled_label_log_prob(net.policy_logits(obs, task))

    batches = fisher_minibatches(states, config.fisher_batch_size, limit=config.fisher_batches)
    samples = quant.end_task(module, task=task, batches=batches, log_prob_fn=log_prob)
    used = quant.capacity(module)
    return {"fisher_samples": samples, "capacity": used.total, "frozen_bits": used.frozen_bits}


@register_rl_method(
    "online_ewc", method="online_ewc", defaults={"fisher_batch_size": 62}, needs_last_batch=True
)
def online_ewc_end_task(
    method: ContinualMethod, module: ContinualPPOModule, task: int, observations: Any
) -> dict:
    """The official RL EWC Fisher (``minibatch_fisher`` of ``-log pi(sampled a | s)`` on the
    trunk), added to the running Fisher (``gamma = 1``: a plain sum), anchored at the trunk now."""
    states = _require(observations, "online_ewc")
    config = method.config
    params = trunk_parameters(module)  # type: ignore[arg-type]

    def loss(obs: torch.Tensor) -> torch.Tensor:
        return -quant.sampled_label_log_prob(module.policy_logits(obs, task))

    with torch.enable_grad():
        new = minibatch_fisher(params, fisher_minibatches(states, config.fisher_batch_size), loss)
    old = method.state_dict()["fisher"]
    fisher = new if old is None else {n: config.gamma * f + new[n] for n, f in old.items()}
    anchor = {n: p.detach().clone() for n, p in params.items()}
    method.load_state_dict({"fisher": fisher, "anchor": anchor})
    return {"fisher_sum": float(sum(f.sum() for f in fisher.values()))}
