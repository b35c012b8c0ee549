"""What a supervised trial builds before it trains: the sequence, the method and its network.

One function for the Tune trainable and for :func:`blip_ray.api.run_continual`, so a run in a
notebook and a trial of an experiment with the same settings and seed train the same network.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from blip_ray.data import load_sequence
from blip_ray.data.base import TaskSequence
from blip_ray.methods import ContinualMethod, make_method
from blip_ray.models import ModelOptions, build_model
from blip_ray.models.base import MultiHeadNet
from blip_ray.models.bayesian import DEFAULT_RATIO
from blip_ray.quant import DEFAULT_MAX_BIT


def build_continual(
    benchmark: str,
    method: str,
    *,
    hyperparameters: Mapping[str, Any],
    seed: int,
    network: str,
    tasks: int | None = None,
    width: float = 1.0,
    fc_width: int | None = None,
    data_dir: str | Path | None = None,
    download: bool = True,
) -> tuple[TaskSequence, MultiHeadNet, ContinualMethod]:
    """The first ``tasks`` tasks of ``benchmark`` for ``seed``, the method with its
    hyperparameters, and the network built for both (torch seeded with ``seed`` first, as every
    trial does, so the initial weights are the seed's)."""
    sequence = load_sequence(benchmark, data_dir=data_dir, seed=seed, download=download)
    sequence.tasks = sequence.tasks[:tasks]
    continual = make_method(method, **hyperparameters)
    torch.manual_seed(seed)
    model = build_network(network, sequence, continual, width=width, fc_width=fc_width)
    return sequence, model, continual


def build_network(
    network: str,
    sequence: TaskSequence,
    continual: ContinualMethod,
    *,
    width: float = 1.0,
    fc_width: int | None = None,
) -> MultiHeadNet:
    """``network`` for the sequence's inputs and heads, quantized, Bayesian or with per-task
    state as ``continual`` needs (also what ``--dry-run``'s calibration times)."""
    return build_model(
        network,
        ModelOptions(
            input_shape=sequence.input_shape,
            head_sizes=tuple(sequence.head_sizes),
            quantized=continual.quantized_trunk,
            task_state=continual.trunk_task_state,
            width=width,
            fc_width=fc_width,
            max_bit=getattr(continual.config, "max_bit", DEFAULT_MAX_BIT),
            bayesian=continual.bayesian_trunk,
            ratio=getattr(continual.config, "ratio", DEFAULT_RATIO),
        ),
    )


def build_trial(config: Mapping[str, Any]) -> tuple[TaskSequence, MultiHeadNet, ContinualMethod]:
    """:func:`build_continual` for a trial's config as the launcher writes it (``run``: the
    spec's shared settings; ``method``: name, hyperparameters, seed), also read back from an
    experiment's ``params.json``."""
    run, method = config["run"], config["method"]
    return build_continual(
        run["benchmark"],
        method["name"],
        hyperparameters=method["hp"],
        seed=int(method["seed"]),
        network=run["network"],
        tasks=run["tasks"],
        width=run["width"],
        fc_width=run["fc_width"],
        data_dir=run["data_dir"],
        download=run["download"],
    )
