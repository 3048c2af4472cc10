"""DeepLabv3+ with a Wider ResNet trunk and an OOD head (paper Sec. 3.3 and 4.1; Chen et al. 2018).

``DeepWV3Plus`` follows the published MultiShiftSeg model (``lib/network/deepv3/deepv3.py``) layer for
layer and key for key: dilated WRN trunk (output stride 8) -> ASPP (image pooling first, then 1x1 and
three dilated 3x3 branches) -> ``bot_aspp``, upsampled to the stride-2 ``mod2`` feature and fused with
``bot_fine(mod2)`` -> ``final[0:6]`` (the penultimate feature) -> two parallel 1x1 heads: the
classifier ``final.6`` and the OOD head ``ood_head`` (W_o in the paper), whose energy is the anomaly
score. Every resize is bilinear with ``align_corners=True``, as in the published code.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

from lib.labels import NUM_CLASSES
from lib.models.registry import register_model
from lib.models.wider_resnet import WRN38_A2, WRN_LIGHT, WiderResNetSpec, wider_resnet_stages
from lib.scores import free_energy

logger = logging.getLogger(__name__)

CLASSIFIER_WEIGHT = "final.6.weight"
OOD_HEAD_WEIGHT = "ood_head.weight"


def energy_score(ood_logits: torch.Tensor) -> torch.Tensor:
    """Energy anomaly score ``u = -logsumexp_c(W_o f)_c`` over the class dim: ``[B, C, h, w] -> [B, h, w]``.

    The paper writes the energy without the minus sign; the published code (and this one) negates it
    so that a higher score means more anomalous.
    """
    return free_energy(ood_logits)


def upsample(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinear resize with ``align_corners=True`` (the published ``mynn.Upsample``)."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1) -> nn.Sequential:
    padding = dilation * (kernel_size // 2)
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class AtrousSpatialPyramidPooling(nn.Module):
    """ASPP: ``[B, in, h, w] -> [B, 5 * channels, h, w]``.

    Branches, concatenated in this order: image pooling (global average -> 1x1 conv-BN-ReLU ->
    broadcast back), a 1x1 conv-BN-ReLU, and one 3x3 conv-BN-ReLU per dilation ``rate``.
    """

    def __init__(self, *, in_channels: int, channels: int, rates: tuple[int, ...]) -> None:
        super().__init__()
        self.features = nn.ModuleList(
            [conv_bn_relu(in_channels, channels, 1)]
            + [conv_bn_relu(in_channels, channels, 3, dilation=rate) for rate in rates]
        )
        self.img_pooling = nn.AdaptiveAvgPool2d(1)
        self.img_conv = conv_bn_relu(in_channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = upsample(self.img_conv(self.img_pooling(x)), x.shape[-2:])
        return torch.cat([pooled] + [branch(x) for branch in self.features], dim=1)


class DeepWV3Plus(nn.Module):
    """DeepLabv3+ with a dilated Wider ResNet trunk, a classifier and a parallel OOD head.

    Input: ImageNet-normalised images ``[B, 3, H, W]``. Output: ``(anomaly_score [B, H, W],
    logits [B, num_classes, H, W])``; the anomaly score is the energy of the OOD-head logits, computed
    at stride 2 and then upsampled. The trunk stages are registered at the top level (``mod1..mod7``,
    ``pool2``, ``pool3``) to keep the published state-dict keys.
    """

    def __init__(
        self,
        *,
        num_classes: int = NUM_CLASSES,
        trunk: WiderResNetSpec = WRN38_A2,
        aspp_channels: int = 256,
        aspp_rates: tuple[int, ...] = (12, 24, 36),
        skip_channels: int = 48,
        decoder_channels: int = 256,
    ) -> None:
        super().__init__()
        for name, module in wider_resnet_stages(trunk).items():
            self.add_module(name, module)
        self.aspp = AtrousSpatialPyramidPooling(
            in_channels=trunk.out_channels, channels=aspp_channels, rates=aspp_rates
        )
        self.bot_fine = nn.Conv2d(trunk.skip_channels, skip_channels, 1, bias=False)
        self.bot_aspp = nn.Conv2d(aspp_channels * (2 + len(aspp_rates)), aspp_channels, 1, bias=False)
        self.final = nn.Sequential(
            nn.Conv2d(skip_channels + aspp_channels, decoder_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(decoder_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(decoder_channels, decoder_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(decoder_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(decoder_channels, num_classes, 1, bias=False),
        )
        self.ood_head = nn.Conv2d(decoder_channels, num_classes, 1, bias=False)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

    def penultimate_feature(self, x: torch.Tensor) -> torch.Tensor:
        """The decoder feature that feeds both heads: ``[B, 3, H, W] -> [B, D, ceil(H/2), ceil(W/2)]``."""
        x = self.mod1(x)
        m2 = self.mod2(self.pool2(x))
        x = self.mod3(self.pool3(m2))
        x = self.mod7(self.mod6(self.mod5(self.mod4(x))))
        x = self.bot_aspp(self.aspp(x))
        x = torch.cat([self.bot_fine(m2), upsample(x, m2.shape[-2:])], dim=1)
        return self.final[:-1](x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feature = self.penultimate_feature(x)
        size = x.shape[-2:]
        logits = upsample(self.final[-1](feature), size)
        anomaly_score = upsample(energy_score(self.ood_head(feature)).unsqueeze(1), size).squeeze(1)
        return anomaly_score, logits

    @torch.no_grad()
    def uncertainty_head_init(self) -> None:
        """Initialise the OOD head W_o as a copy of the classifier (published ``uncertainty_func_init``),
        so training starts from the plain energy of the closed-world model."""
        self.ood_head.weight.copy_(self.final[-1].weight)

    ood_head_keys = (OOD_HEAD_WEIGHT,)
    """State-dict keys of the OOD head (what a closed-world checkpoint lacks)."""

    def closed_world_ood_head(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Starting weights from a closed-world checkpoint (NVIDIA's
        ``DeepLabV3+_WideResNet38_baseline.pth``), which has no ``ood_head``: the head as a copy of
        the classifier, logged (see :func:`lib.models.checkpoints.load_weights`)."""
        if CLASSIFIER_WEIGHT not in state_dict:
            return state_dict
        logger.info(
            "checkpoint has no %r: initialising the OOD head as a copy of the classifier %r",
            OOD_HEAD_WEIGHT,
            CLASSIFIER_WEIGHT,
        )
        adapted = OrderedDict(state_dict)
        adapted[OOD_HEAD_WEIGHT] = state_dict[CLASSIFIER_WEIGHT].clone()
        return adapted


@register_model("deeplab_wrn38")
def deeplab_wrn38(*, num_classes: int = NUM_CLASSES) -> DeepWV3Plus:
    """The published DeepLabv3+ WideResNet38-A2 (137M parameters, output stride 8)."""
    return DeepWV3Plus(num_classes=num_classes, trunk=WRN38_A2)


@register_model("deeplab_wrn_light")
def deeplab_wrn_light(*, num_classes: int = NUM_CLASSES) -> DeepWV3Plus:
    """A width- and depth-scaled DeepLabv3+ WRN for CPU training on ToyShift (about 1.2M parameters).

    Same blocks, ASPP, decoder and OOD head; narrower everywhere, and ASPP rates suited to the
    16x32 stride-8 feature of a 128x256 image.
    """
    return DeepWV3Plus(
        num_classes=num_classes,
        trunk=WRN_LIGHT,
        aspp_channels=64,
        aspp_rates=(4, 8, 12),
        skip_channels=24,
        decoder_channels=48,
    )
