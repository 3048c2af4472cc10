"""Run a model on your own images: ``python -m lib.predict --cfg exp/DeepLab.yaml --weight_path W
--input PATH... --out DIR [section.key=value ...]``.

Inputs are image files or folders (searched recursively for ``.png .jpg .jpeg .webp``). Each
image runs at full resolution, normalised with ``data.mean``/``data.std``, through the model of
the model ``W`` was trained as (:func:`lib.models.checkpoints.load_model`: a checkpoint of this
project rebuilds its own model, and a ``model.name`` that differs is an error; other layouts build
``model.name``/``model.kwargs``), scored by ``eval.score`` and
``eval.postprocess``. For an image ``<stem>`` (a folder's images keep their path inside the
folder) it writes ``<stem>_pred.png`` (colourised trainId prediction), ``<stem>_heatmap.png``
(a heat-map panel of :mod:`lib.panels`: image, raw anomaly map with its colour bar, prediction with
its class legend; no ground truth and no 95%-TPR threshold, as the images have no labels, but the
binary map ``score >= T`` with ``--threshold T``) and ``<stem>_anomaly.npy`` (float32 ``[H, W]``
raw scores, higher = more anomalous). Runs on CPU when no GPU is present.
Scores that are not all finite (weights with NaN, say) are an error naming the image and the
weights, raised before any of that image's files is written.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from lib.atomic import atomic_open, make_folder
from lib.cli_errors import run_cli
from lib.config import Config, load_config
from lib.data.image_file import set_max_image_pixels
from lib.data.io import IMAGE_EXTENSIONS, read_rgb
from lib.errors import UserError
from lib.image_tensor import rgb_to_normalized
from lib.models.checkpoints import load_model
from lib.panels import MethodMap, panel_figure, save_figure
from lib.postprocess import POSTPROCESS, apply_postprocess
from lib.scores import ScoreFn, get_score, reads_ood_head
from lib.viz import colorize_segmentation, save_png

_OVERRIDE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+=")
"""A ``section.key=value`` config override word."""


def find_images(inputs: Sequence[str | Path]) -> list[tuple[Path, Path]]:
    """``(image file, output stem)`` for every input file and every image under input folders.

    A file's stem is its name without suffix; a folder's images keep their relative path. Two
    inputs that would write the same outputs are an error naming both.
    """
    found: list[tuple[Path, Path]] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files = sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not files:
                raise FileNotFoundError(f"{item}: no images ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
            found += [(p, p.relative_to(item).with_suffix("")) for p in files]
        elif item.is_file():
            if item.suffix.lower() not in IMAGE_EXTENSIONS:
                raise UserError(f"{item}: not an image file (expected {', '.join(IMAGE_EXTENSIONS)})")
            found.append((item, Path(item.stem)))
        else:
            raise FileNotFoundError(f"{item}: no such file or folder")
    seen: dict[Path, Path] = {}
    for source, stem in found:
        if stem in seen:
            raise UserError(f"{seen[stem]} and {source} would both write outputs named {stem}_*")
        seen[stem] = source
    return found


@torch.no_grad()
def predict_image(
    model: nn.Module,
    rgb: np.ndarray,
    *,
    score_fn: ScoreFn,
    postprocess: str,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
) -> tuple[np.ndarray, np.ndarray]:
    """``(trainId prediction [H, W] uint8, anomaly score [H, W] float32)`` of one ``[H, W, 3]`` uint8
    RGB image."""
    image = rgb_to_normalized(rgb, mean, std).unsqueeze(0).to(device)
    anomaly_score, logits = model(image)
    score = apply_postprocess(postprocess, score_fn(logits, anomaly_score))
    pred = logits.argmax(1)[0].to(torch.uint8).cpu().numpy()
    return pred, score[0].float().cpu().numpy()


def split_overrides(inputs: Sequence[str], overrides: Sequence[str]) -> tuple[list[str], list[str]]:
    """Move ``section.key=value`` words that ``--input PATH...`` swallowed (and that are not existing
    paths) to the overrides: ``(inputs, overrides)``."""
    moved = [t for t in inputs if _OVERRIDE.match(t) and not Path(t).exists()]
    return [t for t in inputs if t not in moved], [*moved, *overrides]


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Segmentation and anomaly maps for your own images.")
    parser.add_argument("--cfg", required=True, help="experiment YAML, e.g. exp/DeepLab.yaml")
    parser.add_argument("--weight_path", required=True, help="checkpoint to load")
    parser.add_argument("--input", nargs="+", required=True, metavar="PATH", help="image files or folders")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        metavar="T",
        help="also draw the binary map score >= T in the heat-map panels (e.g. a benchmark's 95%%-TPR "
        "threshold from a test run)",
    )
    parser.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides")
    return parser


def main(args: argparse.Namespace) -> list[Path]:
    """Predict every input image; returns the written ``_anomaly.npy`` paths."""
    inputs, overrides = split_overrides(args.input, args.overrides)
    cfg = load_config(Config, args.cfg, overrides)
    set_max_image_pixels(cfg.data.max_image_pixels)
    images = find_images(inputs)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    score_fn = get_score(cfg.eval.score)
    POSTPROCESS.get(cfg.eval.postprocess)
    if args.threshold is not None and not np.isfinite(args.threshold):
        raise UserError(f"--threshold must be a finite number, got {args.threshold}")
    out = make_folder(args.out, "--out")
    method = cfg.eval.score + ("" if cfg.eval.postprocess == "none" else f" + {cfg.eval.postprocess}")
    if args.threshold is None:
        note = "none: unlabelled images have no 95%-TPR threshold (pass --threshold T for one)"
    else:
        note = f"score ≥ {args.threshold:g}, the threshold given with --threshold (no labels here)"
    model = load_model(
        args.weight_path,
        name=cfg.model.name,
        kwargs=cfg.model.kwargs,
        fill_ood_head=not reads_ood_head(cfg.eval.score),
    )
    model.to(device).eval()
    written = []
    for source, stem in tqdm(images, desc="predict", unit="img"):
        rgb = read_rgb(source)
        pred, score = predict_image(
            model,
            rgb,
            score_fn=score_fn,
            postprocess=cfg.eval.postprocess,
            mean=cfg.data.mean,
            std=cfg.data.std,
            device=device,
        )
        bad = np.count_nonzero(~np.isfinite(score))
        if bad:
            raise UserError(
                f"{source}: {bad} of {score.size} anomaly scores are not finite (NaN or inf) with the "
                f"weights {args.weight_path}; expected finite scores (are the weights corrupt or diverged?)"
            )
        base = out / stem
        save_png(f"{base}_pred.png", colorize_segmentation(pred))
        panel = panel_figure(
            rgb, [MethodMap(method, score, pred, args.threshold)], title=str(source), threshold_note=note
        )
        save_figure(f"{base}_heatmap.png", panel)
        with atomic_open(f"{base}_anomaly.npy", "wb") as handle:
            np.save(handle, score)
        written.append(Path(f"{base}_anomaly.npy"))
    return written


if __name__ == "__main__":
    run_cli(main, get_args_parser())
