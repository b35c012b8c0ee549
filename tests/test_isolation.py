"""HAT and PackNet: parameter isolation that holds bit for bit, and the reference formulas."""

from __future__ import annotations

import math

import pytest
import torch
from cl_fixtures import method_net, small_net, synthetic_sequence
from torch import nn

from blip_ray.methods import make_method
from blip_ray.methods.hat import weight_view
from blip_ray.methods.packnet import FREE
from blip_ray.models.base import MultiHeadNet
from blip_ray.models.task_state import TaskConv2d, TaskLinear
from blip_ray.supervised import TrainSettings, run_sequence

FAST = TrainSettings(lr=0.1, epochs=6, batch_size=32)


def trained(name: str, tasks: int = 3, **hp):
    """The model, method and records after ``tasks`` synthetic tasks, and snapshots after each."""
    seq = synthetic_sequence(tasks=tasks)
    method = make_method(name, **hp)
    model = method_net(seq, method)
    snapshots, records = [], []
    for record in run_sequence(seq, model, method, settings=FAST, seed=0):
        records.append(record)
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
    return seq, model, method, records, snapshots


# --- HAT ---------------------------------------------------------------------------------------


def test_hat_never_changes_a_weight_an_earlier_task_fully_attends_to():
    _, model, method, _, snapshots = trained("hat", tasks=2)
    layer = method.layers[0]
    first = method.task_gates(model, 0, method.config.smax)[0].detach()
    owned = weight_view(layer, first, None) == 1.0  # gate exactly 1 in float32
    assert 0 < int(owned.sum()) < owned.numel()
    before, after = snapshots[0]["trunk.0.weight"], snapshots[1]["trunk.0.weight"]
    assert torch.equal(before[owned], after[owned])  # bit-identical after task 1
    assert not torch.equal(before[~owned], after[~owned])  # the free ones did train
    bias_owned = first == 1.0
    assert torch.equal(
        snapshots[0]["trunk.0.bias"][bias_owned], snapshots[1]["trunk.0.bias"][bias_owned]
    )


def test_hat_masks_at_smax_are_the_embeddings_signs_and_accumulate_by_max():
    _, model, method, records, _ = trained("hat", tasks=3)
    masks = []
    for task in range(3):
        gate = method.task_gates(model, task, method.config.smax)[0].detach()
        embedding = method.layers[0].gate_embedding[task].detach()
        assert torch.equal(gate > 0.5, embedding > 0)
        masks.append(gate)
    torch.testing.assert_close(method.mask_pre[0], torch.stack(masks).amax(0))
    used = float((method.mask_pre[0] > 0.5).float().mean())
    assert (
        records[-1].capacity == pytest.approx(used) and records[-1].capacity_label == "units used"
    )
    assert [r.capacity for r in records] == sorted(r.capacity for r in records)


def test_hat_anneals_s_over_each_epoch_and_compensates_embedding_gradients():
    seq = synthetic_sequence(tasks=2)
    method = make_method("hat", smax=400.0)
    model = small_net(seq, quantized=False, task_state="gates")
    method.setup(model)
    method.before_batch(model, 0, epoch_fraction=0.0)
    assert method.s == pytest.approx(1 / 400)
    method.before_batch(model, 0, epoch_fraction=0.5)
    assert method.s == pytest.approx((400 - 1 / 400) / 2 + 1 / 400)
    method.s = 2.0
    embedding = method.layers[0].gate_embedding
    with torch.no_grad():
        embedding.zero_()
        embedding[0, :2] = torch.tensor([0.5, 30.0])
    embedding.grad = torch.ones_like(embedding)
    method.before_step(model, 0)
    grad = embedding.grad
    # smax / s * (cosh(clamp(s e, +-50)) + 1) / (cosh(e) + 1): e = 0.5, then s e = 60 clamped to 50
    assert float(grad[0, 0]) == pytest.approx(200 * (math.cosh(1.0) + 1) / (math.cosh(0.5) + 1))
    assert float(grad[0, 1]) == pytest.approx(200 * (math.cosh(50.0) + 1) / (math.cosh(30.0) + 1))
    assert float(grad[1, 0]) == pytest.approx(200.0)  # e = 0: (cosh 0 + 1) / (cosh 0 + 1)


def test_hat_regulariser_counts_the_gates_on_units_still_free():
    seq = synthetic_sequence(tasks=2)
    method = make_method("hat", lamb=0.5)
    model = small_net(seq, quantized=False, task_state="gates")
    method.setup(model)
    method.layers[0].last_gate = torch.tensor([0.2, 0.6, 1.0, 0.0])
    assert float(method.penalty(model, 0, None)) == pytest.approx(0.5 * 1.8 / 4)
    method.mask_pre = [torch.tensor([1.0, 0.0, 0.5, 0.0])]
    # sum(gate * (1 - pre)) / sum(1 - pre) = (0 + 0.6 + 0.5 + 0) / 2.5
    assert float(method.penalty(model, 1, None)) == pytest.approx(0.5 * 1.1 / 2.5)


def test_hat_weight_view_takes_the_min_of_both_units_and_spreads_a_conv_over_its_positions():
    fc = TaskLinear(6, 2)
    view = weight_view(fc, torch.tensor([1.0, 0.2]), torch.tensor([0.5, 1.0, 0.0]))
    expected = torch.tensor([[0.5, 0.5, 1.0, 1.0, 0.0, 0.0], [0.2, 0.2, 0.2, 0.2, 0.0, 0.0]])
    torch.testing.assert_close(view, expected)  # 3 channels of 2 positions flattened
    conv = TaskConv2d(2, 3, 1)
    view = weight_view(conv, torch.tensor([1.0, 0.0, 0.3]), torch.tensor([0.4, 1.0]))
    torch.testing.assert_close(view[:, :, 0, 0], torch.tensor([[0.4, 1.0], [0.0, 0.0], [0.3, 0.3]]))


def test_hat_refuses_a_trunk_without_task_aware_layers():
    seq = synthetic_sequence(tasks=2)
    for net in (small_net(seq, quantized=True), small_net(seq, quantized=False)):
        with pytest.raises(
            ValueError, match="hat needs a plain trunk built with task_state='gates'"
        ):
            make_method("hat").setup(net)


# --- PackNet -----------------------------------------------------------------------------------


def test_packnet_keeps_earlier_weights_bit_identical_and_gives_equal_shares():
    _, _, method, records, snapshots = trained("packnet", tasks=3, retrain_epochs=2)
    owner = method.owner[0]
    for task in (0, 1):
        mine = owner == task
        for later in range(task + 1, 3):
            a, b = snapshots[task]["trunk.0.weight"], snapshots[later]["trunk.0.weight"]
            assert torch.equal(a[mine], b[mine]), (task, later)
    assert torch.equal(snapshots[0]["trunk.0.bias"], snapshots[2]["trunk.0.bias"])  # fixed after 0
    shares = [float((owner == t).float().mean()) for t in range(3)]
    assert shares == pytest.approx([1 / 3] * 3, abs=0.01)
    assert [r.capacity for r in records] == pytest.approx([1 / 3, 2 / 3, 1.0], abs=0.01)
    assert records[-1].capacity_label == "weights owned"
    assert int((owner == FREE).sum()) == 0  # the last task keeps every weight it trained


def test_packnet_inference_for_a_task_ignores_the_weights_of_later_tasks():
    seq, model, method, _, _ = trained("packnet", tasks=3, retrain_epochs=1)
    x = seq.tasks[0].test.x[:50]
    model.eval()
    with torch.no_grad():
        before = [model(x, t) for t in range(3)]
        layer = method.layers[0]
        later = method.owner[0] == 2
        layer.weight[later] = torch.randn(int(later.sum()))
        after = [model(x, t) for t in range(3)]
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])
    assert not torch.equal(before[2], after[2])


def test_packnet_prunes_the_smallest_magnitudes_of_the_task_and_zeroes_them():
    seq = synthetic_sequence(tasks=2)
    method = make_method("packnet")
    trunk = nn.Sequential(TaskLinear(3, 2, bias=False, num_tasks=2, task_state="masks"))
    model = MultiHeadNet(trunk, 2, [2, 2])
    method.setup(model)
    layer = method.layers[0]
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.5, -0.1, 2.0], [-3.0, 0.2, -0.05]]))
    method.before_task(model, 0)
    assert method.share(0) == pytest.approx(0.5) and method.share(1) == 0.0
    method.prune(0, 0.5)
    torch.testing.assert_close(layer.weight, torch.tensor([[0.5, 0.0, 2.0], [-3.0, 0.0, 0.0]]))
    assert method.owner[0].tolist() == [[0, FREE, 0], [0, FREE, FREE]]
    assert make_method("packnet", prune_ratio=0.75).share(0) == 0.75
    del seq


def test_packnet_config_refuses_bad_values():
    with pytest.raises(ValueError, match=r"prune_ratio: must be None or in \[0, 1\), got 1.0"):
        make_method("packnet", prune_ratio=1.0)
    with pytest.raises(ValueError, match="retrain_lr: must be a finite number > 0"):
        make_method("packnet", retrain_lr=0.0)
