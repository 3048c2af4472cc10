"""Label conventions: Cityscapes classes and the special values every other module uses.

The 35 Cityscapes labels come from the official ``cityscapesscripts`` package, not retyped.
This is the only module that knows class ids, the number of classes, 254 and 255:

- semantic maps hold Cityscapes trainIds ``0..18``; ``IGNORE`` (255) is not scored;
- training maps may carry ``ANOMALY`` (254) for pasted or generated unknown objects;
  values ``100..253`` are reserved and invalid;
- benchmark anomaly maps hold ``OOD_IN`` (0), ``OOD_OUT`` (1) and ``OOD_VOID`` (255).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from cityscapesscripts.helpers.labels import Label
from cityscapesscripts.helpers.labels import labels as _CITYSCAPES_LABELS

from lib.errors import UserError

NUM_CLASSES = 19
IGNORE = 255
ANOMALY = 254

OOD_IN = 0
OOD_OUT = 1
OOD_VOID = 255

LABELS: tuple[Label, ...] = tuple(_CITYSCAPES_LABELS)
"""All 35 official Cityscapes labels (plus license plate with id -1), in official order."""

TRAIN_LABELS: tuple[Label, ...] = tuple(
    sorted((lb for lb in LABELS if 0 <= lb.trainId < NUM_CLASSES), key=lambda lb: lb.trainId)
)
CLASS_NAMES: tuple[str, ...] = tuple(lb.name for lb in TRAIN_LABELS)
"""The 19 training class names, indexed by trainId."""

PALETTE: np.ndarray = np.array([lb.color for lb in TRAIN_LABELS], dtype=np.uint8)
"""``[19, 3]`` uint8 RGB colour of each trainId."""


def _id_to_train_id_lut() -> np.ndarray:
    lut = np.full(256, IGNORE, dtype=np.uint8)
    for lb in LABELS:
        if 0 <= lb.id < 256:
            lut[lb.id] = lb.trainId if 0 <= lb.trainId < NUM_CLASSES else IGNORE
    return lut


ID_TO_TRAIN_ID: np.ndarray = _id_to_train_id_lut()
"""``[256]`` uint8 lookup table: Cityscapes label id -> trainId (255 for void classes)."""

NAME_TO_LABEL: dict[str, Label] = {lb.name: lb for lb in LABELS}


def colorize(train_ids: np.ndarray, anomaly_color: Sequence[int] = (255, 0, 255)) -> np.ndarray:
    """Paint a trainId map ``[H, W]`` as ``[H, W, 3]`` uint8 RGB; ignore is black, anomaly magenta."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[:NUM_CLASSES] = PALETTE
    lut[ANOMALY] = anomaly_color
    return lut[np.asarray(train_ids, dtype=np.uint8)]


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """``[..., 3]`` colours (0..255) -> ``[...]`` int32 keys ``R << 16 | G << 8 | B``: one integer per
    colour, so colour maps can be compared, looked up and ``np.unique``-d as plain integers."""
    rgb = np.asarray(rgb).astype(np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def unpack_rgb(keys: np.ndarray) -> np.ndarray:
    """Invert :func:`pack_rgb`: ``[...]`` keys -> ``[..., 3]`` uint8 colours."""
    keys = np.asarray(keys)
    return np.stack([(keys >> 16) & 255, (keys >> 8) & 255, keys & 255], axis=-1).astype(np.uint8)


def check_train_label(label: np.ndarray, source: str, allow_anomaly: bool = True) -> np.ndarray:
    """Raise :class:`UserError` naming ``source`` and the value if ``label`` holds an invalid value.

    Valid: trainIds ``0..18``, ``IGNORE`` and (if ``allow_anomaly``) ``ANOMALY``.
    Returns the label unchanged so the call can be inlined.
    """
    values = np.unique(np.asarray(label))
    valid = (values < NUM_CLASSES) | (values == IGNORE) | ((values == ANOMALY) & allow_anomaly)
    if not valid.all():
        bad = values[~valid]
        allowed = f"0..{NUM_CLASSES - 1}, {IGNORE}" + (f", {ANOMALY}" if allow_anomaly else "")
        raise UserError(f"{source}: invalid label value(s) {bad.tolist()[:10]}; expected {allowed}")
    return label


def check_ood_label(label: np.ndarray, source: str) -> np.ndarray:
    """Raise :class:`UserError` naming ``source`` if an anomaly map holds values other than 0/1/255."""
    values = np.unique(np.asarray(label))
    bad = values[~np.isin(values, (OOD_IN, OOD_OUT, OOD_VOID))]
    if bad.size:
        raise UserError(
            f"{source}: invalid anomaly label value(s) {bad.tolist()[:10]}; expected "
            f"{OOD_IN} (in-distribution), {OOD_OUT} (anomaly) or {OOD_VOID} (void)"
        )
    return label
