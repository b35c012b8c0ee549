"""``ContinualPPOLearner``: RLlib's PPO torch learner plus a continual-learning method.

PPO itself (loss, GAE, minibatching, gradient clipping) is RLlib's; this class only adds the hooks a
method needs, all with ``super()``:

- ``apply_gradients``: after every optimizer step, the method's ``after_step`` (BLIP's clipping);
- ``compute_loss_for_module``: PPO's loss plus the method's ``penalty`` (online EWC);
- ``configure_optimizers_for_module``: Adam with the paper's epsilon, learning rate owned here;
- ``after_gradient_based_update``: the linear learning-rate decay, restarted at every task;
- ``get_state``/``set_state``: the method's own state (EWC's Fisher and anchor) in checkpoints.

The task-sequence callback drives the task lifecycle through :meth:`finish_task`,
:meth:`start_task`, :meth:`resume_task` and :meth:`evaluate` (via ``foreach_learner``). Which method
runs is ``learner_config_dict["continual"]["method"]``, looked up in ``RL_METHODS``.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import tree
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.utils.annotations import override
from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME

from blip_ray import quant
from blip_ray.methods import ContinualMethod
from blip_ray.rl.evaluation import evaluate_tasks
from blip_ray.rl.methods import RlMethod, get_rl_method
from blip_ray.rl.module import ContinualPPOModule
from blip_ray.rl.sequences import get_rl_sequence
from blip_ray.rl.settings import ContinualSettings, settings_from_config

#: Key of the method's own state in the learner's ``get_state`` (and checkpoints).
METHOD_STATE = "continual_method"


def task_learning_rate(
    initial: float, *, lifetime_steps: int, task: int, steps_per_task: int
) -> float:
    """``initial * (1 - steps into the task / steps_per_task)``, clamped to ``[0, initial]``.

    The official ``update_linear_schedule`` at update j of a task uses ``lr (1 - j / updates)``;
    set after each update from the env steps sampled so far, this gives update j exactly that.
    """
    progress = (lifetime_steps - task * steps_per_task) / steps_per_task
    return initial * min(1.0, max(0.0, 1.0 - progress))


class LastBatchObservations(ConnectorV2):
    """Last learner-pipeline piece: keeps a reference to the train batch's observations.

    The end-of-task Fisher runs on the states of the task's last training batch (the official
    rollout buffer); the loss mask drops the bootstrap states PPO's connectors append.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.observations: torch.Tensor | None = None
        self.mask: torch.Tensor | None = None

    def __call__(self, *, rl_module: Any, batch: dict, episodes: Any, **kwargs: Any) -> Any:
        module_batch = batch.get(DEFAULT_MODULE_ID)
        if module_batch is not None and Columns.OBS in module_batch:
            self.observations = module_batch[Columns.OBS]
            self.mask = module_batch.get(Columns.LOSS_MASK)
        return batch

    def take(self) -> torch.Tensor | None:
        """The recorded training states (bootstrap states removed), then forget them."""
        observations, mask = self.observations, self.mask
        self.observations = self.mask = None
        if observations is None:
            return None
        return observations if mask is None else observations[mask.bool()]


class ContinualPPOLearner(PPOTorchLearner):
    """PPO + one RL method from ``RL_METHODS`` on a :class:`ContinualPPOModule`."""

    @functools.cached_property
    def settings(self) -> ContinualSettings:
        return settings_from_config(self.config)

    @functools.cached_property
    def rl_method(self) -> RlMethod:
        return get_rl_method(self.settings.method)

    @property
    def continual_module(self) -> ContinualPPOModule:
        return self.module[DEFAULT_MODULE_ID].unwrapped()

    @property
    def active_task(self) -> int:
        return int(self.continual_module.active_task)

    @override(PPOTorchLearner)
    def build(self) -> None:
        super().build()
        self.method: ContinualMethod = self.rl_method.make(self.settings.method_hp)
        self.last_batch = LastBatchObservations()
        if self.rl_method.needs_last_batch:
            if self._learner_connector is None:
                raise RuntimeError(f"{self.settings.method} needs the learner connector pipeline")
            # After GAE, as PPOLearner.build appends it: the batch is complete and on device.
            self._learner_connector.append(self.last_batch)
        self.method.setup(self.continual_module)  # type: ignore[arg-type]
        self.method.before_task(self.continual_module, 0, None)  # type: ignore[arg-type]

    @override(PPOTorchLearner)
    def configure_optimizers_for_module(self, module_id: str, config: Any = None) -> None:
        # Adam with the paper's eps; registered without an RLlib schedule because the learning
        # rate restarts at every task (after_gradient_based_update sets it).
        params = self.get_parameters(self.module[module_id])
        optimizer = torch.optim.Adam(params, lr=self.settings.lr, eps=self.settings.adam_eps)
        self.register_optimizer(module_id=module_id, optimizer=optimizer, params=params)

    @override(PPOTorchLearner)
    def apply_gradients(self, gradients_dict: dict) -> None:
        super().apply_gradients(gradients_dict)
        with torch.no_grad():
            self.method.after_step(self.continual_module, self.active_task)  # type: ignore[arg-type]

    @override(PPOTorchLearner)
    def compute_loss_for_module(
        self, *, module_id: str, config: Any, batch: dict[str, Any], fwd_out: dict[str, Any]
    ) -> torch.Tensor:
        loss = super().compute_loss_for_module(
            module_id=module_id, config=config, batch=batch, fwd_out=fwd_out
        )
        module = self.module[module_id].unwrapped()
        penalty = self.method.penalty(module, int(module.active_task), batch[Columns.OBS])
        if penalty is None:
            return loss
        self.metrics.log_value((module_id, "method_penalty"), penalty.detach(), window=1)
        return loss + penalty

    @override(PPOTorchLearner)
    def after_gradient_based_update(self, *, timesteps: dict[str, Any]) -> None:
        lr = task_learning_rate(
            self.settings.lr,
            lifetime_steps=int(timesteps.get(NUM_ENV_STEPS_SAMPLED_LIFETIME, 0)),
            task=self.active_task,
            steps_per_task=self.settings.steps_per_task,
        )
        self._set_learning_rate(lr)
        super().after_gradient_based_update(timesteps=timesteps)  # logs it, runs PPO's schedules

    def _optimizers(self) -> list[torch.optim.Optimizer]:
        module_ids = list(self.module.keys())  # a MultiRLModule is not iterable
        return [opt for mid in module_ids for _, opt in self.get_optimizers_for_module(mid)]

    def _set_learning_rate(self, lr: float) -> None:
        for optimizer in self._optimizers():
            for group in optimizer.param_groups:
                group["lr"] = lr

    def _reset_optimizers(self) -> None:
        """Fresh Adam moments and the initial learning rate (the official ``renew_optimizer``)."""
        for optimizer in self._optimizers():
            optimizer.state.clear()
        self._set_learning_rate(self.settings.lr)

    def finish_task(self, task: int) -> dict[str, Any]:
        """The method's end-of-task step for ``task`` (which must be the active task)."""
        if task != self.active_task:
            raise RuntimeError(f"finish_task({task}) while task {self.active_task} is active")
        observations = self.last_batch.take() if self.rl_method.needs_last_batch else None
        info = self.rl_method.end_task(self.method, self.continual_module, task, observations)
        self._weights_changed()
        return info

    def start_task(self, task: int) -> None:
        """Switch heads to ``task``, apply the method's rules, reset the optimizer and lr."""
        self.continual_module.set_active_task(task)
        self.method.before_task(self.continual_module, task, None)  # type: ignore[arg-type]
        self._reset_optimizers()
        self._weights_changed()

    def resume_task(self) -> int:
        """Re-apply the active task's rules (e.g. ft-fix's frozen trunk) after a restore."""
        self.method.before_task(self.continual_module, self.active_task, None)  # type: ignore[arg-type]
        return self.active_task

    def record_returns(self, task: int, row: list[float]) -> None:
        self.continual_module.record_returns(task, row)
        self._weights_changed()

    def evaluate(self, *, tasks: int | None = None) -> list[float]:
        """Mean raw return of deterministic episodes on each task, with this learner's module."""
        settings = self.settings
        return evaluate_tasks(
            self.continual_module,
            get_rl_sequence(settings.sequence),
            num_tasks=settings.num_tasks if tasks is None else tasks,
            episodes=settings.eval_episodes,
            max_steps=settings.eval_max_steps,
            seed=settings.eval_seed,
        )

    def status(self) -> dict[str, Any]:
        """Task counters, finished rows and (BLIP) capacity, for the result dict."""
        module = self.continual_module
        status: dict[str, Any] = {
            "active_task": int(module.active_task),
            "tasks_done": int(module.tasks_done),
            "return_matrix": module.finished_rows(),
        }
        if quant.blip_layers(module):
            status["capacity"] = quant.capacity(module).total
        return status

    def _weights_changed(self) -> None:
        # Env runners skip weight syncs whose sequence number they have seen; weights changed
        # outside update() must get a new one or the next sync would be ignored.
        self._weights_seq_no += 1

    @override(PPOTorchLearner)
    def get_state(
        self, components: Any = None, *, not_components: Any = None, **kwargs: Any
    ) -> dict[str, Any]:
        state = super().get_state(components, not_components=not_components, **kwargs)
        if self._check_component(METHOD_STATE, components, not_components):
            state[METHOD_STATE] = tree.map_structure(_to_numpy, self.method.state_dict())
        return state

    @override(PPOTorchLearner)
    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        if METHOD_STATE in state:
            device = self._device
            self.method.load_state_dict(
                tree.map_structure(lambda x: _to_torch(x, device), state[METHOD_STATE])
            )
        # The restored module may be on a later task: its rules (ft-fix) are not module state.
        self.resume_task()


def _to_numpy(value: Any) -> Any:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value


def _to_torch(value: Any, device: Any) -> Any:
    import numpy as np

    return torch.as_tensor(value, device=device) if isinstance(value, np.ndarray) else value
