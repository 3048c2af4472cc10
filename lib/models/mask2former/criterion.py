"""Set criterion of Mask2Former (Cheng et al. 2022, Sec. 3.3) with MultiShiftSeg's additions.

After Hungarian matching: classification cross-entropy over all queries (unmatched ones target
"no object", weighted ``eos_coef``), and BCE + dice mask losses of matched queries on
``num_points`` sampled points: importance-sampled uncertain points on original images, low-BCE
points on generated images (the Mask2Former form of the paper's noise-aware pixel selection).
The OOD loss is the relative contrastive loss on the mask-based anomaly score. Optionally the
same matched losses on every auxiliary decoder output (deep supervision).

``terms(...)`` returns every unweighted term by name plus ``loss``, their weighted sum.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from lib.labels import NUM_CLASSES
from lib.losses import relative_contrastive_terms
from lib.models.mask2former.matcher import HungarianMatcher
from lib.models.mask2former.model import MASK_STRIDE, semantic_and_anomaly
from lib.models.mask2former.point_sampling import low_loss_point_coords, point_sample, uncertain_point_coords


def semantic_targets(
    labels: torch.Tensor, padded_size: tuple[int, int], *, num_classes: int = NUM_CLASSES
) -> list[dict[str, torch.Tensor]]:
    """Per image, one binary mask per known class present: ``{"labels": [T], "masks": float [T, Hp, Wp]}``.

    ``labels`` are trainId maps ``[B, H, W]``; ignore and anomaly pixels belong to no mask, and the
    padding to ``padded_size`` (bottom/right) is background, as in the published training.
    """
    height, width = labels.shape[-2:]
    pad = (0, padded_size[1] - width, 0, padded_size[0] - height)
    targets = []
    for label in labels:
        classes = torch.unique(label[label < num_classes])
        masks = (label[None] == classes[:, None, None]).float()
        targets.append({"labels": classes.long(), "masks": F.pad(masks, pad)})
    return targets


def sigmoid_bce_loss(logits: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """Mean BCE over points, summed over masks, divided by ``num_masks``. ``[N, P]`` inputs."""
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(1).sum() / num_masks


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """Dice loss ``1 - (2|p∩t| + 1) / (|p| + |t| + 1)`` summed over masks / ``num_masks``. ``[N, P]``."""
    probs = logits.sigmoid()
    numerator = 2 * (probs * targets).sum(-1)
    denominator = probs.sum(-1) + targets.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_masks


class SetCriterion(nn.Module):
    """Mask2Former set criterion + RCL for Mask2Anomaly.

    ``weights``: per base term (``loss_ce``, ``loss_mask``, ``loss_dice``, ``loss_ood``); the
    published values are 5 / 10 / 10 / 1. ``ood_margins=None`` leaves the RCL out.
    ``low_loss_keep_ratio``: on generated images, the share of mask points taken from the lowest-BCE
    candidates (the rest uniform); the published 0.95 (``loss.selection_ratio``).
    """

    def __init__(
        self,
        *,
        num_classes: int = NUM_CLASSES,
        matcher: HungarianMatcher,
        class_weight: float = 5.0,
        mask_weight: float = 10.0,
        dice_weight: float = 10.0,
        ood_weight: float = 1.0,
        eos_coef: float = 0.1,
        num_points: int = 12544,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
        deep_supervision: bool = False,
        low_loss_keep_ratio: float = 0.95,
        ood_margins: tuple[float, float, float] | None = (0.7, 0.5, 0.2),
    ) -> None:
        super().__init__()
        if not 0.0 < low_loss_keep_ratio <= 1.0:
            raise ValueError(f"low_loss_keep_ratio must be in (0, 1], got {low_loss_keep_ratio}")
        self.num_classes = num_classes
        self.matcher = matcher
        self.base_weights = {
            "loss_ce": class_weight,
            "loss_mask": mask_weight,
            "loss_dice": dice_weight,
            "loss_ood": ood_weight,
        }
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.deep_supervision = deep_supervision
        self.low_loss_keep_ratio = low_loss_keep_ratio
        self.ood_margins = ood_margins
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        self.register_buffer("empty_weight", empty_weight, persistent=False)

    def weight_of(self, term: str) -> float:
        """Weight of a named term: ``loss_ce_3`` (aux layer 3) as ``loss_ce``, ``rcl_*`` as ``loss_ood``."""
        if term.startswith("rcl_"):
            return self.base_weights["loss_ood"]
        base = term if term in self.base_weights else term.rsplit("_", 1)[0]
        return self.base_weights[base]

    def _num_masks(self, targets: list[dict[str, torch.Tensor]], device: torch.device) -> float:
        count = torch.tensor(float(sum(len(t["labels"]) for t in targets)), device=device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(count)
            count = count / dist.get_world_size()
        return max(count.item(), 1.0)

    def _matched_terms(
        self,
        pred_logits: torch.Tensor,
        pred_masks: torch.Tensor,
        targets: list[dict[str, torch.Tensor]],
        generated: torch.Tensor,
        num_masks: float,
        generator: torch.Generator | None,
    ) -> dict[str, torch.Tensor]:
        indices = self.matcher(pred_logits, pred_masks, targets, generator)
        batch_idx = torch.cat([torch.full_like(q, b) for b, (q, _) in enumerate(indices)]).to(
            pred_logits.device
        )
        query_idx = torch.cat([q for q, _ in indices]).to(pred_logits.device)
        target_classes = torch.full(
            pred_logits.shape[:2], self.num_classes, dtype=torch.int64, device=pred_logits.device
        )
        target_classes[batch_idx, query_idx] = torch.cat(
            [t["labels"][j.to(t["labels"].device)] for t, (_, j) in zip(targets, indices)]
        ).to(pred_logits.device)
        terms = {
            "loss_ce": F.cross_entropy(pred_logits.float().transpose(1, 2), target_classes, self.empty_weight)
        }

        src = pred_masks[batch_idx, query_idx].float()  # [N, h, w]
        if src.shape[0] == 0:
            zero = pred_masks.sum() * 0.0
            return terms | {"loss_mask": zero, "loss_dice": zero}
        tgt = torch.cat([t["masks"][j.to(t["masks"].device)] for t, (_, j) in zip(targets, indices)]).to(src)
        is_generated = generated.to(src.device)[batch_idx]
        with torch.no_grad():
            coords = src.new_empty(src.shape[0], self.num_points, 2)
            original = ~is_generated
            if original.any():
                coords[original] = uncertain_point_coords(
                    src[original],
                    num_points=self.num_points,
                    oversample_ratio=self.oversample_ratio,
                    importance_sample_ratio=self.importance_sample_ratio,
                    generator=generator,
                )
            if is_generated.any():
                coords[is_generated] = low_loss_point_coords(
                    src[is_generated],
                    tgt[is_generated],
                    num_points=self.num_points,
                    keep_ratio=self.low_loss_keep_ratio,
                    generator=generator,
                )
            point_targets = point_sample(tgt, coords)
        point_logits = point_sample(src, coords)
        terms["loss_mask"] = sigmoid_bce_loss(point_logits, point_targets, num_masks)
        terms["loss_dice"] = dice_loss(point_logits, point_targets, num_masks)
        return terms

    def terms(
        self,
        outputs: dict[str, object],
        labels: torch.Tensor,
        *,
        generated: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Named unweighted terms and ``loss``, their weighted sum.

        Args:
            outputs: the model's training-mode outputs (masks at 1/4 of the padded input).
            labels: trainId maps ``[B, H, W]`` of the unpadded input (anomaly/ignore values allowed).
                With the RCL on, the batch is B/2 originals followed by their B/2 generated twins.
            generated: bool ``[B]``, images whose mask points use low-loss selection; default none.
            generator: CPU generator for the point and pair sampling (reproducible tests).
        """
        masks = outputs["pred_masks"]
        if labels.dim() != 3 or labels.shape[0] != masks.shape[0]:
            raise ValueError(f"labels must be [B, H, W] with B={masks.shape[0]}, got {list(labels.shape)}")
        padded = (masks.shape[-2] * MASK_STRIDE, masks.shape[-1] * MASK_STRIDE)
        targets = semantic_targets(labels, padded, num_classes=self.num_classes)
        if generated is None:
            generated = torch.zeros(labels.shape[0], dtype=torch.bool)
        num_masks = self._num_masks(targets, masks.device)
        terms = self._matched_terms(outputs["pred_logits"], masks, targets, generated, num_masks, generator)
        if self.deep_supervision:
            for i, aux in enumerate(outputs["aux_outputs"]):
                aux_terms = self._matched_terms(
                    aux["pred_logits"], aux["pred_masks"], targets, generated, num_masks, generator
                )
                terms |= {f"{name}_{i}": value for name, value in aux_terms.items()}
        if self.ood_margins is not None:
            anomaly, _ = semantic_and_anomaly(outputs, tuple(labels.shape[-2:]))
            terms |= relative_contrastive_terms(
                anomaly, labels, self.ood_margins, generator, num_classes=self.num_classes
            )
        terms["loss"] = sum(self.weight_of(name) * value for name, value in terms.items())
        return terms

    def forward(
        self,
        outputs: dict[str, object],
        labels: torch.Tensor,
        *,
        generated: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The total loss (see ``terms``)."""
        return self.terms(outputs, labels, generated=generated, generator=generator)["loss"]
