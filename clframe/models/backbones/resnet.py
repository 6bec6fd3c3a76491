"""ResNets of the continual-learning vision benchmarks: ResNet-18 (GEM/DER/Mammoth, torchvision) and the
CIFAR ResNet-32 of iCaRL/PyCIL."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge
from torch import Tensor, nn

from clframe.config.registry import BACKBONES, ParamError


def image_shape(input_shape: Sequence[int], name: str) -> tuple[int, int, int]:
    """``(C, H, W)`` of image inputs; a ``ParamError`` (a ``ConfigError``) that says which scenarios give
    images otherwise. A flat ``input_shape`` is refused rather than guessed: its size alone does not
    fix the image (64 is 1x8x8 or 4x4x4), and a perfect-square feature vector (a regression's 16
    inputs) is not an image at all; every image scenario here gives ``[C, H, W]``."""
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ParamError(
            "input_shape", f"is {tuple(input_shape)}, but the {name} backbone needs image inputs [C, H, W]",
            "Use a scenario over an image dataset (digits, mnist): split, permuted, rotated, label_permuted, "
            "input_permuted, random_labels or drifting_digits; or backbone=mlp for flat inputs.")
    c, h, w = (int(d) for d in input_shape)
    return c, h, w


def as_images(x: Tensor, shape: tuple[int, int, int]) -> Tensor:
    """``x`` as ``[B, C, H, W]``: flat ``[B, C*H*W]`` inputs (e.g. samples a strategy stored flattened) are
    reshaped by the known ``shape``; ``reshape`` rather than ``view`` so any memory format works."""
    if x.dim() == 2 and x.shape[1] == shape[0] * shape[1] * shape[2]:
        return x.reshape(len(x), *shape)
    if x.dim() != 4 or x.shape[1] != shape[0]:
        raise ValueError(f"expected images [B, {shape[0]}, H, W] or flat [B, {shape[0] * shape[1] * shape[2]}], "
                         f"got {list(x.shape)}")
    return x


class BatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` that normalises a training batch holding one value per channel (one sample
    of a 1x1 map: the last, 1-sample batch of an epoch on 8x8 digits, whose map is 1x1 after three
    stride-2 stages) by its running statistics instead of raising, as the batch has no variance to
    normalise by; every other batch is normalised exactly as by ``nn.BatchNorm2d`` (same state dict)."""

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.shape[0] * x.shape[2] * x.shape[3] == 1 and self.running_mean is not None:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)


def conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    # no bias: every conv is followed by BatchNorm, whose shift makes one redundant (as in all references)
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """``conv3x3 -> BN -> ReLU -> conv3x3 -> BN``, plus the shortcut, then ReLU (He et al. 2016).

    Args:
        c_in: input channels.
        c_out: output channels.
        stride: stride of the first conv (default 1).
        shortcut: ``B``: 1x1 conv + BN where the shape changes (torchvision, Mammoth); ``A``: the input
            subsampled and zero-padded to ``c_out`` channels, parameter-free (PyCIL's ``DownsampleA``)
            (default ``B``).
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1, shortcut: Literal["A", "B"] = "B") -> None:
        super().__init__()
        self.conv1 = conv3x3(c_in, c_out, stride)
        self.bn1 = BatchNorm2d(c_out)
        self.conv2 = conv3x3(c_out, c_out)
        self.bn2 = BatchNorm2d(c_out)
        # named `downsample` like torchvision's, so its state dict loads without renaming keys
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.downsample = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), BatchNorm2d(c_out))
                               if shortcut == "B" else ZeroPadShortcut(c_out - c_in, stride))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.downsample(x))


class ZeroPadShortcut(nn.Module):
    """Option-A shortcut: keep every ``stride``-th pixel and append ``extra`` zero channels. PyCIL's
    ``DownsampleA`` (``AvgPool2d(1, stride)`` then concatenating ``x * 0``) with its ``extra`` = the
    input channels; the output size equals a padded 3x3 conv's, ``ceil(H / stride)``."""

    def __init__(self, extra: int, stride: int) -> None:
        super().__init__()
        self.extra, self.stride = extra, stride

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return torch.cat([x, x.new_zeros(x.shape[0], self.extra, *x.shape[2:])], 1)


def _kaiming(module: nn.Module) -> None:
    """torchvision's and PyCIL's init: convs ``kaiming_normal_(fan_out, relu)``, BatchNorm weight 1 bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


@BACKBONES.register("resnet18")
class ResNet18(nn.Module):
    """ResNet-18 (He et al. 2016): BasicBlocks [2, 2, 2, 2] of widths nf, 2nf, 4nf, 8nf, BatchNorm after
    every conv, global average pooling; ``out_features = 8 * nf``.

    ``stem=cifar, nf=64`` is the CIFAR ResNet-18 of DER (Buzzega et al. 2020) and Mammoth
    (``backbone/ResNetBlock.py`` ``resnet18(nclasses)``, whose ``nf`` defaults to 64; ~11.2M parameters),
    which the split_cifar10/100 and split_tinyimagenet experiments use; ``stem=cifar, nf=20`` is the
    reduced ResNet-18 of GEM (Lopez-Paz & Ranzato 2017) and the online-CL papers after it (~1.1M
    parameters with a 10-class head); ``stem=imagenet, nf=64`` is ``torchvision.models.resnet18``
    without ``fc``. Keys
    follow torchvision (``conv1``, ``bn1``, ``layer1.0.downsample.0``, ...), so a torchvision state dict
    without ``fc.*`` loads as is; Mammoth's ``shortcut.*`` is ``downsample.*`` here and its ``linear``
    is the head. The first conv takes the ``C`` channels of the scenario's images.

    Args:
        input_shape: shape of one sample, ``[C, H, W]`` (supplied by the scenario).
        nf: base width (default 64, the full form; GEM/DER/Mammoth's reduced form is 20).
        stem: ``cifar``: one 3x3 conv, stride 1, no max-pool (GEM/DER/Mammoth); ``imagenet``: 7x7
            stride-2 conv and 3x3 stride-2 max-pool (torchvision) (default ``cifar``).
        init: ``default`` (PyTorch's own, as Mammoth) or ``kaiming``: torchvision's
            ``kaiming_normal_(fan_out)`` convs and unit BatchNorm (default ``default``).
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        nf: Annotated[int, Ge(1)] = 64,
        stem: Literal["cifar", "imagenet"] = "cifar",
        init: Literal["default", "kaiming"] = "default",
    ) -> None:
        super().__init__()
        self.input_shape = image_shape(input_shape, "resnet18")
        c = self.input_shape[0]
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(c, nf, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        else:
            # small images (32x32) keep their resolution: no stride, no pool
            self.conv1 = conv3x3(c, nf)
            self.maxpool = nn.Identity()
        self.bn1 = BatchNorm2d(nf)
        widths, width = [nf, 2 * nf, 4 * nf, 8 * nf], nf
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}", nn.Sequential(BasicBlock(width, w, stride), BasicBlock(w, w)))
            width = w
        self.out_features = width
        if init == "kaiming":
            _kaiming(self)

    def forward(self, x: Tensor) -> Tensor:
        x = as_images(x, self.input_shape)
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        # global average pooling: any input size; on 32x32 CIFAR it is the references' avg_pool2d(out, 4)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)  # [B, out_features]


@BACKBONES.register("resnet32")
class ResNet32(nn.Module):
    """The CIFAR ResNet-32 of iCaRL (Rebuffi et al. 2017) as PyCIL's ``convs/cifar_resnet.py``
    ``resnet32``: a 3x3 stem of 16 channels, three stages of 5 BasicBlocks of widths 16, 32, 64 (stride
    2 at stages 2 and 3), the option-A shortcut (He et al. 2016: identity, subsampled and zero-padded
    with channels where the shape changes, no parameters: PyCIL's ``DownsampleA``), global average
    pooling (PyCIL's ``AvgPool2d(8)`` on 32x32 inputs); ``out_features = 64``, ~0.46M parameters.
    Convs use PyCIL's ``kaiming_normal_(fan_out)`` init. The first conv takes the scenario's ``C``
    channels.

    Args:
        input_shape: shape of one sample, ``[C, H, W]`` (supplied by the scenario).
    """

    def __init__(self, input_shape: Sequence[int]) -> None:
        super().__init__()
        self.input_shape = image_shape(input_shape, "resnet32")
        self.conv1 = conv3x3(self.input_shape[0], 16)
        self.bn1 = BatchNorm2d(16)
        stages, width = [], 16
        for i, w in enumerate((16, 32, 64)):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(BasicBlock(width, w, stride, shortcut="A"),
                                        *(BasicBlock(w, w, shortcut="A") for _ in range(4))))
            width = w
        self.stage1, self.stage2, self.stage3 = stages
        self.out_features = width
        _kaiming(self)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(as_images(x, self.input_shape))))
        x = self.stage3(self.stage2(self.stage1(x)))
        return F.adaptive_avg_pool2d(x, 1).flatten(1)  # [B, out_features]
