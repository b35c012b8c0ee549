"""BLIP's training overhead: one epoch of BLIP vs plain SGD on the same network and data.

Run: ``.venv/bin/python benchmarks/perf/supervised.py`` (part of ``make bench``; about a minute).
Prints ``key=value`` lines; ``blip_epoch_ratio`` (the larger of the two cases) has target <= 1.10.
BLIP's extra per-step work is one clamp per trunk tensor between precomputed bounds; the epochs are
timed alternately (BLIP, SGD, BLIP, ...) and the median of each is compared.

Cases: the MLP on pdigits (64 -> 256 hidden, batch 64) and AlexNet-32 (width 1, fc 2048) on random
32x32x3 data (batch 32), both after one BLIP task end so the clipping bounds are non-trivial.
"""

from __future__ import annotations

import statistics
import time

import torch

from blip_ray.data import Split, Task, TaskSequence, load_sequence
from blip_ray.methods import make_method
from blip_ray.models import ModelOptions, build_model
from blip_ray.supervised.loop import TaskBatches, TrainSettings, train_epoch

REPEATS = 15


def random_images(n: int = 640) -> TaskSequence:
    gen = torch.Generator().manual_seed(0)
    split = Split(
        torch.randn(n, 3, 32, 32, generator=gen), torch.randint(0, 10, (n,), generator=gen)
    )
    return TaskSequence("random32", [Task("random32", 10, split, split, split)], (3, 32, 32))


def epoch_seconds(
    network: str, seq: TaskSequence, settings: TrainSettings, *, blip: bool, width: float = 1.0
):
    """A closure timing one training epoch of ``network`` with BLIP (quantized) or plain SGD."""
    method = (
        make_method("blip", fisher_batches=2, fisher_batch_size=32)
        if blip
        else make_method("finetune")
    )
    torch.manual_seed(0)
    options = ModelOptions(seq.input_shape, tuple(seq.head_sizes), quantized=blip, width=width)
    model = build_model(network, options)
    method.setup(model)
    task = seq.tasks[0]
    batches = TaskBatches(task, torch.device("cpu"), torch.Generator().manual_seed(0))
    optimizer = torch.optim.SGD(model.parameters(), lr=settings.lr)
    if blip:  # one task end first, so bits and clipping intervals are not all trivial
        train_epoch(model, method, 0, batches, optimizer, settings=settings)
        method.after_task(model, 0, task, batches=batches)

    def run() -> float:
        start = time.perf_counter()
        train_epoch(model, method, 0, batches, optimizer, settings=settings)
        return time.perf_counter() - start

    return run


def compare(label: str, network: str, seq: TaskSequence, settings: TrainSettings) -> float:
    blip = epoch_seconds(network, seq, settings, blip=True)
    sgd = epoch_seconds(network, seq, settings, blip=False)
    blip(), sgd()  # warm-up
    times: dict[str, list[float]] = {"blip": [], "sgd": []}
    for i in range(REPEATS):  # alternate which goes first, so neither always follows the other
        order = [("blip", blip), ("sgd", sgd)] if i % 2 == 0 else [("sgd", sgd), ("blip", blip)]
        for key, run in order:
            times[key].append(run())
    blip_s, sgd_s = statistics.median(times["blip"]), statistics.median(times["sgd"])
    ratio = blip_s / sgd_s
    print(f"{label}_blip_epoch_s={blip_s:.4f}")
    print(f"{label}_sgd_epoch_s={sgd_s:.4f}")
    print(f"{label}_blip_epoch_ratio={ratio:.3f}")
    return ratio


def main() -> None:
    torch.set_num_threads(2)
    ratios = [
        compare(
            "mlp_pdigits",
            "mlp",
            load_sequence("pdigits", seed=0),
            TrainSettings(lr=0.01, batch_size=64),
        ),
        compare(
            "alexnet32_random", "alexnet32", random_images(), TrainSettings(lr=0.05, batch_size=32)
        ),
    ]
    worst = max(ratios)
    print(f"blip_epoch_ratio={worst:.3f}")
    print(f"targets_met={'yes' if worst <= 1.10 else 'no'}")


if __name__ == "__main__":
    main()
