"""Step 1 of CG-Aug: repaint a Cityscapes label map with the ADE20K palette a segmentation ControlNet
was trained on (the correspondence table of the published pipeline; unmatched classes become black).

Two inputs are supported:

- ``gtFine_color.png`` colour maps (the published input). Several Cityscapes classes share a colour
  (unlabeled, ego vehicle, rectification border, out of roi and static are all black), so a colour map
  is ambiguous. The published code repaints class by class, in the official label order, in place;
  :func:`condition_from_color` reproduces that result exactly, including its consequence that every
  black pixel ends up as ADE20K *road* (the "ego vehicle -> road" rule runs after "unlabeled -> black").
- trainId maps (``IGNORE`` -> black). Void classes are lost in trainIds, so this is not the published
  input; ToyShift and datasets without colour maps use it.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from generation.ade20k import ade150
from lib.labels import IGNORE, LABELS, NUM_CLASSES, check_train_label, pack_rgb, unpack_rgb

CITYSCAPES_TO_ADE: dict[str, str | None] = {
    "unlabeled": None,
    "ego vehicle": "road",
    "rectification border": None,
    "out of roi": None,
    "static": None,
    "dynamic": None,
    "ground": "road",
    "road": "road",
    "sidewalk": "sidewalk",
    "parking": None,
    "rail track": "railing",
    "building": "building",
    "wall": "wall",
    "fence": "fence",
    "guard rail": "fence",
    "bridge": "bridge",
    "tunnel": None,
    "pole": "pole",
    "polegroup": "pole",
    "traffic light": "traffic light",
    "traffic sign": "signboard",
    "vegetation": "tree",
    "terrain": "grass",
    "sky": "sky",
    "person": "person",
    "rider": "person",
    "car": "car",
    "truck": "truck",
    "bus": "bus",
    "caravan": "car",
    "trailer": "truck",
    "train": "bus",
    "motorcycle": "bicycle",
    "bicycle": "bicycle",
    "license plate": None,
}
"""Cityscapes class name -> ADE20K category name (``None``: painted black)."""

BLACK = np.zeros(3, dtype=np.uint8)


def ade_color_of(cityscapes_name: str) -> np.ndarray:
    """``[3]`` uint8 ADE20K colour that replaces the Cityscapes class ``cityscapes_name``."""
    target = CITYSCAPES_TO_ADE[cityscapes_name]
    return BLACK if target is None else ade150().color(ade150().index(target))


def road_color() -> np.ndarray:
    """``[3]`` uint8 ADE20K colour of road, where anomalies are pasted."""
    return ade150().color(ade150().index("road"))


@lru_cache(maxsize=1)
def train_id_lut() -> np.ndarray:
    """``[256, 3]`` uint8: trainId -> ADE20K colour; every other value (``IGNORE``) -> black."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    for lb in LABELS:
        if 0 <= lb.trainId < NUM_CLASSES:
            lut[lb.trainId] = ade_color_of(lb.name)
    lut[IGNORE] = BLACK
    return lut


def condition_from_train_ids(train_ids: np.ndarray, source: str = "label") -> np.ndarray:
    """Paint a trainId map ``[H, W]`` (uint8) as an ADE20K-palette condition map ``[H, W, 3]`` uint8."""
    train_ids = np.asarray(train_ids)
    if train_ids.ndim != 2:
        raise ValueError(f"{source}: expected a [H, W] trainId map, got shape {train_ids.shape}")
    check_train_label(train_ids, source, allow_anomaly=False)
    return train_id_lut()[train_ids.astype(np.uint8)]


def _published_repaint(colors: np.ndarray) -> np.ndarray:
    """Apply the published class-by-class in-place repaint to a list of colours ``[N, 3]``."""
    out = colors.copy()
    for lb in LABELS:
        hit = np.all(out == np.asarray(lb.color, dtype=np.uint8), axis=1)
        out[hit] = ade_color_of(lb.name)
    return out


def condition_from_color(color_map: np.ndarray, source: str = "color map") -> np.ndarray:
    """Convert a Cityscapes ``gtFine_color`` map ``[H, W, 3|4]`` uint8 to an ADE20K condition map.

    Colours that are no Cityscapes class colour are kept, as in the published code. Work is done
    on the distinct colours only, so the cost is one ``np.unique`` over the pixels.
    """
    color_map = np.asarray(color_map)
    if color_map.ndim != 3 or color_map.shape[2] not in (3, 4) or color_map.dtype != np.uint8:
        raise ValueError(
            f"{source}: expected a [H, W, 3] or [H, W, 4] uint8 colour map, got {color_map.dtype} "
            f"{color_map.shape}"
        )
    rgb = color_map[..., :3]
    uniq, inverse = np.unique(pack_rgb(rgb).ravel(), return_inverse=True)
    colors = unpack_rgb(uniq)
    return _published_repaint(colors)[inverse].reshape(rgb.shape)
