"""Networks: shapes, plain vs quantized trunks, the paper's sizes, ResNet's BatchNorm freeze."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from blip_ray.data import SEQUENCES
from blip_ray.models import (
    MODELS,
    ModelOptions,
    MultiHeadNet,
    alexnet32_fc_width,
    atari_trunk,
    build_model,
    check_build,
    mlp_hidden_width,
)
from blip_ray.models.resnet import ResNet18Trunk, final_map_size
from blip_ray.quant import (
    QuantConv2d,
    QuantLinear,
    QuantMixin,
    blip_layers,
    capacity,
    end_task,
    sampled_label_log_prob,
    set_f_prior,
)

HEADS = (2, 3, 5)

#: name -> (input shape, small width for fast CPU tests)
SMALL = {
    "mlp": ((64,), 0.5),
    "alexnet32": ((3, 32, 32), 0.25),
    "alexnet84": ((3, 84, 84), 0.125),
    "resnet18": ((3, 84, 84), 0.125),
    "atari_cnn": ((4, 84, 84), 0.125),
}

#: Trunk modules allowed besides the (plain or quantized) Linear/Conv2d layers.
STRUCTURAL = (
    nn.ReLU,
    nn.Dropout,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.Flatten,
    nn.BatchNorm2d,
)


def small(name: str, *, quantized: bool = False, variant: str = "classification") -> MultiHeadNet:
    shape, width = SMALL[name]
    options = ModelOptions(
        input_shape=shape, head_sizes=HEADS, quantized=quantized, variant=variant, width=width
    )
    return build_model(name, options)


def paper(name: str, shape: tuple[int, ...], width: float = 1.0) -> MultiHeadNet:
    """A full-size paper network on the meta device: exact sizes, no memory, no init time."""
    with torch.device("meta"):
        return build_model(name, ModelOptions(input_shape=shape, head_sizes=(10,), width=width))


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_every_family_is_registered() -> None:
    assert set(SMALL) <= set(MODELS)


@pytest.mark.parametrize("quantized", [False, True])
@pytest.mark.parametrize("name", sorted(SMALL))
def test_forward_shapes_for_every_head(name: str, quantized: bool) -> None:
    model = small(name, quantized=quantized)
    shape, _ = SMALL[name]
    x = torch.randn(2, *shape)
    assert model.features(x).shape == (2, model.feature_dim)
    for task, classes in enumerate(HEADS):
        assert model(x, task).shape == (2, classes)


@pytest.mark.parametrize("quantized", [False, True])
@pytest.mark.parametrize("name", sorted(SMALL))
def test_trunk_layers_quantized_iff_asked_and_heads_plain(name: str, quantized: bool) -> None:
    model = small(name, quantized=quantized)
    weighted = [m for m in model.trunk.modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    assert weighted
    assert all(isinstance(m, QuantMixin) == quantized for m in weighted)
    assert all(type(head) is nn.Linear for head in model.heads)
    leaves = [m for m in model.trunk.modules() if not list(m.children())]
    leaves = [m for m in leaves if type(m) is not nn.Sequential]  # ResNet's identity shortcuts
    assert all(isinstance(m, (*STRUCTURAL, nn.Linear, nn.Conv2d)) for m in leaves)
    assert all(not m.affine for m in leaves if isinstance(m, nn.BatchNorm2d))
    if quantized:  # every trunk parameter is BLIP state-carrying: nothing escapes quantization
        quant_params = {id(p) for layer in blip_layers(model) for _, p in layer.blip_params()}
        assert {id(p) for p in model.trunk.parameters()} == quant_params


def test_dropout_lives_in_the_trunk() -> None:
    """BLIP's Fisher switches dropout off via eval mode, which needs modules, not F.dropout."""
    rates = [m.p for m in small("alexnet84").trunk.modules() if isinstance(m, nn.Dropout)]
    assert rates == [0.2, 0.2, 0.5, 0.5, 0.5]
    rates = [m.p for m in small("alexnet32").trunk.modules() if isinstance(m, nn.Dropout)]
    assert rates == [0.2] * 5


def test_paper_parameter_counts() -> None:
    # q_mlp: 784*1200 + 1200.
    assert count(paper("mlp", (1, 28, 28)).trunk) == 942_000
    # cifar, m = 2: convs 3->128 k4, 128->256 k3, 256->512 k2; fc 2048->2048->2048.
    conv = (3 * 128 * 16 + 128) + (128 * 256 * 9 + 256) + (256 * 512 * 4 + 512)
    assert count(paper("alexnet32", (3, 32, 32), 2).trunk) == conv + 2 * (2048 * 2048 + 2048)
    assert conv + 2 * (2048 * 2048 + 2048) == 9_218_944
    # mixture5, m = 0.8: convs 51/102/205; fc 820->1638->1638.
    conv = (3 * 51 * 16 + 51) + (51 * 102 * 9 + 102) + (102 * 205 * 4 + 205)
    fc = (820 * 1638 + 1638) + (1638 * 1638 + 1638)
    assert count(paper("alexnet32", (3, 32, 32), 0.8).trunk) == conv + fc == 4_162_744
    # miniImageNet AlexNet: convs k10/k8/k2, fc 12544->2048->512.
    conv = (3 * 64 * 100 + 64) + (64 * 128 * 64 + 128) + (128 * 256 * 4 + 256)
    fc = (12544 * 2048 + 2048) + (2048 * 512 + 512)
    assert count(paper("alexnet84", (3, 84, 84)).trunk) == conv + fc == 27_416_256
    # Atari: 4->32 k8, 32->64 k4, 64->128 k3, 6272->1024 (the "6.54M" of the RL trunk).
    conv = (4 * 32 * 64 + 32) + (32 * 64 * 16 + 64) + (64 * 128 * 9 + 128)
    assert count(paper("atari_cnn", (4, 84, 84)).trunk) == conv + 6272 * 1024 + 1024 == 6_538_464


def test_resnet18_paper_count_and_widths() -> None:
    model = paper("resnet18", (3, 84, 84), 1.5)
    widths = (96, 192, 384, 768)
    expected = 3 * 96 * 9  # stem, no bias; BatchNorm is affine-free
    in_planes = 96
    for planes in widths:
        expected += 9 * in_planes * planes + 9 * planes * planes  # first block
        expected += 0 if in_planes == planes else in_planes * planes  # 1x1 shortcut
        expected += 2 * 9 * planes * planes  # second block
        in_planes = planes
    assert count(model.trunk) == expected == 25_106_976
    assert model.feature_dim == 768
    stages = [model.trunk.layer1, model.trunk.layer2, model.trunk.layer3, model.trunk.layer4]
    assert [stage[0].conv1.out_channels for stage in stages] == list(widths)


def test_alexnet32_widths_of_both_paper_configurations() -> None:
    cifar = paper("alexnet32", (3, 32, 32), 2).trunk
    assert [cifar.conv1.out_channels, cifar.conv2.out_channels, cifar.conv3.out_channels] == [
        128,
        256,
        512,
    ]
    assert (cifar.fc1.in_features, cifar.fc1.out_features, cifar.fc2.out_features) == (
        2048,
        2048,
        2048,
    )
    mixture = paper("alexnet32", (3, 32, 32), 0.8).trunk
    assert [mixture.conv1.out_channels, mixture.conv2.out_channels] == [51, 102]
    assert mixture.conv3.out_channels == 205
    assert (mixture.fc1.in_features, mixture.fc1.out_features, mixture.fc2.out_features) == (
        820,
        1638,
        1638,
    )


def test_fc_width_rules_and_overrides() -> None:
    def opts(shape: tuple[int, ...], **kw: object) -> ModelOptions:
        return ModelOptions(input_shape=shape, head_sizes=(2,), **kw)  # type: ignore[arg-type]

    assert mlp_hidden_width(opts((1, 28, 28))) == 1200
    assert mlp_hidden_width(opts((64,))) == 256
    assert mlp_hidden_width(opts((784,), width=0.5)) == 600
    assert alexnet32_fc_width(opts((3, 32, 32), width=0.5, fc_width=2048)) == 2048
    assert small("mlp").feature_dim == 128
    with pytest.raises(ValueError, match="fc_width"):
        build_model("alexnet84", opts((3, 84, 84), fc_width=100))
    with pytest.raises(ValueError, match="width"):
        opts((64,), width=0)
    with pytest.raises(ValueError, match="variant"):
        opts((64,), variant="bogus")


def test_alexnet84_spatial_sizes_give_7x7() -> None:
    trunk = paper("alexnet84", (3, 84, 84)).trunk
    assert (trunk.conv1.kernel_size, trunk.conv2.kernel_size) == ((10, 10), (8, 8))
    assert trunk.fc1.in_features == 256 * 7 * 7
    convs = small("alexnet84").trunk[:-7]  # everything before flatten, at width 0.125
    assert convs(torch.randn(1, 3, 84, 84)).shape == (1, 32, 7, 7)


def test_resnet18_keeps_the_official_pooling_quirk_at_84() -> None:
    assert final_map_size(84) == 6
    trunk = small("resnet18").trunk
    assert isinstance(trunk.pool, nn.AvgPool2d) and trunk.pool.kernel_size == 4
    fmap = torch.randn(2, 8, 6, 6)  # the official avg_pool2d(out, 4): top-left 4x4 only
    assert torch.allclose(trunk.pool(fmap).flatten(1), fmap[..., :4, :4].mean((2, 3)))
    small32 = ModelOptions(input_shape=(3, 32, 32), head_sizes=(2,), width=0.125)
    assert isinstance(build_model("resnet18", small32).trunk.pool, nn.AdaptiveAvgPool2d)


def batchnorm_stats(trunk: ResNet18Trunk) -> list[torch.Tensor]:
    return [bn.running_mean.clone() for bn in trunk.batchnorms()]


def same(left: list[torch.Tensor], right: list[torch.Tensor]) -> bool:
    return all(torch.equal(a, b) for a, b in zip(left, right, strict=True))


def test_resnet18_batchnorm_frozen_after_task_0() -> None:
    model = small("resnet18")
    x = torch.randn(4, 3, 84, 84)
    model.on_task_start(0)
    model.train()
    before = batchnorm_stats(model.trunk)
    model(x, 0)
    assert not same(before, batchnorm_stats(model.trunk))

    model.on_task_start(1)
    model.train()  # a training loop's call must not unfreeze BatchNorm
    assert model.trunk.batchnorm_frozen
    assert all(not bn.training for bn in model.trunk.batchnorms())
    assert any(m.training for m in model.trunk.modules() if not isinstance(m, nn.BatchNorm2d))
    frozen = batchnorm_stats(model.trunk)
    model(x, 1)
    assert same(frozen, batchnorm_stats(model.trunk))

    restored = small("resnet18")
    restored.load_state_dict(model.state_dict())
    assert restored.trunk.batchnorm_frozen
    assert all(not bn.training for bn in restored.trunk.batchnorms())  # no train() call needed
    restored.train()
    assert all(not bn.training for bn in restored.trunk.batchnorms())
    restored(x, 2)
    assert same(frozen, batchnorm_stats(restored.trunk))


@pytest.mark.parametrize(
    ("name", "variant"),
    [("mlp", "classification"), ("resnet18", "classification"), ("atari_cnn", "rl")],
)
def test_quantized_trunk_runs_blip_end_task(name: str, variant: str) -> None:
    model = small(name, quantized=True, variant=variant)
    assert all(layer.variant == variant for layer in blip_layers(model))
    set_f_prior(model, 1e-15)
    shape, _ = SMALL[name]
    batches = [torch.randn(4, *shape) for _ in range(2)]
    model.train()
    total = end_task(
        model,
        task=0,
        batches=batches,
        log_prob_fn=lambda m, x: sampled_label_log_prob(m(x, 0)),
    )
    assert total == 8
    assert model.training  # restored after the Fisher's eval mode
    assert capacity(model).total > 0
    for layer in blip_layers(model):
        for param_name, param in layer.blip_params():
            assert torch.equal(param, layer.state(param_name, "prev"))


def test_atari_trunk_for_the_rl_track() -> None:
    options = ModelOptions(input_shape=(4, 84, 84), head_sizes=(14, 18), variant="rl")
    with torch.device("meta"):
        trunk, dim = atari_trunk(options)
    assert dim == 1024 and trunk.fc.in_features == 128 * 7 * 7
    assert [trunk.conv1.stride, trunk.conv2.stride, trunk.conv3.stride] == [(4, 4), (2, 2), (1, 1)]
    plain_rl = small("atari_cnn", variant="rl").trunk
    assert all(not m.bias.any() for m in plain_rl if isinstance(m, nn.Linear | nn.Conv2d))
    quant = small("atari_cnn", quantized=True).trunk
    assert isinstance(quant.conv1, QuantConv2d) and isinstance(quant.fc, QuantLinear)


def test_unknown_network_lists_known_names() -> None:
    options = ModelOptions(input_shape=(64,), head_sizes=(2,))
    with pytest.raises(KeyError) as info:
        build_model("vgg16", options)
    message = str(info.value)
    assert "vgg16" in message
    assert all(name in message for name in sorted(MODELS))


def test_check_build_refuses_inputs_a_network_cannot_take() -> None:
    """What specs are checked with: each sequence's paper network takes its inputs; image
    networks refuse flat inputs and images too small for their kernels; mlp takes anything."""
    for entry in SEQUENCES.values():
        for network in (entry.network, "mlp"):
            check_build(network, ModelOptions(input_shape=entry.input_shape, head_sizes=(2,)))
    check_build("resnet18", ModelOptions(input_shape=(3, 84, 84), head_sizes=(2,), width=1.5))
    refused = {
        ("alexnet32", (784,)): "channels-first image shape",
        ("atari_cnn", (64,)): "channels-first image shape",
        ("atari_cnn", (3, 32, 32)): "too small",
        ("alexnet84", (3, 8, 8)): "too small",
    }
    for (network, shape), message in refused.items():
        with pytest.raises(ValueError, match=message):
            check_build(network, ModelOptions(input_shape=shape, head_sizes=(2,)))
    with pytest.raises(ValueError, match="alexnet84 has no fc_width rule"):
        check_build("alexnet84", ModelOptions(input_shape=(3, 84, 84), head_sizes=(2,), fc_width=8))
