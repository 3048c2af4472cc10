"""What a readable image file is: present and readable, complete, and of a size worth decoding.

Decoders are lenient: OpenCV fills the missing part of a truncated JPEG with grey, and a header may
claim billions of pixels that the decoder then tries to allocate. So every image and label map is
first read as bytes and checked here, naming the file:

- a missing, unreadable (permission denied) or folder path is reported as such, not as a decode
  failure;
- a complete file ends as its format says: a JPEG's end-of-image marker after its last scan, a
  PNG's ``IEND`` chunk (found by walking the chunks), a WebP's RIFF length;
- the size in the header (read by Pillow without decoding) is at most :func:`max_image_pixels`.

The pixel limit is ``data.max_image_pixels`` in the experiment config (the entry points apply it
with :func:`set_max_image_pixels`), or the environment variable ``MULTISHIFTSEG_MAX_IMAGE_PIXELS``
for the tools without a config; the default, 2**27 (134 MP, e.g. 16384 x 8192), is far above any
benchmark image. Corruption inside the compressed data of a JPEG or WebP cannot be seen without a
checksum (those formats have none); a PNG's is checked by its decoder.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from lib.errors import UserError

MAX_PIXELS_ENV = "MULTISHIFTSEG_MAX_IMAGE_PIXELS"
DEFAULT_MAX_IMAGE_PIXELS = 2**27

# Pillow's own decompression-bomb check is replaced by max_image_pixels(), checked before every
# decode; Pillow's would raise (above twice its limit) without naming the file.
Image.MAX_IMAGE_PIXELS = None

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
"""The eight bytes every PNG file starts with."""
_JPEG_START, _JPEG_SCAN, _JPEG_END = b"\xff\xd8", b"\xff\xda", b"\xff\xd9"


def _parse_limit(value: object, source: str) -> int:
    try:
        limit = int(str(value))
    except ValueError:
        raise UserError(f"{source}: expected a positive whole number of pixels, got {value!r}") from None
    if limit < 1:
        raise UserError(f"{source}: expected a positive whole number of pixels, got {limit}")
    return limit


def max_image_pixels() -> int:
    """The largest ``width * height`` an image header may claim before it is decoded."""
    raw = os.environ.get(MAX_PIXELS_ENV)
    return DEFAULT_MAX_IMAGE_PIXELS if raw is None else _parse_limit(raw, f"environment {MAX_PIXELS_ENV}")


def set_max_image_pixels(limit: int) -> None:
    """Set the pixel limit for this process and the worker processes it starts (via the environment)."""
    os.environ[MAX_PIXELS_ENV] = str(_parse_limit(limit, "data.max_image_pixels"))


def read_file_bytes(path: str | Path, kind: str = "image") -> bytes:
    """The bytes of ``path``; a missing, unreadable or folder path is a :class:`UserError` saying which."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise UserError(f"{path}: {kind} file not found") from None
    except PermissionError:
        raise UserError(f"{path}: permission denied; cannot read this {kind} file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder; expected the {kind} file itself") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read this {kind} file ({err.strerror or err})") from None


def _png_end_missing(data: bytes) -> str | None:
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        chunk = data[pos + 4 : pos + 8]
        pos += 12 + length
        if pos > len(data):
            return f"its {chunk.decode('latin-1')!r} chunk is cut off"
        if chunk == b"IEND":
            return None
    return "it has no IEND chunk"


def _jpeg_end_missing(data: bytes) -> str | None:
    last_scan = data.rfind(_JPEG_SCAN)
    if last_scan < 0:
        return "it has no image data (no start-of-scan marker)"
    if data.find(_JPEG_END, last_scan) < 0:
        return "it has no end-of-image marker after its last scan"
    return None


def _webp_end_missing(data: bytes) -> str | None:
    expected = int.from_bytes(data[4:8], "little") + 8
    return f"its header announces {expected} bytes" if len(data) < expected else None


def truncation(data: bytes) -> str | None:
    """Why ``data`` (a PNG, JPEG or WebP file) is incomplete, or ``None`` if it ends where its format says."""
    if data.startswith(PNG_SIGNATURE):
        return _png_end_missing(data)
    if data.startswith(_JPEG_START):
        return _jpeg_end_missing(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp_end_missing(data)
    return None


def check_pixel_limit(data: bytes, path: str | Path, kind: str = "image") -> tuple[int, int]:
    """``(width, height)`` from the header of ``data``; a size above :func:`max_image_pixels` is an error."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
    except UnidentifiedImageError:
        raise UserError(f"{path}: not a recognised {kind} file (expected PNG, JPEG or WebP)") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise UserError(f"{path}: corrupt {kind} header ({err})") from None
    limit = max_image_pixels()
    if width * height > limit:
        raise UserError(
            f"{path}: header claims {width} x {height} = {width * height} pixels, more than the limit of "
            f"{limit}; raise data.max_image_pixels (or {MAX_PIXELS_ENV}) if this image is genuine"
        )
    return width, height


def checked_image_bytes(path: str | Path, kind: str = "image") -> bytes:
    """The bytes of an image file that is readable, complete and within the pixel limit."""
    data = read_file_bytes(path, kind)
    if not data:
        raise UserError(f"{path}: empty {kind} file")
    reason = truncation(data)
    if reason is not None:
        raise UserError(f"{path}: truncated {kind} file ({len(data)} bytes; {reason})")
    check_pixel_limit(data, path, kind)
    return data
