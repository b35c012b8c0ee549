"""A-GEM, Averaged Gradient Episodic Memory (Chaudhry, Ranzato, Rohrbach & Elhoseiny 2019).

Reference: the official code, github.com/facebookresearch/agem: ``conv_split_cifar.py`` (the
multi-head split protocol: ``SAMPLES_PER_CLASS = 13`` per class of each task in the episodic
memory, ``EPS_MEM_BATCH_SIZE = 256`` memory samples per reference gradient, drawn without
replacement; ``fc_permute_mnist.py`` keeps 25 per class) and ``model/model.py``
(``create_stochastic_gem_ops``: the reference loss sums each memory sample's cross-entropy under its
own task's mask and divides by the memory batch; the projection runs over every trainable variable).

Per training step after the first task: ``g_ref`` is the gradient of the memory batch's loss, ``g``
the minibatch's; where ``g . g_ref < 0`` the step uses ``g - (g . g_ref / g_ref . g_ref) g_ref``,
otherwise ``g`` unchanged. Supervised only: the memory holds labelled samples.
"""

from __future__ import annotations

import dataclasses

import torch

from blip_ray.methods.base import Model, register_method, require
from blip_ray.methods.memory import MemoryConfig, RehearsalMethod, multi_head_loss


@dataclasses.dataclass(frozen=True)
class AgemConfig(MemoryConfig):
    """The memory's quota and the reference batch (``conv_split_cifar.py``'s defaults)."""

    memory_batch: int = 256
    """Memory samples per reference gradient (``--eps-mem-batch``); all of them when fewer."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self, "memory_batch", self.memory_batch >= 1, ">= 1")


def agem_project(grad: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``grad`` unchanged where ``grad . reference >= 0``; else its projection orthogonal to
    ``reference`` (flat vectors)."""
    dot = torch.dot(grad, reference)
    if dot >= 0:
        return grad
    return grad - (dot / torch.dot(reference, reference)) * reference


@register_method("agem")
class AgemMethod(RehearsalMethod):
    """Project the step so the loss on the episodic memory does not increase (to first order)."""

    config_class = AgemConfig

    def setup(self, model: Model) -> None:
        super().setup(model)
        #: Steps whose gradient was projected, and steps taken with a memory (diagnostics).
        self.projected = self.steps = 0

    def before_step(self, model: Model, task_id: int) -> None:
        if not len(self.memory):
            return
        params = [p for p in model.parameters() if p.requires_grad]
        grads = [_grad(p) for p in params]
        for p in params:
            p.grad = None
        device = params[0].device
        multi_head_loss(model, *self.memory.sample(self.config.memory_batch, device)).backward()
        reference = torch.cat([_grad(p).flatten() for p in params])
        flat = torch.cat([g.flatten() for g in grads])
        step = agem_project(flat, reference)
        self.steps += 1
        self.projected += int(step is not flat)
        for p, g in zip(params, step.split([p.numel() for p in params]), strict=True):
            p.grad = g.view_as(p)


def _grad(param: torch.Tensor) -> torch.Tensor:
    return param.grad if param.grad is not None else torch.zeros_like(param)
