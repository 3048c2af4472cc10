"""Mask2Former R50 with Mask2Anomaly's global-mask-attention decoder and OOD head, pure PyTorch.

Registered builders: ``mask2anomaly_r50`` (the published configuration) and
``mask2anomaly_tiny`` (a CPU-sized variant for tests and the ToyShift demo).
"""

from __future__ import annotations

from lib.labels import NUM_CLASSES
from lib.models.mask2former.backbone import ResNet
from lib.models.mask2former.criterion import SetCriterion, semantic_targets
from lib.models.mask2former.matcher import HungarianMatcher
from lib.models.mask2former.model import Mask2Anomaly, semantic_and_anomaly
from lib.models.mask2former.pixel_decoder import MSDeformAttnPixelDecoder
from lib.models.mask2former.transformer_decoder import MaskedTransformerDecoderGMA
from lib.models.registry import register_model

__all__ = [
    "HungarianMatcher",
    "Mask2Anomaly",
    "SetCriterion",
    "build_mask2anomaly_r50",
    "build_mask2anomaly_tiny",
    "semantic_and_anomaly",
    "semantic_targets",
]


@register_model("mask2anomaly_r50")
def build_mask2anomaly_r50(
    *, num_queries: int = 100, frozen_backbone: bool = True, deform_attn: str = "auto"
) -> Mask2Anomaly:
    """ResNet-50 (frozen BN), 6-layer deformable pixel decoder (256-d, GN 32), 9-layer GMA decoder
    with ``num_queries`` queries: the published ``anomaly_ft.yaml`` configuration. ``deform_attn``
    selects the deformable-attention core: ``auto``, ``pytorch`` or ``triton``."""
    backbone = ResNet(depths=(3, 4, 6, 3), width=64, frozen=frozen_backbone)
    pixel_decoder = MSDeformAttnPixelDecoder(in_channels=backbone.feature_channels, deform_attn=deform_attn)
    predictor = MaskedTransformerDecoderGMA(num_classes=NUM_CLASSES, num_queries=num_queries)
    return Mask2Anomaly(backbone=backbone, pixel_decoder=pixel_decoder, predictor=predictor)


@register_model("mask2anomaly_tiny")
def build_mask2anomaly_tiny(
    *, num_queries: int = 10, frozen_backbone: bool = False, deform_attn: str = "auto"
) -> Mask2Anomaly:
    """A CPU-sized variant (about 0.4M parameters): one block per stage of width 8, 32-d pixel
    decoder with one deformable layer, 3 decoder layers (one per level), same interfaces."""
    backbone = ResNet(depths=(1, 1, 1, 1), width=8, frozen=frozen_backbone)
    pixel_decoder = MSDeformAttnPixelDecoder(
        in_channels=backbone.feature_channels,
        conv_dim=32,
        mask_dim=32,
        num_groups=8,
        encoder_layers=1,
        encoder_ffn_dim=64,
        encoder_heads=4,
        encoder_points=2,
        deform_attn=deform_attn,
    )
    predictor = MaskedTransformerDecoderGMA(
        num_classes=NUM_CLASSES,
        hidden_dim=32,
        num_queries=num_queries,
        nheads=4,
        dim_feedforward=64,
        dec_layers=3,
        mask_dim=32,
    )
    return Mask2Anomaly(backbone=backbone, pixel_decoder=pixel_decoder, predictor=predictor)
