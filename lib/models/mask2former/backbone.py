"""ResNet backbone of Mask2Former (He et al. 2016; detectron2's ``build_resnet_backbone``).

Parameter names follow detectron2 (``stem.conv1``, ``res2.0.conv1.norm``, ``shortcut``) so that
Mask2Anomaly / MultiShiftSeg checkpoints load without renaming. Every norm is a frozen
BatchNorm (the published config sets ``NORM: BN`` with ``FREEZE_AT: 5``): its statistics and
affine terms are buffers, never trained. The stride of a downsampling block sits on the 3x3 conv
(``STRIDE_IN_1X1: False``). Outputs ``res2..res5`` at strides 4, 8, 16, 32.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed statistics and affine terms, all stored as buffers.

    ``y = (x - running_mean) / sqrt(running_var + eps) * weight + bias`` for ``x`` of shape
    ``[B, C, H, W]``.
    """

    def __init__(self, num_features: int, *, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, training=False, eps=self.eps
        )


class ConvNorm(nn.Conv2d):
    """A bias-free conv followed by its ``norm`` child (detectron2's ``Conv2d(norm=...)``)."""

    def __init__(
        self, in_channels: int, out_channels: int, *, kernel_size: int, stride: int = 1, norm: nn.Module
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False
        )
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(super().forward(x))


class BasicStem(nn.Module):
    """7x7/2 conv + frozen BN + ReLU + 3x3/2 max-pool: stride 4."""

    def __init__(self, *, out_channels: int) -> None:
        super().__init__()
        self.conv1 = ConvNorm(3, out_channels, kernel_size=7, stride=2, norm=FrozenBatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.relu_(self.conv1(x)), kernel_size=3, stride=2, padding=1)


class BottleneckBlock(nn.Module):
    """1x1 -> 3x3 (strided) -> 1x1 residual block with a projection shortcut when shapes change."""

    def __init__(self, *, in_channels: int, bottleneck_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if in_channels != out_channels or stride != 1:
            self.shortcut = ConvNorm(
                in_channels, out_channels, kernel_size=1, stride=stride, norm=FrozenBatchNorm2d(out_channels)
            )
        else:
            self.shortcut = None
        self.conv1 = ConvNorm(
            in_channels, bottleneck_channels, kernel_size=1, norm=FrozenBatchNorm2d(bottleneck_channels)
        )
        self.conv2 = ConvNorm(
            bottleneck_channels,
            bottleneck_channels,
            kernel_size=3,
            stride=stride,
            norm=FrozenBatchNorm2d(bottleneck_channels),
        )
        self.conv3 = ConvNorm(
            bottleneck_channels, out_channels, kernel_size=1, norm=FrozenBatchNorm2d(out_channels)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu_(self.conv1(x))
        out = F.relu_(self.conv2(out))
        out = self.conv3(out)
        identity = x if self.shortcut is None else self.shortcut(x)
        return F.relu_(out + identity)


class ResNet(nn.Module):
    """ResNet with bottleneck blocks; ``forward`` returns ``{"res2": [B,4w,H/4,W/4], ..., "res5"}``.

    ``feature_channels`` / ``feature_strides`` describe the outputs so heads size themselves.
    With ``frozen=True`` (the published setting) every conv weight has ``requires_grad=False``.
    """

    def __init__(
        self, *, depths: tuple[int, int, int, int] = (3, 4, 6, 3), width: int = 64, frozen: bool = True
    ) -> None:
        super().__init__()
        self.stem = BasicStem(out_channels=width)
        in_channels = width
        self.feature_channels: dict[str, int] = {}
        self.feature_strides: dict[str, int] = {}
        for i, depth in enumerate(depths):
            name = f"res{i + 2}"
            bottleneck, out_channels = width * 2**i, width * 4 * 2**i
            blocks = []
            for j in range(depth):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(
                    BottleneckBlock(
                        in_channels=in_channels,
                        bottleneck_channels=bottleneck,
                        out_channels=out_channels,
                        stride=stride,
                    )
                )
                in_channels = out_channels
            self.add_module(name, nn.Sequential(*blocks))
            self.feature_channels[name] = out_channels
            self.feature_strides[name] = 4 * 2**i
        if frozen:
            self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        x = self.stem(x)
        for name in self.feature_channels:
            x = getattr(self, name)(x)
            out[name] = x
        return out
