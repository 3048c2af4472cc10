"""Mask2Anomaly: Mask2Former with a global-mask-attention decoder and an OOD class head
(Rai et al. 2023; used by MultiShiftSeg, Gao et al. 2024, Sec. 4 "Mask2Former").

The model receives the already-normalised RGB image (ImageNet mean/std applied by the data
pipeline; the published model does not normalise). It zero-pads the bottom/right to a multiple
of 32, runs backbone -> pixel decoder -> transformer decoder, and in eval mode returns the common
forward contract ``(anomaly_score [B, H, W], logits [B, 19, H, W])`` cropped to the input size.
"""

from __future__ import annotations

import logging
import re

import torch
import torch.nn as nn
import torch.nn.functional as F

from lib.models.mask2former.backbone import ResNet
from lib.models.mask2former.pixel_decoder import MSDeformAttnPixelDecoder
from lib.models.mask2former.transformer_decoder import MaskedTransformerDecoderGMA
from lib.scores_m2f import confidence_from_class_scores, fold_query_masks, known_class_probs

logger = logging.getLogger(__name__)

SIZE_DIVISIBILITY = 32
MASK_STRIDE = 4
_PREDICTOR = "sem_seg_head.predictor."

UNUSED_CHECKPOINT_KEYS = re.compile(
    r"^(sem_seg_head\.predictor\.transformer_cross_attention_layers\.\d+\.fusion_layer\.(weight|bias)"
    r"|criterion\.empty_weight"
    r"|backbone\..+\.norm\.num_batches_tracked)$"
)
"""Entries of published checkpoints that the forward never reads: the GMA decoder's unused
``fusion_layer`` convs, the criterion's no-object weight, frozen backbone norms' counters."""


def semantic_and_anomaly(
    outputs: dict[str, torch.Tensor], image_size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Semantic scores and the mask-based anomaly score at the input resolution.

    Mask logits ``[B, Q, h, w]`` (1/4 of the padded input) are upsampled bilinearly to the padded
    size and passed through a sigmoid; the scores below are cropped to ``image_size``. Then

    - ``logits[b, c] = Σ_q softmax(pred_logits)[b, q, c] · sigmoid(mask)[b, q]`` for the 19 known
      classes (softmax over 19 + no-object, then the no-object column dropped). These are the
      published ``sem_seg`` scores: neither logits nor probabilities, values in ``[0, Q]``;
    - ``anomaly = 1 − max_c Σ_q softmax(pred_logits_ood)[b, q, c] · sigmoid(mask_ood)[b, q]``
      (can be negative).

    Returns ``(anomaly [B, H, W], logits [B, 19, H, W])`` in float32, computed by
    :mod:`lib.scores_m2f` (queries in chunks, so the full-resolution masks never exist for all
    queries at once).
    """
    masks = outputs["pred_masks"]
    if outputs["pred_masks_ood"] is not masks:
        raise ValueError("pred_masks_ood must be pred_masks: the OOD head shares the mask embedding")
    h, w = masks.shape[-2:]
    height, width = image_size

    padded_h, padded_w = h * MASK_STRIDE, w * MASK_STRIDE

    def upsample(chunk: torch.Tensor) -> torch.Tensor:
        return F.interpolate(chunk, size=(padded_h, padded_w), mode="bilinear", align_corners=False)

    probs = torch.cat(
        [known_class_probs(outputs["pred_logits"]), known_class_probs(outputs["pred_logits_ood"])], -1
    )  # [B, Q, 2K]: both heads fold the shared masks in one pass
    scores = fold_query_masks(probs, masks, resize=upsample)
    # Cropped once at the end by a negative pad (a copy, not a view): the same numbers, and
    # torch.export then needs no guess about whether the input size is a multiple of 32.
    scores = F.pad(scores, (0, width - padded_w, 0, height - padded_h))
    n_classes = probs.shape[-1] // 2
    return confidence_from_class_scores(scores[:, n_classes:]), scores[:, :n_classes]


class Mask2Anomaly(nn.Module):
    """Composite model; parameter names follow detectron2's ``MaskFormer`` (``backbone.*``,
    ``sem_seg_head.pixel_decoder.*``, ``sem_seg_head.predictor.*``).

    ``forward(images [B, 3, H, W])``: in eval mode ``(anomaly_score [B, H, W], logits [B, 19, H, W])``
    (see ``semantic_and_anomaly``); in training mode the decoder's raw outputs dict
    (``pred_logits``, ``pred_masks``, ``pred_logits_ood``, ``pred_masks_ood``, ``aux_outputs``) at
    1/4 of the padded size, which the set criterion and ``semantic_and_anomaly`` consume.
    """

    def __init__(
        self,
        *,
        backbone: ResNet,
        pixel_decoder: MSDeformAttnPixelDecoder,
        predictor: MaskedTransformerDecoderGMA,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.sem_seg_head = nn.ModuleDict({"pixel_decoder": pixel_decoder, "predictor": predictor})

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | dict[str, object]:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images [B, 3, H, W], got {tuple(images.shape)}")
        height, width = images.shape[-2:]
        # Padded sizes written as multiples of 32, so torch.export's shape solver sees them as such.
        pad_h = SIZE_DIVISIBILITY * ((height + SIZE_DIVISIBILITY - 1) // SIZE_DIVISIBILITY) - height
        pad_w = SIZE_DIVISIBILITY * ((width + SIZE_DIVISIBILITY - 1) // SIZE_DIVISIBILITY) - width
        padded = F.pad(images, (0, pad_w, 0, pad_h))  # unconditional: no branch on the size when exported
        mask_features, multi_scale = self.sem_seg_head.pixel_decoder(self.backbone(padded))
        outputs = self.sem_seg_head.predictor(multi_scale, mask_features)
        if self.training:
            return outputs
        return semantic_and_anomaly(outputs, (height, width))

    @torch.no_grad()
    def uncertainty_head_init(self) -> None:
        """Set the OOD head ``class_embed2`` to a copy of the classifier ``class_embed`` (weight and
        bias), as the published train script does after loading the starting weights, so stage 1
        starts from the closed-world model's own mask-based score."""
        predictor = self.sem_seg_head.predictor
        predictor.class_embed2.weight.copy_(predictor.class_embed.weight)
        predictor.class_embed2.bias.copy_(predictor.class_embed.bias)

    def adapt_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Map a published Mask2Anomaly / MultiShiftSeg state dict onto this model's keys.

        - drops exactly the entries named by ``UNUSED_CHECKPOINT_KEYS``;
        - renames ``static_query`` to ``query_feat`` (older GMA checkpoints).
        Everything else passes through for the strict load to judge.
        """
        adapted = {}
        for key, value in state_dict.items():
            if UNUSED_CHECKPOINT_KEYS.match(key):
                continue
            adapted[key.replace("predictor.static_query.", "predictor.query_feat.")] = value
        return adapted

    ood_head_keys = (f"{_PREDICTOR}class_embed2.weight", f"{_PREDICTOR}class_embed2.bias")
    """State-dict keys of the OOD head (what a closed-world checkpoint lacks)."""

    def closed_world_ood_head(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Starting weights from a closed-world checkpoint (Mask2Anomaly's ``bt-f-xl.pth``), which has
        no ``class_embed2``: the OOD head as a copy of ``class_embed``, logged (see
        :func:`lib.models.checkpoints.load_weights`)."""
        cls = (f"{_PREDICTOR}class_embed.weight", f"{_PREDICTOR}class_embed.bias")
        if not all(k in state_dict for k in cls):
            return state_dict
        adapted = dict(state_dict)
        for src, dst in zip(cls, self.ood_head_keys):
            adapted[dst] = state_dict[src].clone()
        logger.info("checkpoint has no OOD head: class_embed2 initialised from class_embed")
        return adapted
