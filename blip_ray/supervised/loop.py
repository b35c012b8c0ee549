"""The paper's supervised protocol over a task sequence, one record per finished task.

Per task t (official ``approaches/blip.py``, HAT's loop): SGD with the method's penalty, the
learning rate divided by ``lr_factor`` after ``lr_patience`` epochs without a lower validation loss,
stop when it falls under ``lr_min`` or after ``epochs``; restore the best-validation weights; the
method's end-of-task step; then every task (seen and unseen) is evaluated with its own head.

Randomness is re-seeded from ``(seed, t)`` at every task start (:data:`TASK_SEED_STRIDE`), so a run
restarted from the state after any finished task reproduces the uninterrupted run exactly (same
seed, CPU).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from blip_ray.data.base import Split, Task, TaskSequence
from blip_ray.methods.base import ContinualMethod, TaskSamples
from blip_ray.methods.memory import join, multi_head_loss
from blip_ray.models.base import MultiHeadNet
from blip_ray.records.rows import TaskRow

#: Task ``t`` of seed ``s`` draws from ``s * TASK_SEED_STRIDE + t``: a prime above any task count,
#: so no two (seed, task) pairs share a stream.
TASK_SEED_STRIDE = 100_003
#: A minibatch's task: one index, or (samples of several tasks) each sample's task id.
Tasks = int | torch.Tensor


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the run cannot continue meaningfully."""


@dataclass(frozen=True)
class TrainSettings:
    """Training protocol settings (defaults: the official BLIP code's)."""

    lr: float = 0.01
    """Initial SGD learning rate of every task."""
    batch_size: int = 64
    """Training minibatch size."""
    epochs: int = 200
    """Most epochs per task."""
    lr_patience: int = 5
    """Epochs without a lower validation loss before the learning rate is divided."""
    lr_factor: float = 3.0
    """Divisor of the learning rate on a plateau."""
    lr_min: float = 1e-4
    """Training of a task stops once the learning rate falls under this."""
    momentum: float = 0.0
    """SGD momentum (0 in the paper)."""
    clipgrad: float = 100.0
    """Gradient-norm clip of the official code."""
    eval_batch_size: int = 1000
    """Minibatch size for evaluation (no effect on results)."""
    device: str = "cpu"
    """``cpu``, ``cuda`` or ``auto`` (cuda when available)."""

    def __post_init__(self) -> None:
        for name in ("lr", "batch_size", "epochs", "lr_factor", "eval_batch_size"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)}")
        for name in ("lr_patience", "lr_min", "momentum", "clipgrad"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if self.device not in ("cpu", "cuda", "auto"):
            raise ValueError(f"device: expected cpu, cuda or auto, got {self.device!r}")


@dataclass
class LoopState:
    """Everything needed to continue after ``next_task - 1``: checkpoint this."""

    next_task: int
    model: dict[str, torch.Tensor]
    method: dict[str, Any]
    rows: list[list[float]]
    initial_row: list[float]
    valid_rows: list[list[float]] = field(default_factory=list)
    """Validation accuracy rows (checkpoints from before them hold none)."""
    initial_valid_row: list[float] | None = None

    FILE = "loop_state.pt"

    @classmethod
    def load(cls, directory: Path) -> LoopState:
        """The state :meth:`TaskRecord.save` wrote into ``directory``."""
        return cls(**torch.load(Path(directory) / cls.FILE, weights_only=True))


@dataclass
class TaskRecord(TaskRow):
    """What one finished task produced: the reported row, training diagnostics and the state."""

    best_valid_loss: float = math.nan
    final_lr: float = math.nan
    state: LoopState | None = field(default=None, repr=False)

    def save(self, directory: Path) -> None:
        """Checkpoint the loop state after this task into ``directory``."""
        torch.save(dataclasses.asdict(self.state), Path(directory) / LoopState.FILE)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA GPU is available; use cpu or auto")
    return torch.device(name)


class TaskBatches:
    """Minibatches of a task's splits, transformed and moved to the device.

    ``joined`` adds earlier tasks whose data the task trains on too (joint training): training
    minibatches are then drawn from the union and carry each sample's task id, and the validation
    loss is taken over the union of the validation splits.
    """

    def __init__(
        self,
        task: Task,
        device: torch.device,
        generator: torch.Generator,
        *,
        task_id: int = 0,
        joined: Mapping[int, Task] | None = None,
    ) -> None:
        self.task, self.device, self.generator, self.task_id = task, device, generator, task_id
        self.tasks = {**(joined or {}), task_id: task}
        self._joined_train: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def __call__(
        self, split: Split, batch_size: int, *, shuffle: bool = False, limit: int | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(split)
        order = torch.randperm(n, generator=self.generator) if shuffle else None
        count = (
            math.ceil(n / batch_size) if limit is None else min(limit, math.ceil(n / batch_size))
        )
        for b in range(count):
            sl = slice(b * batch_size, (b + 1) * batch_size)
            idx = order[sl] if order is not None else sl
            x = self.task.inputs(split.x[idx]).to(self.device, non_blocking=True)
            yield x, split.y[idx].to(self.device, non_blocking=True)

    def training(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, Tasks]]:
        """One shuffled pass over the training data: ``(inputs, labels, task)``, ``task`` the
        task's index, or each sample's task id when several tasks are joined."""
        if len(self.tasks) == 1:
            for x, y in self(self.task.train, batch_size, shuffle=True):
                yield x, y, self.task_id
            return
        x, y, tasks = self._union()
        order = torch.randperm(len(y), generator=self.generator)
        for start in range(0, len(order), batch_size):
            # Sorted, the batch's samples are grouped by task (the union is in task order).
            idx = order[start : start + batch_size].sort().values
            yield (
                self._inputs(x[idx], tasks[idx]).to(self.device, non_blocking=True),
                y[idx].to(self.device, non_blocking=True),
                tasks[idx].to(self.device, non_blocking=True),
            )

    def training_size(self) -> int:
        """Training samples of one epoch (the union's, when tasks are joined)."""
        return sum(len(task.train) for task in self.tasks.values())

    def _union(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The joined tasks' stored training inputs, labels and task ids, in task order."""
        if self._joined_train is None:
            ids = sorted(self.tasks)
            self._joined_train = (
                torch.cat([self.tasks[k].train.x for k in ids]),
                torch.cat([self.tasks[k].train.y for k in ids]),
                torch.cat([torch.full((len(self.tasks[k].train),), k) for k in ids]),
            )
        return self._joined_train

    def _inputs(self, x: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
        """Each task's transform on its samples (one call where all tasks share it)."""
        first = self.tasks[int(tasks[0])]
        if all(task.transform == first.transform for task in self.tasks.values()):
            return first.inputs(x)
        ids, counts = tasks.unique_consecutive(return_counts=True)
        parts = zip(ids.tolist(), x.split(counts.tolist()), strict=True)
        return torch.cat([self.tasks[k].inputs(part) for k, part in parts])

    @torch.no_grad()
    def valid_loss(self, model: MultiHeadNet, batch_size: int) -> float:
        """Mean validation cross-entropy over the tasks trained on, each with its own head."""
        model.eval()
        total, count = 0.0, 0
        for task_id, task in self.tasks.items():
            for start in range(0, len(task.valid), batch_size):
                x = task.inputs(task.valid.x[start : start + batch_size]).to(self.device)
                y = task.valid.y[start : start + batch_size].to(self.device)
                total += F.cross_entropy(model(x, task_id), y, reduction="sum").item()
                count += len(y)
        model.train()
        return total / max(count, 1)

    def samples(self, task_id: int) -> TaskSamples:
        """The task's training split as the methods' end-of-task steps read it."""

        def batches(
            batch_size: int, *, shuffle: bool = False, limit: int | None = None
        ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            return self(self.task.train, batch_size, shuffle=shuffle, limit=limit)

        return TaskSamples(batches, lambda model, inputs: model(inputs, task_id))


def run_sequence(
    sequence: TaskSequence,
    model: MultiHeadNet,
    method: ContinualMethod,
    *,
    settings: TrainSettings,
    seed: int,
    resume: LoopState | None = None,
) -> Iterator[TaskRecord]:
    """Train ``model`` on every task of ``sequence`` with ``method``; yield after each task."""
    device = resolve_device(settings.device)
    model.to(device)
    method.setup(model)
    if resume is not None:
        model.load_state_dict(resume.model)
        method.load_state_dict(resume.method)
        rows, initial_row, first = (
            [list(r) for r in resume.rows],
            list(resume.initial_row),
            resume.next_task,
        )
        valid_rows, initial_valid = [list(r) for r in resume.valid_rows], resume.initial_valid_row
    else:
        rows, valid_rows, first = [], [], 0
        initial_row = evaluate_all(
            model, sequence, device=device, batch_size=settings.eval_batch_size
        )
        initial_valid = evaluate_all(
            model, sequence, device=device, batch_size=settings.eval_batch_size, split="valid"
        )
    names = [task.name for task in sequence.tasks]
    for task_id in range(first, len(sequence)):
        task = sequence.tasks[task_id]
        task_seed = seed * TASK_SEED_STRIDE + task_id
        torch.manual_seed(task_seed)
        joined = {k: sequence.tasks[k] for k in method.training_tasks(task_id) if k != task_id}
        generator = torch.Generator().manual_seed(task_seed)
        batches = TaskBatches(task, device, generator, task_id=task_id, joined=joined)
        model.on_task_start(task_id)
        method.before_task(model, task_id)
        t0 = time.perf_counter()
        stats = train_task(model, method, task_id, batches, settings=settings)
        t1 = time.perf_counter()
        method.after_task(model, task_id, samples=batches.samples(task_id))
        t2 = time.perf_counter()
        row = evaluate_all(model, sequence, device=device, batch_size=settings.eval_batch_size)
        rows.append(row)
        valid_rows.append(
            evaluate_all(
                model, sequence, device=device, batch_size=settings.eval_batch_size, split="valid"
            )
        )
        t3 = time.perf_counter()
        yield TaskRecord(
            task=task_id,
            task_name=task.name,
            num_tasks=len(sequence),
            task_names=names,
            metric="accuracy",
            row=row,
            matrix=[list(r) for r in rows],
            initial_row=initial_row,
            # a run resumed from a checkpoint older than the validation rows has none for its
            # earlier tasks: no validation matrix then (None), rather than a partial one
            valid_matrix=[list(r) for r in valid_rows] if len(valid_rows) == len(rows) else None,
            initial_valid_row=initial_valid,
            epochs=stats["epochs"],
            best_valid_loss=stats["best_valid_loss"],
            final_lr=stats["lr"],
            train_s=t1 - t0,
            end_task_s=t2 - t1,
            eval_s=t3 - t2,
            task_wall_s=t3 - t0,
            capacity=method.capacity(model),
            capacity_label=method.capacity_label,
            state_bytes=method.state_bytes(model),
            role=method.role,
            state=LoopState(
                next_task=task_id + 1,
                model=_cpu_copy(model.state_dict()),
                method=_cpu_copy(method.state_dict()),
                rows=[list(r) for r in rows],
                initial_row=list(initial_row),
                valid_rows=[list(r) for r in valid_rows],
                initial_valid_row=initial_valid,
            ),
        )


def train_task(
    model: MultiHeadNet,
    method: ContinualMethod,
    task_id: int,
    batches: TaskBatches,
    *,
    settings: TrainSettings,
) -> dict[str, Any]:
    """One task of the official protocol; leaves the best-validation weights in ``model``."""
    lr, patience = settings.lr, settings.lr_patience
    best_loss, best_state = math.inf, copy.deepcopy(model.state_dict())
    optimizer = _optimizer(model, method, lr, settings)
    epochs = 0
    for epoch in range(settings.epochs):
        epochs = epoch + 1
        train_epoch(model, method, task_id, batches, optimizer, settings=settings, epoch=epoch)
        valid_loss = batches.valid_loss(model, settings.eval_batch_size)
        if valid_loss < best_loss:
            best_loss, best_state = valid_loss, copy.deepcopy(model.state_dict())
            patience = settings.lr_patience
            continue
        patience -= 1
        if patience <= 0:
            lr /= settings.lr_factor
            if lr < settings.lr_min:
                break
            patience = settings.lr_patience
            optimizer = _optimizer(model, method, lr, settings)
    model.load_state_dict(best_state)
    return {"epochs": epochs, "best_valid_loss": best_loss, "lr": lr}


def train_epoch(
    model: MultiHeadNet,
    method: ContinualMethod,
    task_id: int,
    batches: TaskBatches,
    optimizer: torch.optim.Optimizer,
    *,
    settings: TrainSettings,
    epoch: int = 0,
) -> None:
    """One pass over the task's training data: loss (with the method's replayed samples joined)
    + penalty, backward, the method's gradient hook, clipping, step, the method's per-step hook."""
    model.train()
    params = list(model.parameters())  # listed once: enumerating modules per step is slow
    seen, total = 0, batches.training_size()
    for x, y, tasks in batches.training(settings.batch_size):
        method.before_batch(model, task_id, epoch_fraction=seen / total)
        seen += len(y)
        replayed = method.replay(model, task_id, len(y))
        if replayed is not None:
            x, y, tasks = join((x, y, _task_ids(tasks, y)), replayed)
        if isinstance(tasks, int):
            loss = F.cross_entropy(model(x, tasks), y)
        else:
            loss = multi_head_loss(model, x, y, tasks)
        extra = method.penalty(model, task_id, x)
        if extra is not None:
            loss = loss + extra
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"training loss became {loss.item()} on task {task_id} ({batches.task.name}) at "
                f"epoch {epoch}; lower the learning rate or the method's penalty weight"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        method.before_step(model, task_id)
        clip_grad_norm(params, settings.clipgrad)
        optimizer.step()
        method.after_step(model, task_id)


def clip_grad_norm(params: list[nn.Parameter], max_norm: float) -> None:
    """``nn.utils.clip_grad_norm_`` to the bit, without its multiply by 1 when the gradient's
    norm is within ``max_norm`` (the usual case: a third of a small network's step)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    total = nn.utils.get_total_norm(grads)
    if max_norm / (total + 1e-6) < 1:
        nn.utils.clip_grads_with_norm_(params, max_norm, total)


def _task_ids(tasks: Tasks, labels: torch.Tensor) -> torch.Tensor:
    if isinstance(tasks, int):
        return torch.full_like(labels, tasks)
    return tasks


def _optimizer(
    model: nn.Module, method: ContinualMethod, lr: float, settings: TrainSettings
) -> torch.optim.SGD:
    params = method.param_groups(model, lr_scale=lr / settings.lr)
    if params is None:
        params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=lr, momentum=settings.momentum)


@torch.no_grad()
def evaluate_all(
    model: MultiHeadNet,
    sequence: TaskSequence,
    *,
    device: torch.device,
    batch_size: int,
    split: str = "test",
) -> list[float]:
    """Accuracy of every task with its own head on its ``split``: ``test`` (what reports rank)
    or ``valid`` (what hyperparameter selection may read)."""
    was_training = model.training
    model.eval()
    row = []
    for task_id, task in enumerate(sequence.tasks):
        data, correct = getattr(task, split), 0
        for start in range(0, len(data), batch_size):
            x = task.inputs(data.x[start : start + batch_size]).to(device)
            y = data.y[start : start + batch_size].to(device)
            correct += int((model(x, task_id).argmax(1) == y).sum())
        row.append(correct / max(len(data), 1))
    model.train(was_training)
    return row


def _cpu_copy(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_cpu_copy(v) for v in obj)
    return obj
