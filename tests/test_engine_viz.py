"""Heat-map overlays, colour maps, de-normalisation and PNG output."""

import numpy as np
import pytest
import torch
from PIL import Image

from lib.data.transforms import IMAGENET_MEAN, IMAGENET_STD, Normalize
from lib.labels import PALETTE
from lib.viz import colorize_segmentation, colormap, denormalize, heatmap_overlay, save_png


def test_denormalize_inverts_normalize():
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    image = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0
    normed, _ = Normalize(IMAGENET_MEAN, IMAGENET_STD)(image, torch.zeros(1, 5, 7))
    assert np.array_equal(denormalize(normed[0], IMAGENET_MEAN, IMAGENET_STD), rgb)
    with pytest.raises(ValueError, match=r"\[3,H,W\]"):
        denormalize(normed, IMAGENET_MEAN, IMAGENET_STD)


def test_colormap_ends_and_clipping():
    out = colormap(np.array([[-1.0, 0.0, 1.0, 2.0]]), vmin=0.0, vmax=1.0, cmap="gray")
    assert out.dtype == np.uint8 and out.shape == (1, 4, 3)
    assert out[0, :, 0].tolist() == [0, 0, 255, 255]


def test_overlay_blends_and_checks_shapes():
    image = np.full((4, 6, 3), 100, np.uint8)
    score = np.zeros((4, 6))
    score[:, 3:] = 1.0
    out = heatmap_overlay(image, score, alpha=1.0, vmin=0.0, vmax=1.0, cmap="gray")
    assert out[:, :3].max() == 0 and out[:, 3:].min() == 255
    half = heatmap_overlay(image, score, alpha=0.5, vmin=0.0, vmax=1.0, cmap="gray")
    assert half[0, 0].tolist() == [50, 50, 50] and half[0, 5].tolist() == [178, 178, 178]
    with pytest.raises(ValueError, match="share height and width"):
        heatmap_overlay(image, score[:3])


def test_segmentation_colours_and_png_round_trip(tmp_path):
    pred = torch.tensor([[0, 1], [18, 2]])
    rgb = colorize_segmentation(pred)
    assert rgb[1, 0].tolist() == PALETTE[18].tolist()
    path = save_png(tmp_path / "sub" / "seg.png", rgb)
    assert np.array_equal(np.asarray(Image.open(path)), rgb)
