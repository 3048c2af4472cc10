"""Models: DeepLabv3+ (WideResNet38 and light trunks) and Mask2Former (Mask2Anomaly variant)."""

from lib.models.registry import build_model, model_names, register_model

__all__ = ["build_model", "model_names", "register_model"]
