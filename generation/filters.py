"""Step 6 of CG-Aug: keep a generated image only if its pasted object came out as an object that a
segmenter would call anomalous.

- :class:`SamIoUFilter`: SAM (transformers ``SamModel`` + ``SamProcessor``) prompted with the bounding
  box of the pasted mask on the generated image, single-mask output; pass if
  IoU(SAM mask, pasted mask) > threshold (0.7). SAM's mask becomes the anomaly label.
- :class:`AnomalyScoreFilter`: any model with the project's forward contract
  ``model(images [B, 3, H, W] ImageNet-normalised) -> (anomaly_score [B, H, W], logits)``; pass if the
  mean score inside the mask is >= threshold (-3.02 for the published Mask2Anomaly score).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from generation.local_models import missing_model_error, resolve_model_path
from lib.image_tensor import rgb_to_normalized


@dataclass(frozen=True)
class FilterResult:
    """Verdict of one filter: ``value`` is the IoU or the mean score; ``mask`` the mask to keep."""

    passed: bool
    value: float
    mask: np.ndarray


def box_of(mask: np.ndarray) -> list[float]:
    """``[x0, y0, x1, y1]`` (inclusive pixel coordinates) of a non-empty bool mask ``[H, W]``."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("cannot box an empty mask")
    return [float(cols[0]), float(rows[0]), float(cols[-1]), float(rows[-1])]


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two bool masks (0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def sam_image_processor_class() -> type:
    """The SAM image processor that needs no torchvision: ``SamImageProcessorPil`` in transformers 5,
    ``SamImageProcessor`` (numpy/PIL based there) in transformers 4."""
    import transformers

    return getattr(transformers, "SamImageProcessorPil", None) or transformers.SamImageProcessor


def load_sam(path: str, device: str) -> tuple[nn.Module, object]:
    """Load ``SamModel`` and its processor from a local folder or cached id (never downloads)."""
    from transformers import SamModel, SamProcessor

    path = resolve_model_path(path, "SAM")
    try:
        model = SamModel.from_pretrained(path, local_files_only=True)
        image_processor = sam_image_processor_class().from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as err:
        raise missing_model_error("SAM", path, err) from None
    return model.to(device).eval(), SamProcessor(image_processor=image_processor)


class SamIoUFilter:
    """Box-prompted SAM check of the pasted object (published: ViT-H, IoU > 0.7)."""

    def __init__(self, *, model: nn.Module, processor: object, threshold: float = 0.7) -> None:
        self.model = model
        self.processor = processor
        self.threshold = threshold

    @torch.no_grad()
    def segment(self, image: np.ndarray, box: list[float]) -> np.ndarray:
        """SAM's single mask ``[H, W]`` bool for one ``[H, W, 3]`` uint8 image and one box."""
        device = next(self.model.parameters()).device
        inputs = self.processor(images=image, input_boxes=[[box]], return_tensors="pt")
        out = self.model(
            pixel_values=inputs["pixel_values"].to(device),
            input_boxes=inputs["input_boxes"].to(device),
            multimask_output=False,
        )
        masks = self.processor.image_processor.post_process_masks(
            out.pred_masks.float().cpu(), inputs["original_sizes"], inputs["reshaped_input_sizes"]
        )
        return masks[0][0, 0].numpy().astype(bool)

    def __call__(self, image: np.ndarray, pasted_mask: np.ndarray) -> FilterResult:
        sam_mask = self.segment(image, box_of(pasted_mask))
        iou = mask_iou(sam_mask, pasted_mask)
        return FilterResult(passed=iou > self.threshold, value=iou, mask=sam_mask)


class AnomalyScoreFilter:
    """Mean anomaly score of ``model`` inside the object mask must reach ``threshold``."""

    def __init__(
        self,
        *,
        model: nn.Module,
        threshold: float,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
    ) -> None:
        self.model = model.eval()
        self.threshold = threshold
        self.mean, self.std = mean, std

    @torch.no_grad()
    def score(self, image: np.ndarray, mask: np.ndarray) -> float:
        """Mean anomaly score inside ``mask`` ``[H, W]`` of ``image`` ``[H, W, 3]`` uint8."""
        device = next(self.model.parameters()).device
        x = rgb_to_normalized(image, self.mean, self.std)[None].to(device)
        scores, _ = self.model(x)
        if scores.shape[-2:] != mask.shape:
            raise ValueError(f"anomaly score map {tuple(scores.shape)} does not match the mask {mask.shape}")
        return float(scores[0].float().cpu().numpy()[mask].mean())

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> FilterResult:
        value = self.score(image, mask)
        return FilterResult(passed=value >= self.threshold, value=value, mask=mask)


def build_score_model(name: str, model_kwargs: dict, weight_path: str, device: str) -> nn.Module:
    """The registered segmentation model ``name`` with its weights (none: random, for tests) for the
    score filter; a checkpoint of this project must have been trained as ``name``."""
    from lib.models import build_model
    from lib.models.checkpoints import load_model

    if weight_path:
        model = load_model(weight_path, name=name, kwargs=model_kwargs, name_key="score.model")
    else:
        model = build_model(name, **model_kwargs)
    return model.to(device).eval()
