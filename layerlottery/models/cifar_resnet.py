"""ResNet v1 for CIFAR (He et al. 2016, Section 4.2): depth 6n+2, three stages of 16/32/64 channels.

Two shortcut styles for the stride-2 block that opens stages 2 and 3:

* ``"B"`` (the default everywhere): a 1x1 strided projection conv + BN, the paper's framework, whose MAC
  counts we reproduce (ResNet-32: 69,124,736);
* ``"A"``: parameter-free identity, subsampled and zero-padded in channels (the common PyTorch variant,
  262,144 MACs fewer for ResNet-32).

Blocks live in ``layer1``, ``layer2``, ``layer3`` (``nn.Sequential``) so block names such as
``layer2.3`` are stable and survive block removal.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from layerlottery.errors import ConfigError
from layerlottery.models.registry import register_model


class ZeroPadShortcut(nn.Module):
    """Option A shortcut: take every ``stride``-th pixel and zero-pad the new channels."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra = planes - in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        # Pad the channel dimension evenly on both sides, as in the reference implementations.
        return F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus shortcut, then ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "B") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            if shortcut == "A":
                self.shortcut = ZeroPadShortcut(in_planes, planes, stride)
            else:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
                )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """A CIFAR ResNet with ``blocks_per_stage`` BasicBlocks in each of ``len(widths)`` stages."""

    def __init__(
        self,
        blocks_per_stage: int | Sequence[int],
        widths: Sequence[int] = (16, 32, 64),
        shortcut: str = "B",
        num_classes: int = 10,
        in_channels: int = 3,
        image_size: int = 32,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        if shortcut not in ("A", "B"):
            raise ConfigError(f"shortcut must be 'A' (zero-padded identity) or 'B' (1x1 projection), not {shortcut!r}")
        counts = [blocks_per_stage] * len(widths) if isinstance(blocks_per_stage, int) else list(blocks_per_stage)
        if len(counts) != len(widths) or min(counts) < 1:
            raise ConfigError(f"blocks_per_stage {blocks_per_stage} must give at least 1 block to each of {len(widths)} stages")
        for name, value in (("num_classes", num_classes), ("in_channels", in_channels), ("image_size", image_size)):
            if value < 1:
                raise ConfigError(f"{name} must be a positive integer, not {value}")
        self.shortcut_style = shortcut
        self.default_input_shape = (in_channels, image_size, image_size)
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        in_planes = widths[0]
        for stage, (width, count) in enumerate(zip(widths, counts), start=1):
            blocks = []
            for index in range(count):
                stride = 2 if stage > 1 and index == 0 else 1
                blocks.append(BasicBlock(in_planes, width, stride, shortcut))
                in_planes = width
            self.add_module(f"layer{stage}", nn.Sequential(*blocks))
        self.fc = nn.Linear(in_planes, num_classes)
        self._initialize(zero_init_residual)

    def _initialize(self, zero_init_residual: bool) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, mode="fan_out" if isinstance(module, nn.Conv2d) else "fan_in", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if zero_init_residual:
            # Each branch then starts as the zero function (Goyal et al. 2017); note that gradient-based
            # scores at initialization become all zero, which the criteria detect and report.
            for module in self.modules():
                if isinstance(module, BasicBlock):
                    nn.init.zeros_(module.bn2.weight)

    def stages(self) -> list[nn.Sequential]:
        """The stage containers, in order."""
        return [module for name, module in self.named_children() if name.startswith("layer")]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        for stage in self.stages():
            out = stage(out)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


def _register_depth(depth: int) -> None:
    n = (depth - 2) // 6

    @register_model(f"cifar_resnet{depth}")
    def factory(**options: object) -> CifarResNet:
        return CifarResNet(blocks_per_stage=n, **options)  # type: ignore[arg-type]

    factory.__doc__ = f"ResNet-{depth} for CIFAR: {n} blocks in each of 3 stages (16/32/64 channels)."


for _depth in (20, 32, 44, 56, 110):
    _register_depth(_depth)


@register_model("test_resnet", hidden=True)
def test_resnet(**options: object) -> CifarResNet:
    """A tiny CIFAR-style ResNet (widths 4/8/8, 3 blocks per stage) for fast tests."""
    options.setdefault("widths", (4, 8, 8))
    options.setdefault("blocks_per_stage", 3)
    return CifarResNet(**options)  # type: ignore[arg-type]


class PlainCNN(nn.Module):
    """A small CNN with no residual blocks: block removal must refuse it with a clear error."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> None:
        super().__init__()
        self.default_input_shape = (in_channels, image_size, image_size)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()
        )
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


@register_model("test_plain_cnn", hidden=True)
def test_plain_cnn(**options: object) -> PlainCNN:
    """A tiny CNN without residual blocks."""
    return PlainCNN(**options)  # type: ignore[arg-type]
