"""Outlier pasting: the joint transform that pastes one COCO object into the first image of a frame set.

Both training sets that expose the model to outliers use it after their joint augmentation and
before normalisation: :class:`~lib.data.multishift.MultiShiftPairs` (the original of each pair) and
the unpaired set of the outlier-exposure baseline (:func:`lib.engine.builders.build_unpaired_train_set`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from lib.data.coco_ood import OutlierObjects, paste_outlier


class PasteOutliers:
    """With probability ``prob``, paste one random object of ``outliers`` into ``images[0]``/``labels[0]``.

    ``images [N,3,H,W]`` in ``0..1``, ``labels [N,H,W]`` int64, modified in place and returned; the
    object's pixels become ``ANOMALY``, its scale is drawn from ``scales``. The draws (whether to
    paste, which object, which scale, where) come from ``rng`` (default: the ``random`` module).
    """

    def __init__(self, outliers: OutlierObjects, *, scales: Sequence[float], prob: float = 1.0) -> None:
        if not scales:
            raise ValueError("PasteOutliers needs at least one scale")
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"PasteOutliers: prob {prob} is not in [0, 1]")
        self.outliers, self.scales, self.prob = outliers, tuple(scales), float(prob)

    def __call__(
        self, images: torch.Tensor, labels: torch.Tensor, rng: random.Random | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        rng = random if rng is None else rng
        if self.prob >= 1.0 or rng.random() < self.prob:
            rgb, mask = self.outliers[rng.randrange(len(self.outliers))]
            paste_outlier(images[0], labels[0], rgb, mask, rng.choice(self.scales), rng=rng)
        return images, labels
