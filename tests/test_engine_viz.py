"""De-normalisation, colourised segmentations and PNG output."""

import numpy as np
import pytest
import torch
from PIL import Image

from lib.data.transforms import IMAGENET_MEAN, IMAGENET_STD, Normalize
from lib.labels import PALETTE
from lib.viz import colorize_segmentation, denormalize, save_png


def test_denormalize_inverts_normalize():
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    image = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0
    normed, _ = Normalize(IMAGENET_MEAN, IMAGENET_STD)(image, torch.zeros(1, 5, 7))
    assert np.array_equal(denormalize(normed[0], IMAGENET_MEAN, IMAGENET_STD), rgb)
    with pytest.raises(ValueError, match=r"\[3,H,W\]"):
        denormalize(normed, IMAGENET_MEAN, IMAGENET_STD)


def test_segmentation_colours_and_png_round_trip(tmp_path):
    pred = torch.tensor([[0, 1], [18, 2]])
    rgb = colorize_segmentation(pred)
    assert rgb[1, 0].tolist() == PALETTE[18].tolist()
    path = save_png(tmp_path / "sub" / "seg.png", rgb)
    assert np.array_equal(np.asarray(Image.open(path)), rgb)
