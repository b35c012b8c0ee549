"""BLIP: freeze, per trunk parameter, the bits its Fisher information says the task needs."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

from blip_ray import quant
from blip_ray.methods.base import (
    ContinualMethod,
    MethodConfig,
    Model,
    TaskSamples,
    register_method,
    require,
    tensor_bytes,
)
from blip_ray.quant.layers import MAX_BIT_LIMIT


@dataclasses.dataclass(frozen=True)
class BlipConfig(MethodConfig):
    """BLIP's hyperparameters (defaults: the official code's, F_prior of its MNIST runs).

    Reference: the official code, ``ImageClassification/approaches/blip.py`` and
    ``RL/ppo_blip.py`` (github.com/Yujun-Shi/BLIP); the RL values (F_prior 5e-18, Fisher on the
    rollout in 32 x 62 states) are the RL sequences' ``method_defaults``.
    """

    f_prior: float = 1e-15
    """Prior Fisher per parameter, times the layer's fan-in (at the official 1/N^2 Fisher scale)."""
    max_bit: int = quant.DEFAULT_MAX_BIT
    """Bits per parameter; once all are frozen the parameter never moves again."""
    fisher_batches: int = 80
    """Minibatches of training samples for the end-of-task Fisher (80 x 100 in the paper)."""
    fisher_batch_size: int = 100
    """Samples per Fisher minibatch; the Fisher's 1/N^2 scale depends on it (10 on miniImageNet)."""
    zero_bit_weights: quant.ZeroBitWeights = quant.DEFAULT_ZERO_BIT_WEIGHTS
    """What a trunk parameter left with 0 bits (none frozen, nothing to preserve) holds after a
    task end, in both tracks; parameters with bits are quantized alike under every rule.
    ``zero``: 0, the official code's ``out[bit_alloc==0] = 0.0`` (lines at its commit c09814d:
    ``RL/rl_module/quant_layer.py`` line 18,
    ``ImageClassification/src/networks/quant_layer.py`` line 18,
    ``miniImageNetClassification/src/networks/quant_layer.py`` line 20). The RL and miniImageNet
    copies leave two alternatives commented out beside it: ``keep``, the trained value
    (``out[bit_alloc==0] = input[bit_alloc==0]``, RL line 21, miniImageNet line 23);
    ``reinit``, ``uniform(-1, 1) * bound`` (RL lines 24-25, miniImageNet lines 26-27:
    ``out_t = torch.empty_like(input).uniform_(-1.0,1.0)`` on the ``input / bound`` scale; biases:
    bound 1), drawn from torch's generator, which the run seeds. Under each rule the value set is
    the parameter's ``prev``, and the next task moves it at most ``bound`` from there (the official
    clipping)."""

    smoke_values: ClassVar[dict[str, Any]] = {"fisher_batches": 2}

    def __post_init__(self) -> None:
        ok = math.isfinite(self.f_prior) and self.f_prior > 0
        require(self, "f_prior", ok, "a finite number > 0")
        require(self, "max_bit", 1 <= self.max_bit <= MAX_BIT_LIMIT, f"in 1..{MAX_BIT_LIMIT}")
        require(self, "fisher_batches", self.fisher_batches >= 1, ">= 1")
        require(self, "fisher_batch_size", self.fisher_batch_size >= 1, ">= 1")
        ok = self.zero_bit_weights in quant.ZERO_BIT_WEIGHTS
        require(self, "zero_bit_weights", ok, "zero, keep or reinit")


@register_method("blip")
class BlipMethod(ContinualMethod):
    """Clips after every step and, at each task end, turns the Fisher into frozen bits.

    The Fisher uses ``fisher_batches`` shuffled minibatches of the task's training samples, with
    targets sampled from the model's own head for that task (the official estimator: labels in
    classification, actions in RL); with fewer samples, all are used once (RL: whole minibatches).
    """

    config_class = BlipConfig
    tracks = ("supervised", "rl")
    quantized_trunk = True
    capacity_label = "bits frozen"

    def setup(self, model: Model) -> None:
        layers = quant.blip_layers(model)
        if not layers:
            raise ValueError("blip needs a quantized trunk: build the network with quantized=True")
        for layer in layers:
            if layer.max_bit != self.config.max_bit:
                raise ValueError(
                    f"network built with max_bit={layer.max_bit}, config says {self.config.max_bit}"
                )
        quant.set_f_prior(model, self.config.f_prior)
        self.layers = layers

    def after_step(self, model: Model, task_id: int) -> None:
        quant.clip_(self.layers)

    def after_task(self, model: Model, task_id: int, *, samples: TaskSamples) -> None:
        batches = samples.batches(
            self.config.fisher_batch_size, shuffle=True, limit=self.config.fisher_batches
        )
        quant.end_task(
            model,
            task=task_id,
            batches=batches,
            log_prob_fn=samples.sampled_log_prob,
            zero_bit_weights=self.config.zero_bit_weights,
        )

    def capacity(self, model: Model) -> float | None:
        """Frozen bits over all the bits of the quantized parameters (``max_bit`` each)."""
        return quant.capacity(model).total

    def state_bytes(self, model: Model) -> int:
        """BLIP's state is its per-parameter buffers: constant in the number of tasks."""
        return sum(tensor_bytes(dict(layer.named_buffers())) for layer in quant.blip_layers(model))
