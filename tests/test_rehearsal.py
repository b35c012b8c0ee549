"""A-GEM, ER and joint training: the projection, the memory's quotas and batches, the union of
tasks, and the state they keep against the constant-memory methods."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from cl_fixtures import small_net, synthetic_sequence
from torch.nn import functional as F

from blip_ray.data.base import Split
from blip_ray.methods import METHODS, ContinualMethod, make_method, register_method
from blip_ray.methods.agem import agem_project
from blip_ray.methods.memory import EpisodicMemory, multi_head_loss
from blip_ray.supervised import TrainSettings, run_sequence
from blip_ray.supervised import loop as loop_module
from blip_ray.supervised.loop import TaskBatches, train_epoch

FAST = TrainSettings(lr=0.1, epochs=4, batch_size=32)
CPU = torch.device("cpu")


def batches_of(seq, task_id: int, **kwargs) -> TaskBatches:
    task = seq.tasks[task_id]
    return TaskBatches(task, CPU, torch.Generator().manual_seed(0), task_id=task_id, **kwargs)


# --- A-GEM -------------------------------------------------------------------------------------


def test_agem_leaves_an_agreeing_gradient_unchanged():
    g, ref = torch.tensor([1.0, 2.0, 0.0]), torch.tensor([1.0, -0.5, 3.0])  # g . ref = 0
    assert agem_project(g, ref) is g
    assert agem_project(g, torch.tensor([0.5, 1.0, -1.0])) is g  # g . ref = 2.5


def test_agem_projects_a_conflicting_gradient_orthogonal_to_the_reference():
    # g = (1, 0), ref = (-1, 1): g . ref = -1, |ref|^2 = 2, so g + ref / 2 = (0.5, 0.5).
    out = agem_project(torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0]))
    torch.testing.assert_close(out, torch.tensor([0.5, 0.5]))
    gen = torch.Generator().manual_seed(3)
    for _ in range(20):
        g, ref = torch.randn(50, generator=gen), torch.randn(50, generator=gen)
        out = agem_project(g, ref)
        if torch.dot(g, ref) < 0:
            assert abs(float(torch.dot(out, ref))) < 1e-4
        else:
            assert out is g


def test_agem_step_uses_the_projected_gradient_of_the_memory_batch():
    # Task 1 is task 0 with its labels swapped and scored by an identical head: its trunk gradient
    # opposes the memory's, so the step must be projected.
    seq = synthetic_sequence(tasks=2)
    first = seq.tasks[0]
    seq.tasks[1] = dataclasses.replace(first, train=Split(first.train.x, 1 - first.train.y))
    method = make_method("agem", per_class=5, memory_batch=1000)  # the whole memory
    model = small_net(seq, quantized=False)
    model.heads[1].load_state_dict(model.heads[0].state_dict())
    method.setup(model)
    method.after_task(model, 0, samples=batches_of(seq, 0).samples(0))
    x, y = seq.tasks[1].train.x[:32], seq.tasks[1].train.y[:32]
    params = [p for p in model.parameters() if p.requires_grad]

    def flat_grad(loss: torch.Tensor) -> torch.Tensor:
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        return torch.cat(
            [
                (g if g is not None else torch.zeros_like(p)).flatten()
                for g, p in zip(grads, params, strict=True)
            ]
        )

    g = flat_grad(F.cross_entropy(model(x, 1), y))
    mem = method.memory
    ref = flat_grad(F.cross_entropy(model(mem.inputs[0], 0), mem.labels[0]))
    assert float(torch.dot(g, ref)) < 0
    F.cross_entropy(model(x, 1), y).backward()
    method.before_step(model, 1)
    after = torch.cat([p.grad.flatten() for p in params])
    torch.testing.assert_close(after, agem_project(g, ref))
    assert abs(float(torch.dot(after, ref))) < 1e-5
    assert (method.steps, method.projected) == (1, 1)


# --- the memory --------------------------------------------------------------------------------


def test_memory_keeps_its_per_task_quota_after_many_tasks():
    seq = synthetic_sequence(tasks=8, train=120)
    memory = EpisodicMemory(per_class=3)
    for t in range(8):
        memory.add(t, batches_of(seq, t).samples(t), batch_size=16)
        assert memory.per_task() == {k: 6 for k in range(t + 1)}  # 3 for each of 2 classes
    for labels in memory.labels:
        assert torch.bincount(labels).tolist() == [3, 3]
    inputs, labels, tasks = memory.sample(1000, CPU)
    assert len(labels) == 48 and torch.bincount(tasks).tolist() == [6] * 8
    for x, y, t in zip(inputs, labels, tasks, strict=True):  # each sample kept its own task
        rows = (seq.tasks[int(t)].train.x == x).all(1)
        assert rows.any() and int(seq.tasks[int(t)].train.y[rows][0]) == int(y)
    drawn = memory.sample(10, CPU)
    assert len(drawn[0]) == 10 and len({tuple(r.tolist()) for r in drawn[0]}) == 10


def test_multi_head_loss_scores_each_sample_with_its_own_head():
    seq = synthetic_sequence(tasks=3)
    model = small_net(seq, quantized=False)
    x, y = torch.randn(6, 20), torch.tensor([0, 1, 1, 0, 1, 0])
    tasks = torch.tensor([2, 0, 2, 1, 0, 1])
    by_hand = sum(
        F.cross_entropy(model(x[i : i + 1], int(tasks[i])), y[i : i + 1]) for i in range(6)
    )
    torch.testing.assert_close(multi_head_loss(model, x, y, tasks), by_hand / 6)


def test_er_joins_each_batch_with_as_many_memory_samples(monkeypatch):
    seq = synthetic_sequence(tasks=2, train=200)
    method = make_method("er", per_class=50)  # 100 in memory: a full memory batch every step
    model = small_net(seq, quantized=False)
    method.setup(model)
    method.after_task(model, 0, samples=batches_of(seq, 0).samples(0))
    seen = []

    def spy(model, x, y, tasks):
        seen.append(((tasks == 1).sum().item(), (tasks == 0).sum().item()))
        return multi_head_loss(model, x, y, tasks)

    monkeypatch.setattr(loop_module, "multi_head_loss", spy)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    train_epoch(model, method, 1, batches_of(seq, 1), optimizer, settings=FAST)
    assert seen == [(32, 32)] * 6 + [(8, 8)]  # 200 = 6 x 32 + 8, each joined by its size


def test_er_replays_all_of_a_memory_smaller_than_the_batch():
    seq = synthetic_sequence(tasks=2)
    method = make_method("er", per_class=2)
    model = small_net(seq, quantized=False)
    method.setup(model)
    assert method.replay(model, 0, 32) is None  # nothing to replay on the first task
    method.after_task(model, 0, samples=batches_of(seq, 0).samples(0))
    x, y, tasks = method.replay(model, 1, 32)
    assert len(y) == 4 and tasks.tolist() == [0] * 4


# --- joint training ----------------------------------------------------------------------------


def test_joint_trains_on_the_union_of_the_tasks_so_far():
    seq = synthetic_sequence(tasks=3, train=100)
    joined = {k: seq.tasks[k] for k in (0, 1)}
    batches = batches_of(seq, 2, joined=joined)
    seen = {k: [] for k in range(3)}
    for x, y, tasks in batches.training(64):
        for xi, yi, ti in zip(x, y, tasks, strict=True):
            seen[int(ti)].append((tuple(xi.tolist()), int(yi)))
    for k in range(3):  # every training sample of every task exactly once, with its task and label
        expected = {
            (tuple(xi.tolist()), int(yi))
            for xi, yi in zip(*vars(seq.tasks[k].train).values(), strict=True)
        }
        assert len(seen[k]) == 100 and set(seen[k]) == expected
    model = small_net(seq, quantized=False)
    alone = [batches_of(seq, k).valid_loss(model, 1000) for k in range(3)]
    assert batches.valid_loss(model, 37) == pytest.approx(sum(alone) / 3, rel=1e-5)
    assert make_method("joint").training_tasks(2) == (0, 1, 2)


def test_joint_keeps_old_tasks_and_is_a_reference():
    seq = synthetic_sequence(tasks=3)
    records = list(
        run_sequence(
            seq, small_net(seq, quantized=False), make_method("joint"), settings=FAST, seed=0
        )
    )
    final = records[-1].row
    assert min(final) > 0.8, "joint training must not lose the earlier tasks"
    assert {r.role for r in records} == {"reference"}
    per_task = 300 * (20 * 4 + 8)  # float32 inputs and int64 labels of each training split
    assert [r.state_bytes for r in records] == [per_task, 2 * per_task, 3 * per_task]


# --- state kept --------------------------------------------------------------------------------


def test_replay_memory_grows_with_the_tasks_while_si_and_mas_stay_constant():
    seq = synthetic_sequence(tasks=4)

    def state(name: str, **hp) -> list[int]:
        method = make_method(name, **hp)
        model = small_net(seq, quantized=False)
        runs = run_sequence(seq, model, method, settings=TrainSettings(epochs=1), seed=0)
        return [r.state_bytes for r in runs]

    for name in ("agem", "er"):
        sizes = state(name, per_class=5)
        per_task = 10 * (20 * 4 + 8)  # 5 per class, 2 classes: float32 inputs, int64 labels
        assert sizes == [per_task * (t + 1) for t in range(4)], name
    for name in ("si", "mas"):
        sizes = state(name)
        assert sizes[0] > 0 and len(set(sizes)) == 1, name


def test_an_rl_method_may_not_override_a_supervised_only_hook():
    class Replaying(ContinualMethod):
        tracks = ("supervised", "rl")

        def replay(self, model, task_id, batch_size):
            return None

    with pytest.raises(TypeError, match="overrides replay, which RL never calls"):
        register_method("replaying_for_test")(Replaying)
    assert "replaying_for_test" not in METHODS


def test_configs_come_from_the_official_code_and_refuse_bad_values():
    agem = make_method("agem").config
    assert (agem.per_class, agem.memory_batch) == (13, 256)
    assert make_method("er").config.per_class == 13
    with pytest.raises(ValueError, match="per_class: must be >= 1, got 0"):
        make_method("er", per_class=0)
    with pytest.raises(ValueError, match="memory_batch: must be >= 1, got 0"):
        make_method("agem", memory_batch=0)
