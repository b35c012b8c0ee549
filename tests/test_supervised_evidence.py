"""Evidence on real data: BLIP keeps pdigits' earlier tasks while fine-tuning forgets them; every
paper sequence trains one task through the real loaders, networks and BLIP."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from data_fixtures import write_tiny_dataset

from blip_ray import metrics
from blip_ray.data import load_sequence
from blip_ray.methods import make_method
from blip_ray.models import ModelOptions, build_model
from blip_ray.supervised import TrainSettings, run_sequence

#: A narrow MLP trained long enough that fine-tuning's drift shows on pdigits.
PDIGITS = TrainSettings(lr=0.1, epochs=40)


def pdigits_run(name: str, **hp) -> tuple[np.ndarray, list]:
    seq = load_sequence("pdigits", seed=0)
    method = make_method(name, **hp)
    torch.manual_seed(0)
    options = ModelOptions(
        seq.input_shape, tuple(seq.head_sizes), quantized=method.quantized_trunk, fc_width=64
    )
    records = list(run_sequence(seq, build_model("mlp", options), method, settings=PDIGITS, seed=0))
    return np.array(records[-1].matrix), records


@pytest.fixture(scope="module")
def pdigits_results() -> dict[str, tuple[np.ndarray, list]]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 64-wide MLP runs fastest on one thread
    try:
        return {
            name: pdigits_run(name, **hp)
            for name, hp in [("finetune", {}), ("frozen", {}), ("blip", {"f_prior": 1e-15})]
        }
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_blip_keeps_pdigits_while_finetuning_forgets(pdigits_results):
    blip, blip_records = pdigits_results["blip"]
    finetune, _ = pdigits_results["finetune"]
    assert metrics.bwt(blip) >= -0.01
    assert metrics.bwt_gem(finetune) <= -0.015, "fine-tuning should lose earlier tasks"
    assert metrics.forgetting(finetune) > metrics.forgetting(blip) + 0.01
    caps = [r.capacity for r in blip_records]
    assert all(a <= b for a, b in zip(caps, caps[1:], strict=False)) and 0 < caps[-1] < 1


@pytest.mark.slow
def test_frozen_never_forgets_but_learns_later_tasks_worse(pdigits_results):
    frozen, _ = pdigits_results["frozen"]
    finetune, _ = pdigits_results["finetune"]
    assert metrics.forgetting(frozen) == 0.0 and metrics.bwt(frozen) == 0.0
    assert np.diag(frozen)[1:].mean() < np.diag(finetune)[1:].mean() - 0.02


@pytest.mark.slow
def test_state_bytes_stay_constant_for_blip_and_grow_for_offline_ewc(pdigits_results):
    _, blip_records = pdigits_results["blip"]
    assert len({r.state_bytes for r in blip_records}) == 1
    seq = load_sequence("digits5", seed=0)
    method = make_method("ewc")
    options = ModelOptions(seq.input_shape, tuple(seq.head_sizes), fc_width=64)
    records = list(
        run_sequence(
            seq,
            build_model("mlp", options),
            method,
            settings=TrainSettings(lr=0.1, epochs=2),
            seed=0,
        )
    )
    sizes = [r.state_bytes for r in records]
    assert sizes == [sizes[0] * (k + 1) for k in range(len(sizes))]


#: The paper's network and settings per sequence (DESIGN.md "Benchmarks of the paper").
PAPER = {
    "mnist5": ("mlp", 1.0, TrainSettings(lr=0.01, batch_size=64, epochs=1), 1e-15),
    "pmnist": ("mlp", 1.0, TrainSettings(lr=0.01, batch_size=64, epochs=1), 1e-15),
    "cifar": ("alexnet32", 2.0, TrainSettings(lr=0.05, batch_size=32, epochs=1), 5e-16),
    "mixture5": ("alexnet32", 0.8, TrainSettings(lr=0.05, batch_size=32, epochs=1), 5e-17),
    "miniimagenet": ("alexnet84", 1.0, TrainSettings(lr=0.01, batch_size=32, epochs=1), 5e-16),
    "miniimagenet-resnet": (
        "resnet18",
        1.5,
        TrainSettings(lr=0.01, batch_size=32, epochs=1),
        1e-16,
    ),
}


@pytest.mark.parametrize("case", sorted(PAPER))
def test_paper_sequence_trains_one_task_from_real_format_files(case, tmp_path):
    name = case.split("-")[0]
    network, width, settings, f_prior = PAPER[case]
    write_tiny_dataset(name, tmp_path)
    seq = load_sequence(name, data_dir=tmp_path, seed=0, download=False)
    seq.tasks = seq.tasks[:1]
    method = make_method("blip", f_prior=f_prior, fisher_batches=2, fisher_batch_size=10)
    options = ModelOptions(seq.input_shape, tuple(seq.head_sizes), quantized=True, width=width)
    record = next(
        run_sequence(seq, build_model(network, options), method, settings=settings, seed=0)
    )
    assert record.epochs == 1 and len(record.row) == 1
    assert 0.0 <= record.row[0] <= 1.0 and record.capacity > 0
