"""ResNet backbones: shapes, parameter counts against the references, torchvision equivalence, memory
formats, the error for non-image inputs, and a run end to end."""

from __future__ import annotations

import pytest
import torch

from clframe.config import compose
from clframe.config.registry import BACKBONES
from clframe.errors import ConfigError
from clframe.models.backbones.resnet import ResNet18, ResNet32
from clframe.run.runner import build, fit


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# -- parameter counts from the architectures, written out independently --------------------------------
def conv(k: int, c_in: int, c_out: int) -> int:
    return k * k * c_in * c_out  # no bias: BatchNorm follows


def bn(c: int) -> int:
    return 2 * c  # weight and bias


def block(c_in: int, c_out: int, projection: bool) -> int:
    return conv(3, c_in, c_out) + bn(c_out) + conv(3, c_out, c_out) + bn(c_out) + (
        conv(1, c_in, c_out) + bn(c_out) if projection else 0)


def resnet18_count(nf: int, channels: int = 3, stem_kernel: int = 3) -> int:
    total = conv(stem_kernel, channels, nf) + bn(nf)
    widths = [nf, 2 * nf, 4 * nf, 8 * nf]
    c_in = nf
    for w in widths:
        total += block(c_in, w, projection=c_in != w) + block(w, w, projection=False)
        c_in = w
    return total


def resnet32_count(channels: int = 3) -> int:
    total = conv(3, channels, 16) + bn(16)
    c_in = 16
    for w in (16, 32, 64):
        total += sum(block(c_in if i == 0 else w, w, projection=False) for i in range(5))  # option A: no params
        c_in = w
    return total


# -- shapes ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(2, 3, 16, 16), (2, 1, 8, 8)])
@pytest.mark.parametrize(("name", "params", "features"), [
    ("resnet18", {"nf": 4}, 32),
    ("resnet18", {"nf": 4, "stem": "imagenet"}, 32),
    ("resnet18", {"nf": 2, "init": "kaiming"}, 16),
    ("resnet32", {}, 64),
])
def test_output_shape_and_out_features(name, params, features, shape):
    torch.manual_seed(0)
    net = BACKBONES.build(name, params, input_shape=shape[1:])
    out = net(torch.randn(shape))
    assert net.out_features == features
    assert out.shape == (shape[0], features) and torch.isfinite(out).all()
    assert (out >= 0).all() and out.abs().sum() > 0  # pooled ReLU features, not all zero


def test_first_conv_takes_the_scenarios_channels():
    assert ResNet18((1, 8, 8), nf=4).conv1.in_channels == 1
    assert ResNet18((5, 8, 8), nf=4, stem="imagenet").conv1.weight.shape == (4, 5, 7, 7)
    assert ResNet32((2, 8, 8)).conv1.in_channels == 2


# -- parameter counts ----------------------------------------------------------------------------------------
def test_reduced_resnet18_has_the_references_1_1m_parameters():
    net = ResNet18((3, 32, 32), nf=20)
    with_head = n_params(net) + n_params(torch.nn.Linear(net.out_features, 10))
    assert n_params(net) == resnet18_count(20) == 1_093_140
    assert with_head == resnet18_count(20) + 160 * 10 + 10 == 1_094_750  # GEM/DER/Mammoth's ~1.1M
    # a 1-channel input changes only the stem
    assert n_params(ResNet18((1, 8, 8), nf=20)) == resnet18_count(20, channels=1)


def test_resnet32_has_pycils_parameter_count():
    net = ResNet32((3, 32, 32))
    assert n_params(net) == resnet32_count() == 463_504  # ~0.46M, plus 650 for a 10-class head
    assert not any(isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1) for m in net.modules())


def test_full_resnet18_equals_torchvisions_feature_extractor():
    from torchvision.models import resnet18

    torch.manual_seed(0)
    tv = resnet18(weights=None)
    ours = ResNet18((3, 32, 32), nf=64, stem="imagenet")
    assert n_params(ours) == n_params(tv) - n_params(tv.fc) == resnet18_count(64, stem_kernel=7) == 11_176_512
    # the keys are torchvision's: its state dict without fc loads strictly
    ours.load_state_dict({k: v for k, v in tv.state_dict().items() if not k.startswith("fc.")})
    tv.fc = torch.nn.Identity()
    tv.eval(), ours.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(ours(x), tv(x), atol=1e-6)


# -- memory formats and flat inputs --------------------------------------------------------------------------
@pytest.mark.parametrize("make", [lambda: ResNet18((3, 16, 16), nf=4), lambda: ResNet32((3, 16, 16)),
                                  lambda: ResNet18((3, 16, 16), nf=4, stem="imagenet")])
@pytest.mark.parametrize("train", [False, True])
def test_channels_last_gives_the_same_output(make, train):
    torch.manual_seed(0)
    net = make().train(train)
    x = torch.randn(3, 3, 16, 16)
    ref = net(x)
    out = net(x.contiguous(memory_format=torch.channels_last))
    # other kernels sum in another order: float32 rounding, amplified in training by BatchNorm's statistics
    # of 3 values per channel on the 1x1 map of layer4
    tol = 1e-3 if train else 1e-5
    assert torch.allclose(out, ref, atol=tol)
    net = net.to(memory_format=torch.channels_last)  # the weights too
    assert torch.allclose(net(x.contiguous(memory_format=torch.channels_last)), ref, atol=tol)
    out.sum().backward()  # and it trains


def test_flat_inputs_are_reshaped_by_the_scenarios_image_shape():
    torch.manual_seed(0)
    net = ResNet18((1, 8, 8), nf=4).eval()
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(net(x.flatten(1)), net(x))
    with pytest.raises(ValueError, match=r"expected images \[B, 1, H, W\] or flat \[B, 64\]"):
        net(torch.randn(2, 63))


def test_a_one_sample_batch_trains_where_the_map_is_1x1():
    # the last batch of an epoch of split digits holds one sample, and 8x8 is 1x1 after three stride-2 stages
    torch.manual_seed(0)
    net = ResNet18((1, 8, 8), nf=4).train()
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        torch.nn.BatchNorm2d(4).train()(torch.randn(1, 4, 1, 1))  # what plain BatchNorm does
    before = {k: v.clone() for k, v in net.state_dict().items() if "running_mean" in k}
    out = net(torch.randn(1, 1, 8, 8))
    out.sum().backward()
    assert out.shape == (1, 32) and torch.isfinite(out).all()
    after = net.state_dict()
    assert not torch.equal(after["layer1.0.bn1.running_mean"], before["layer1.0.bn1.running_mean"])  # 8x8 map
    assert torch.equal(after["layer4.0.bn1.running_mean"], before["layer4.0.bn1.running_mean"])  # 1x1: kept


# -- inputs it cannot take -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["resnet18", "resnet32"])
@pytest.mark.parametrize("shape", [(64,), (40,), (20, 3)])
def test_non_image_inputs_are_refused_clearly(name, shape):
    with pytest.raises(ConfigError, match=rf"'backbone.input_shape' is \({shape[0]}.*{name} backbone needs image "
                                          r"inputs \[C, H, W\].*split, permuted, rotated"):
        BACKBONES.build(name, {}, input_shape=shape)


def test_a_run_on_flat_inputs_is_refused_before_training():
    with pytest.raises(ConfigError, match="needs image inputs"):
        build(compose(["scenario=toy_regression", "backbone=resnet18", "logger.progress=false"]))


# -- end to end ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backbone", [["backbone=resnet18", "backbone.nf=4"], ["backbone=resnet32"]])
def test_a_run_trains_end_to_end_on_split_digits(backbone):
    built = build(compose(["scenario=split", "scenario.dataset=digits", "scenario.n_experiences=2", *backbone,
                           "train.epochs=1", "logger.progress=false", "strategy=replay"]))
    assert built.scenario.input_shape == (1, 8, 8)
    net = built.module.model.backbone
    assert isinstance(net, ResNet18 if backbone[0].endswith("18") else ResNet32)
    before = [p.detach().clone() for p in net.parameters()]
    fit(built)
    acc = built.module.acc_matrix
    assert len(acc) == 2 and all(len(row) == 2 for row in acc)
    assert all(0.0 <= a <= 1.0 for row in acc for a in row)
    # after one epoch each, both experiences' 5 classes are known (chance: 0.2 or less); replay keeps the first's
    assert acc[1][0] > 0.5 and acc[1][1] > 0.5
    assert any(not torch.equal(b, p) for b, p in zip(before, net.parameters()))
