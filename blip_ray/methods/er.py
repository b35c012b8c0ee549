"""ER, experience replay with a tiny episodic memory (Chaudhry et al. 2019, "On Tiny Episodic
Memories in Continual Learning").

Reference: the official code, github.com/facebookresearch/agem (the ER branch of
``conv_split_cifar.py``: each training minibatch is concatenated with a memory minibatch and the
loss is the mean over the joined batch, each sample under its own task's mask; the paper joins
equal-sized batches, 10 + 10). The memory is A-GEM's (:class:`~blip_ray.methods.memory.
EpisodicMemory`, ``--mem-size`` 13 per class of each finished task). Supervised only.
"""

from __future__ import annotations

from blip_ray.methods.base import Model, TaggedBatch, register_method
from blip_ray.methods.memory import RehearsalMethod


@register_method("er")
class ErMethod(RehearsalMethod):
    """Every training minibatch is joined by as many memory samples (all of them while fewer)."""

    def replay(self, model: Model, task_id: int, batch_size: int) -> TaggedBatch | None:
        if not len(self.memory):
            return None
        return self.memory.sample(batch_size, next(model.parameters()).device)
