"""How often each 8-bit level occurs in a uint8 map or in one channel of a uint8 image.

OpenCV's histogram reads an interleaved channel in place and counts several times faster than
``np.bincount`` (which first widens every value to a 64-bit index). It returns float32 counts, exact
below 2**24; larger arrays are counted by NumPy, so the counts are always exact.
"""

from __future__ import annotations

import cv2
import numpy as np

_EXACT_FLOAT32 = 1 << 24


def level_counts(pixels: np.ndarray, channel: int = 0) -> np.ndarray:
    """``[256]`` int64 counts of each level in ``pixels`` (uint8 ``[H, W]``, or ``[H, W, C]`` and the
    ``channel`` to count)."""
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3):
        raise ValueError(f"expected uint8 [H, W] or [H, W, C], got {pixels.dtype} {pixels.shape}")
    if pixels.shape[0] * pixels.shape[1] < _EXACT_FLOAT32:
        return cv2.calcHist([pixels], [channel], None, [256], [0, 256]).ravel().astype(np.int64)
    values = pixels if pixels.ndim == 2 else pixels[..., channel]
    return np.bincount(values.ravel(), minlength=256)
