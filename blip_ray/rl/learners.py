"""``ContinualPPOLearner``: RLlib's PPO torch learner plus a continual-learning method.

PPO itself (loss, GAE, minibatching, gradient clipping) is RLlib's; this class only adds the hooks a
method needs, all with ``super()``:

- ``_uncompiled_update``: before every minibatch, the method's ``before_batch`` (HAT's gate
  temperature) with the minibatch's place in its epoch;
- ``compute_gradients``: after the backward pass, the method's ``before_step`` (HAT's and
  PackNet's gradient masks), before RLlib's gradient clipping;
- ``apply_gradients``: after every optimizer step, the method's ``after_step`` (BLIP's clipping);
  finite gradients (one fused check) are applied directly, anything else goes through RLlib's
  per-parameter handling;
- ``compute_loss_for_module``: PPO's loss plus the method's ``penalty`` (online EWC);
- ``configure_optimizers_for_module``: Adam with the paper's epsilon, learning rate owned here;
- ``after_gradient_based_update``: the linear learning-rate decay, restarted at every task;
- ``build``: PPO's GAE piece computes its value pass without autograd
  (:class:`ValueTargetsWithoutGradients`);
- ``get_state``/``set_state``: the method's own state (EWC's Fisher and anchor) in checkpoints.

The task-sequence callback drives the task lifecycle through :meth:`finish_task`,
:meth:`start_task`, :meth:`resume_task` and :meth:`evaluate` (via ``foreach_learner``). The run's
settings are the config's typed ``continual`` (``blip_ray.rl.config.ContinualPPOConfig``); the
method is the one ``blip_ray.methods`` class of that name, whose ``after_task`` reads the task's
last training batch through a :class:`~blip_ray.methods.TaskSamples`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import tree
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.connectors.learner import GeneralAdvantageEstimation
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.utils.annotations import override
from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME

from blip_ray.methods import ContinualMethod, TaskSamples
from blip_ray.rl.evaluation import evaluate_tasks
from blip_ray.rl.module import ContinualPPOModule
from blip_ray.rl.sequences import get_rl_sequence
from blip_ray.rl.settings import EVAL_STREAMS, ContinualSettings

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
    """Learner-pipeline piece that keeps a reference to the train batch's observations.

    The end-of-task step runs on the states of the task's last training batch (the official
    rollout buffer); the loss mask drops the bootstrap states PPO's connectors append.
    ``ContinualPPOConfig.build_learner_connector`` installs it after RLlib's default pieces (the
    batch is complete and on the device); PPO's GAE piece follows it.
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


def rollout_samples(observations: torch.Tensor | None, task: int) -> TaskSamples:
    """A task's last training batch as :class:`TaskSamples`: states without targets, scored by
    the task's policy head.

    Minibatches are always shuffled, as the official ``feed_forward_generator`` shuffles the
    rollout (its states come in env-step order): ``batch_size`` states each, the last partial one
    dropped; on the 2000-state rollout with 62 states that is 32 minibatches (1984 states).
    Fewer states than ``batch_size`` give one minibatch of all of them.
    """

    def batches(
        batch_size: int, *, shuffle: bool = True, limit: int | None = None
    ) -> Iterator[tuple[torch.Tensor, None]]:
        if observations is None or observations.shape[0] == 0:
            raise RuntimeError(
                f"task {task}: no training batch recorded, but the method's end-of-task step "
                "reads the states of the task's last training batch"
            )
        count = observations.shape[0]
        size = min(batch_size, count)
        number = count // size if limit is None else min(limit, count // size)
        order = torch.randperm(count, device=observations.device)
        for i in range(number):
            yield observations[order[i * size : (i + 1) * size]], None

    return TaskSamples(batches, lambda module, obs: module.policy_logits(obs, task))


class ValueTargetsWithoutGradients(GeneralAdvantageEstimation):
    """RLlib's GAE piece with its value pass over the batch run under ``torch.no_grad``.

    The values only become numpy advantages and value targets, but the learner connector runs
    with autograd on, so RLlib's piece records a graph of the whole batch's forward pass and
    drops it. The values, and so the batch, are the same.
    """

    def __call__(self, **kwargs: Any) -> Any:
        with torch.no_grad():
            return super().__call__(**kwargs)


def _all_finite(gradients: list[torch.Tensor]) -> bool:
    """Whether every element of ``gradients`` is finite: one fused norm instead of a check and
    a host sync per tensor (a NaN or inf anywhere makes the total norm NaN or inf)."""
    if not gradients:
        return True
    return bool(torch.isfinite(torch.nn.utils.get_total_norm(gradients, foreach=True)))


class ContinualPPOLearner(PPOTorchLearner):
    """PPO + one ``blip_ray.methods`` method on a :class:`ContinualPPOModule`."""

    @property
    def settings(self) -> ContinualSettings:
        return self.config.continual

    @functools.cached_property
    def last_batch(self) -> LastBatchObservations:
        pieces = [
            c for c in self._learner_connector.connectors if isinstance(c, LastBatchObservations)
        ]
        if not pieces:
            raise RuntimeError("build the learner from blip_ray.rl.config.ContinualPPOConfig")
        return pieces[0]

    @property
    def continual_module(self) -> ContinualPPOModule:
        return self.module[DEFAULT_MODULE_ID].unwrapped()

    @property
    def active_task(self) -> int:
        return int(self.continual_module.active_task)

    @override(PPOTorchLearner)
    def build(self) -> None:
        super().build()
        pipeline = self._learner_connector
        for i, piece in enumerate(pipeline.connectors):
            if type(piece) is GeneralAdvantageEstimation:
                pipeline.connectors[i] = ValueTargetsWithoutGradients(
                    gamma=piece.gamma, lambda_=piece.lambda_
                )
        self.method: ContinualMethod = self.settings.make_method()
        self.method.setup(self.continual_module)
        self.method.before_task(self.continual_module, 0)

    @override(PPOTorchLearner)
    def configure_optimizers_for_module(self, module_id: str, config: Any = None) -> None:
        # Adam with the paper's eps; registered without an RLlib schedule because the learning
        # rate restarts at every task (after_gradient_based_update sets it).
        params = self.get_parameters(self.module[module_id])
        ppo = self.settings.rl.ppo
        optimizer = torch.optim.Adam(params, lr=ppo.lr, eps=ppo.adam_eps)
        self.register_optimizer(module_id=module_id, optimizer=optimizer, params=params)

    @override(PPOTorchLearner)
    def _uncompiled_update(self, batch: dict, **kwargs: Any) -> Any:
        minibatches = self.settings.rl.ppo.num_minibatches
        position = getattr(self, "_minibatches_done", 0) % minibatches
        self._minibatches_done = position + 1
        self.method.before_batch(
            self.continual_module, self.active_task, epoch_fraction=position / minibatches
        )
        return super()._uncompiled_update(batch, **kwargs)

    @override(PPOTorchLearner)
    def compute_gradients(self, loss_per_module: dict[str, Any], **kwargs: Any) -> dict:
        gradients = super().compute_gradients(loss_per_module, **kwargs)
        if not gradients:
            return gradients
        self.method.before_step(self.continual_module, self.active_task)
        return {pid: self._params[pid].grad for pid in gradients}  # a method may swap a .grad

    @override(PPOTorchLearner)
    def apply_gradients(self, gradients_dict: dict) -> None:
        # RLlib checks every gradient twice, a host sync each, before every optimizer step;
        # with no lr schedulers or grad scalers (none are configured here) and all gradients
        # finite its steps reduce to the two loops below.
        gradients = [g for g in gradients_dict.values() if g is not None]
        if (
            self._lr_scheduler_classes is None
            and self._grad_scalers is None
            and _all_finite(gradients)
        ):
            for pid, grad in gradients_dict.items():
                self._params[pid].grad = grad
            for optimizer in self._optimizers():
                optimizer.step()
        else:
            super().apply_gradients(gradients_dict)  # RLlib's handling of NaN/inf gradients
        with torch.no_grad():
            self.method.after_step(self.continual_module, self.active_task)

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
            self.settings.rl.ppo.lr,
            lifetime_steps=int(timesteps.get(NUM_ENV_STEPS_SAMPLED_LIFETIME, 0)),
            task=self.active_task,
            steps_per_task=self.settings.rl.steps_per_task,
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
        self._set_learning_rate(self.settings.rl.ppo.lr)

    def finish_task(self, task: int) -> None:
        """The method's end-of-task step for ``task`` (which must be the active task)."""
        if task != self.active_task:
            raise RuntimeError(f"finish_task({task}) while task {self.active_task} is active")
        samples = rollout_samples(self.last_batch.take(), task)
        self.method.after_task(self.continual_module, task, samples=samples)
        self._weights_changed()

    def start_task(self, task: int) -> None:
        """Switch heads to ``task``, apply the method's rules, reset the optimizer and lr."""
        self.continual_module.set_active_task(task)
        self.method.before_task(self.continual_module, task)
        self._reset_optimizers()
        self._weights_changed()

    def resume_task(self) -> int:
        """Re-apply the active task's rules (e.g. ``frozen``'s trunk) after a restore."""
        self.method.before_task(self.continual_module, self.active_task)
        return self.active_task

    def record_returns(self, task: int, row: list[float], selection_row: list[float]) -> None:
        self.continual_module.record_returns(task, row, selection_row)
        self._weights_changed()

    def evaluate(self, *, tasks: int | None = None, stream: str = "final") -> list[float]:
        """Mean raw return of evaluation episodes (greedy or sampled, as the settings say) on
        each task, with this learner's module: the reported episodes (``final``) or those
        reserved for selection (``selection``), seeded apart (:data:`EVAL_STREAMS`)."""
        settings = self.settings
        return evaluate_tasks(
            self.continual_module,
            get_rl_sequence(settings.sequence),
            num_tasks=settings.num_tasks if tasks is None else tasks,
            episodes=settings.rl.eval_episodes,
            max_steps=settings.rl.eval_max_steps,
            seed=settings.seed + EVAL_STREAMS[stream],
            policy=settings.rl.eval_policy,
        )

    def status(self) -> dict[str, Any]:
        """Task counters, finished rows and the method's capacity, for the result dict."""
        module = self.continual_module
        status: dict[str, Any] = {
            "active_task": int(module.active_task),
            "tasks_done": int(module.tasks_done),
            "return_matrix": module.finished_rows(),
            "selection_matrix": module.finished_rows(selection=True),
        }
        capacity = self.method.capacity(module)
        if capacity is not None:
            status["capacity"] = capacity
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
        # The restored module may be on a later task: its rules (frozen) are not module state.
        self.resume_task()


def _to_numpy(value: Any) -> Any:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value


def _to_torch(value: Any, device: Any) -> Any:
    return torch.as_tensor(value, device=device) if isinstance(value, np.ndarray) else value
