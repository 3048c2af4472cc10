"""Wider ResNet-A2 trunk with dilation (Wu et al., "Wider or Deeper", 2016), as used by DeepLabv3+ in
NVIDIA's semantic-segmentation code and the published MultiShiftSeg DeepLab model.

The trunk is a stack of pre-activation residual blocks in seven stages ``mod1..mod7`` with max pooling
``pool2``/``pool3`` before the first two residual stages. With ``dilation`` the last three stages keep the
stride-8 resolution and dilate instead (2, 4, 4), so the output stride is 8. The stage names and the
block layout (``blockJ.bn1.0``, ``blockJ.convs.{conv1,bn2.0,conv2,bn3.0,conv3}``, ``blockJ.proj_conv``)
equal the published state-dict keys, so checkpoints load without renaming.

``WiderResNetSpec`` holds the numbers: ``WRN38_A2`` is the published trunk, ``WRN_LIGHT`` a width- and
depth-scaled one for CPU training on ToyShift.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn as nn


def bn_relu(channels: int) -> nn.Sequential:
    """BatchNorm2d (eps 1e-5) followed by ReLU; a ``Sequential`` so keys read ``bn.0.*``."""
    return nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True))


class IdentityResidualBlock(nn.Module):
    """Pre-activation residual block: ``out = convs(bn1(x)) + shortcut``.

    ``channels`` of length 2 gives two 3x3 convs; length 3 gives a 1x1 -> 3x3 -> 1x1 bottleneck with
    optional ``Dropout2d`` before the last 1x1. The shortcut is ``proj_conv(bn1(x))`` (1x1 with the
    block's stride) when the channel count or the resolution changes, else the raw input ``x``.
    Shapes: ``[B, in_channels, H, W] -> [B, channels[-1], ceil(H / stride), ceil(W / stride)]``.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        channels: tuple[int, ...],
        stride: int = 1,
        dilation: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if len(channels) not in (2, 3):
            raise ValueError(f"channels must have 2 or 3 entries, got {channels}")
        self.bn1 = bn_relu(in_channels)
        if len(channels) == 2:
            layers = [
                ("conv1", nn.Conv2d(in_channels, channels[0], 3, stride, dilation, dilation, bias=False)),
                ("bn2", bn_relu(channels[0])),
                ("conv2", nn.Conv2d(channels[0], channels[1], 3, 1, dilation, dilation, bias=False)),
            ]
        else:
            layers = [
                ("conv1", nn.Conv2d(in_channels, channels[0], 1, stride, bias=False)),
                ("bn2", bn_relu(channels[0])),
                ("conv2", nn.Conv2d(channels[0], channels[1], 3, 1, dilation, dilation, bias=False)),
                ("bn3", bn_relu(channels[1])),
            ]
            if dropout > 0:
                layers.append(("dropout", nn.Dropout2d(dropout)))
            layers.append(("conv3", nn.Conv2d(channels[1], channels[2], 1, bias=False)))
        self.convs = nn.Sequential(OrderedDict(layers))
        if stride != 1 or in_channels != channels[-1]:
            self.proj_conv = nn.Conv2d(in_channels, channels[-1], 1, stride, bias=False)
        else:
            self.proj_conv = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.bn1(x)
        shortcut = x if self.proj_conv is None else self.proj_conv(pre)
        return self.convs(pre) + shortcut


@dataclass(frozen=True)
class WiderResNetSpec:
    """Numbers of a dilated Wider ResNet-A2 trunk.

    ``blocks[i]`` residual blocks of ``channels[i]`` in stage ``mod{i+2}``; ``dropouts`` apply to the
    bottleneck stages ``mod6``/``mod7``. The first block of ``mod4`` has stride 2 (output stride 8).
    """

    stem_channels: int
    blocks: tuple[int, int, int, int, int, int]
    channels: tuple[tuple[int, ...], ...]
    dilations: tuple[int, int, int, int, int, int] = (1, 1, 1, 2, 4, 4)
    dropouts: tuple[float, float, float, float, float, float] = (0.0, 0.0, 0.0, 0.0, 0.3, 0.5)

    @property
    def out_channels(self) -> int:
        """Channels of the ``mod7`` output (the ASPP input)."""
        return self.channels[-1][-1]

    @property
    def skip_channels(self) -> int:
        """Channels of the ``mod2`` output (the stride-2 decoder skip)."""
        return self.channels[0][-1]


WRN38_A2 = WiderResNetSpec(
    stem_channels=64,
    blocks=(3, 3, 6, 3, 1, 1),
    channels=((128, 128), (256, 256), (512, 512), (512, 1024), (512, 1024, 2048), (1024, 2048, 4096)),
)
WRN_LIGHT = WiderResNetSpec(
    stem_channels=16,
    blocks=(1, 1, 2, 1, 1, 1),
    channels=((24, 24), (48, 48), (96, 96), (96, 128), (64, 128, 160), (64, 128, 192)),
)


def wider_resnet_stages(spec: WiderResNetSpec) -> OrderedDict[str, nn.Module]:
    """Build the trunk's modules, in forward order: ``mod1, pool2, mod2, pool3, mod3 .. mod7``.

    Returned as named modules (not one wrapper) so that a model can register them at its top level
    and keep the published key names.
    """
    stages: OrderedDict[str, nn.Module] = OrderedDict()
    stages["mod1"] = nn.Sequential(
        OrderedDict([("conv1", nn.Conv2d(3, spec.stem_channels, 3, 1, 1, bias=False))])
    )
    in_channels = spec.stem_channels
    for i, (num_blocks, channels, dilation, dropout) in enumerate(
        zip(spec.blocks, spec.channels, spec.dilations, spec.dropouts)
    ):
        blocks = []
        for j in range(num_blocks):
            stride = 2 if (i == 2 and j == 0) else 1
            block = IdentityResidualBlock(
                in_channels=in_channels, channels=channels, stride=stride, dilation=dilation, dropout=dropout
            )
            blocks.append((f"block{j + 1}", block))
            in_channels = channels[-1]
        if i < 2:
            stages[f"pool{i + 2}"] = nn.MaxPool2d(3, stride=2, padding=1)
        stages[f"mod{i + 2}"] = nn.Sequential(OrderedDict(blocks))
    return stages
