"""BLIP: freeze, per trunk parameter, the bits its Fisher information says the task needs."""

from __future__ import annotations

import dataclasses

import torch

from blip_ray import quant
from blip_ray.data.base import Task
from blip_ray.methods.base import (
    BatchFactory,
    ContinualMethod,
    MethodConfig,
    register_method,
    tensor_bytes,
)
from blip_ray.models.base import MultiHeadNet


@dataclasses.dataclass(frozen=True)
class BlipConfig(MethodConfig):
    """BLIP's hyperparameters (defaults: the official code's, F_prior of its MNIST runs)."""

    f_prior: float = 1e-15
    """Prior Fisher per parameter, times the layer's fan-in (at the official 1/N^2 Fisher scale)."""
    max_bit: int = quant.DEFAULT_MAX_BIT
    """Bits per parameter; once all are frozen the parameter never moves again."""
    fisher_batches: int = 80
    """Minibatches of training samples for the end-of-task Fisher (80 x 100 in the paper)."""
    fisher_batch_size: int = 100
    """Samples per Fisher minibatch; the Fisher's 1/N^2 scale depends on it (10 on miniImageNet)."""


@register_method("blip")
class BlipMethod(ContinualMethod):
    """Clips after every step and, at each task end, turns the Fisher into frozen bits.

    The Fisher uses ``fisher_batches`` minibatches of the task's training set in a fixed shuffled
    order, with labels sampled from the model's own head for that task (the official estimator);
    a task with fewer samples than ``fisher_batches * fisher_batch_size`` uses them all once.
    """

    config_class = BlipConfig
    quantized_trunk = True

    def setup(self, model: MultiHeadNet) -> None:
        layers = quant.blip_layers(model)
        if not layers:
            raise ValueError("blip needs a quantized trunk: build the network with quantized=True")
        for layer in layers:
            if layer.max_bit != self.config.max_bit:
                raise ValueError(
                    f"network built with max_bit={layer.max_bit}, config says {self.config.max_bit}"
                )
        quant.set_f_prior(model, self.config.f_prior)

    def after_step(self, model: MultiHeadNet, task_id: int) -> None:
        quant.clip_(model)

    def after_task(
        self, model: MultiHeadNet, task_id: int, task: Task, *, batches: BatchFactory
    ) -> None:
        fisher_batches = batches(
            task.train,
            self.config.fisher_batch_size,
            shuffle=True,
            limit=self.config.fisher_batches,
        )

        def log_prob(net: MultiHeadNet, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
            return quant.sampled_label_log_prob(net(batch[0], task_id))

        quant.end_task(model, task=task_id, batches=fisher_batches, log_prob_fn=log_prob)

    def state_bytes(self, model: MultiHeadNet) -> int:
        """BLIP's state is its per-parameter buffers: constant in the number of tasks."""
        return sum(tensor_bytes(dict(layer.named_buffers())) for layer in quant.blip_layers(model))
