"""Image and label decoding (and PNG encoding), and the file-pairing checks every dataset shares.

Every file is first checked by :mod:`lib.data.image_file` (readable, complete, within the pixel
limit), so a truncated or oversized file is an error naming it, never a silently grey image.
8-bit RGB PNGs (Cityscapes frames and generated images) decode with libspng (``pyspng``), about a
fifth faster than libpng. Other images, and all of them where ``pyspng`` is not installed, decode
with OpenCV (faster than Pillow for PNG, JPEG and WebP at Cityscapes size; see
``benchmarks/bench_data.py``). EXIF orientation is ignored so pixels match the label maps, as
Pillow does. 8-bit grey label maps decode with OpenCV, others with Pillow so that palette PNGs
give their indices.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from lib.data.image_file import PNG_SIGNATURE, checked_image_bytes
from lib.errors import UserError

try:  # a dependency with wheels for the usual platforms; where it is missing, OpenCV decodes all
    import pyspng
except ImportError:
    pyspng = None

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")

_GREY, _RGB = 0, 2
"""PNG colour types: one sample per pixel; three (no palette, no alpha)."""


def _is_png_of(data: bytes, colour_type: int) -> bool:
    """Whether ``data`` is a PNG of 8-bit samples of ``colour_type`` (its header says so)."""
    header = data[:26]
    return (
        len(header) == 26
        and header[:8] == PNG_SIGNATURE
        and header[12:16] == b"IHDR"
        and header[24] == 8
        and header[25] == colour_type
    )


def is_rgb8_png(data: bytes) -> bool:
    """Whether ``data`` is a PNG of 8-bit RGB samples."""
    return _is_png_of(data, _RGB)


def read_rgb(path: str | Path) -> np.ndarray:
    """Decode an image file as ``[H, W, 3]`` uint8 RGB; raise naming the file if it cannot be read."""
    data = checked_image_bytes(path, "image")
    if pyspng is not None and is_rgb8_png(data):
        try:
            return pyspng.load(data)
        except RuntimeError as err:
            raise UserError(f"{path}: cannot decode image ({err})") from None
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if bgr is None:
        raise UserError(f"{path}: cannot decode image (corrupt data or unsupported format)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_label(path: str | Path) -> np.ndarray:
    """Decode a label map as ``[H, W]`` uint8.

    Accepts grey, palette (indices are the labels) and grey-as-RGB PNGs; a colour label map or
    a value above 255 is an error naming the file.
    """
    data = checked_image_bytes(path, "label")
    if _is_png_of(data, _GREY):  # the usual label map: OpenCV decodes it straight into the array
        grey = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if grey is None:
            raise UserError(f"{path}: cannot decode label map (corrupt PNG data)")
        return grey
    try:
        with Image.open(io.BytesIO(data)) as im:
            arr = np.asarray(im)
    except (OSError, SyntaxError, ValueError, zlib.error) as err:
        raise UserError(f"{path}: cannot decode label map ({err})") from None
    if arr.ndim == 3:
        rgb = arr[..., :3]
        if not ((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 0] == rgb[..., 2]).all()):
            raise UserError(f"{path}: label map has differing colour channels; expected one channel of ids")
        arr = rgb[..., 0]
    if arr.dtype != np.uint8:
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise UserError(f"{path}: label values outside 0..255 (max {arr.max()}); expected 8-bit ids")
        arr = arr.astype(np.uint8)
    return np.ascontiguousarray(arr)


def encode_png(array: np.ndarray, source: str) -> bytes:
    """PNG bytes of a ``[H, W]`` uint8 map or an ``[H, W, 3]`` uint8 RGB image (for the atomic writer)."""
    if array.dtype != np.uint8 or array.ndim not in (2, 3):
        raise ValueError(f"{source}: expected uint8 [H, W] or [H, W, 3], got {array.dtype} {array.shape}")
    pixels = cv2.cvtColor(array, cv2.COLOR_RGB2BGR) if array.ndim == 3 else array
    ok, buf = cv2.imencode(".png", pixels)
    if not ok:
        raise OSError(f"{source}: PNG encoding failed")
    return buf.tobytes()


def check_same_size(image: np.ndarray, image_path: Path, label: np.ndarray, label_path: Path) -> None:
    """An image and its label map must have one height and width; else an error naming both files."""
    if image.shape[:2] != label.shape[:2]:
        (ih, iw), (lh, lw) = image.shape[:2], label.shape[:2]
        raise UserError(
            f"image {image_path} is {iw} x {ih} but its label {label_path} is {lw} x {lh}; "
            "expected one width and height"
        )


def expected_tree_error(missing: Path, tree: str) -> FileNotFoundError:
    """A ``FileNotFoundError`` for a missing dataset folder that shows the layout we expect."""
    return FileNotFoundError(f"dataset folder not found: {missing}\nexpected layout:\n{tree.rstrip()}")


def index_by_stem(files: Iterable[Path], suffix: str, kind: str, *, tag: str = "") -> dict[str, Path]:
    """Map each file to its name minus ``suffix`` (or its stem), minus a trailing ``tag`` where
    present (MUAD's ``_leftImg8bit``); two files with one key is an error."""
    out: dict[str, Path] = {}
    for f in files:
        key = (f.name[: -len(suffix)] if suffix else f.stem).removesuffix(tag)
        if key in out:
            raise ValueError(f"two {kind} files share the name {key!r}: {out[key]} and {f}")
        out[key] = f
    return out


def pair_by_stem(
    images: dict[str, Path], labels: dict[str, Path], *, source: str, allow_unlabelled: bool = False
) -> list[tuple[str, Path, Path]]:
    """Match image and label files by key; an orphan on either side is an error naming it.

    ``allow_unlabelled`` drops images without labels (e.g. the SMIYC test part without public
    labels) instead of failing. Returns ``(key, image, label)`` sorted by key.
    """
    orphan_labels = sorted(set(labels) - set(images))
    if orphan_labels:
        raise FileNotFoundError(
            f"{source}: label {labels[orphan_labels[0]]} has no matching image "
            f"({len(orphan_labels)} orphan label(s))"
        )
    orphan_images = sorted(set(images) - set(labels))
    if orphan_images and not allow_unlabelled:
        raise FileNotFoundError(
            f"{source}: image {images[orphan_images[0]]} has no matching label "
            f"({len(orphan_images)} orphan image(s))"
        )
    pairs = [(k, images[k], labels[k]) for k in sorted(set(images) & set(labels))]
    if not pairs:
        raise FileNotFoundError(f"{source}: no image/label pairs found")
    return pairs
