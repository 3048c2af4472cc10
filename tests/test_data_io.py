"""Strict image and label reads: truncated, corrupt, oversized, unreadable and mismatched files are
errors that name the file, where the decoders alone would return a grey-filled image or a bare
``OSError``; complete files read exactly as before."""

import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from lib.data import CityscapesSeg, build_benchmark, image_file
from lib.data import io as io_module
from lib.data.image_file import MAX_PIXELS_ENV, max_image_pixels, set_max_image_pixels, truncation
from lib.data.io import is_rgb8_png, read_label, read_rgb
from lib.errors import UserError
from lib.models import build_model
from lib.predict import get_args_parser, main
from tests.data_fixtures import write_cityscapes, write_gray, write_rgb


def _photo(h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (7, 7), 2)


def _encoded(tmp_path: Path, name: str, rgb: np.ndarray) -> bytes:
    write_rgb(tmp_path / name, rgb)
    return (tmp_path / name).read_bytes()


@pytest.mark.parametrize("ext", [".jpg", ".png", ".webp"])
def test_complete_images_read_exactly_as_opencv_decodes_them(tmp_path, ext):
    rgb = _photo()
    path = tmp_path / f"full{ext}"
    write_rgb(path, rgb)
    expected = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(read_rgb(path), expected)


@pytest.mark.parametrize("with_libspng", [True, False])
def test_rgb_pngs_read_the_same_with_or_without_libspng(tmp_path, monkeypatch, with_libspng):
    path = tmp_path / "rgb.png"
    write_rgb(path, _photo(31, 45))
    if not with_libspng:
        monkeypatch.setattr(io_module, "pyspng", None)
    expected = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(read_rgb(path), expected)


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("depth", [np.uint8, np.uint16])
def test_every_png_kind_reads_as_opencv_decodes_it(tmp_path, channels, depth):
    """8-bit RGB PNGs take the libspng path; grey, alpha and 16-bit ones OpenCV's: same pixels."""
    scale = 257 if depth == np.uint16 else 1
    pixels = (_photo(37, 53).astype(np.uint32) * scale).astype(depth)
    pixels = pixels[..., 0] if channels == 1 else pixels
    if channels == 4:
        pixels = np.dstack([pixels, pixels[..., :1]])
    path = tmp_path / "kind.png"
    assert cv2.imwrite(str(path), pixels)
    assert is_rgb8_png(path.read_bytes()) == (channels == 3 and depth == np.uint8)
    expected = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    out = read_rgb(path)
    assert out.dtype == np.uint8 and out.shape == (37, 53, 3)
    np.testing.assert_array_equal(out, expected)


def test_rgb_png_with_colour_chunks_reads_its_stored_samples(tmp_path):
    """gAMA, sRGB and a tRNS colour key change no sample on either decoder (nothing is corrected)."""
    rgb = _photo(17, 23)
    data = _encoded(tmp_path, "plain.png", rgb)

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    extra = chunk(b"gAMA", struct.pack(">I", 100000)) + chunk(b"sRGB", b"\x00")
    extra += chunk(b"tRNS", struct.pack(">HHH", 10, 20, 30))
    (tmp_path / "chunks.png").write_bytes(data[:33] + extra + data[33:])  # after the 25-byte IHDR chunk
    out = read_rgb(tmp_path / "chunks.png")
    assert out.shape == (17, 23, 3)
    np.testing.assert_array_equal(out, rgb)


def test_grey_and_palette_label_maps_read_as_pillow_gives_their_indices(tmp_path):
    """8-bit grey maps take OpenCV's path, palette maps Pillow's: both give the stored ids."""
    ids = (np.arange(29 * 41) % 23).reshape(29, 41).astype(np.uint8)
    Image.fromarray(ids).save(tmp_path / "grey.png")
    palette = Image.fromarray(ids).convert("P")
    palette.putpalette([v for i in range(256) for v in (i, 255 - i, i // 2)])
    palette.save(tmp_path / "palette.png")
    for name in ("grey.png", "palette.png"):
        with Image.open(tmp_path / name) as im:
            assert im.mode == ("L" if name == "grey.png" else "P")
        out = read_label(tmp_path / name)
        assert out.dtype == np.uint8 and out.flags.c_contiguous
        np.testing.assert_array_equal(out, ids)


def test_jpeg_with_bytes_after_its_end_marker_still_reads(tmp_path):
    data = _encoded(tmp_path, "a.jpg", _photo())
    (tmp_path / "padded.jpg").write_bytes(data + b"\x00" * 64)
    np.testing.assert_array_equal(read_rgb(tmp_path / "padded.jpg"), read_rgb(tmp_path / "a.jpg"))


@pytest.mark.parametrize("ext", [".jpg", ".png", ".webp"])
@pytest.mark.parametrize("keep", [0.5, 0.98])
def test_truncated_image_is_an_error_naming_the_file(tmp_path, ext, keep):
    data = _encoded(tmp_path, f"full{ext}", _photo())
    cut = tmp_path / f"cut{ext}"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(UserError, match=rf"cut\{ext}: truncated image file \(\d+ bytes; "):
        read_rgb(cut)


def test_truncated_jpeg_is_what_opencv_fills_with_grey(tmp_path):
    """The case this guards: OpenCV's file reader returns a half-grey image and no error."""
    rgb = _photo(200, 300)
    data = _encoded(tmp_path, "full.jpg", rgb)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 2])
    silently = cv2.imread(str(cut))
    assert silently is not None and silently.shape == rgb.shape and (silently[-1] == 128).all()
    assert "end-of-image marker" in truncation(cut.read_bytes())


def test_truncated_label_png_names_the_file(tmp_path):
    label = np.arange(64 * 80, dtype=np.uint32).reshape(64, 80).astype(np.uint8)
    write_gray(tmp_path / "lab.png", label)
    data = (tmp_path / "lab.png").read_bytes()
    (tmp_path / "lab.png").write_bytes(data[: len(data) - 20])
    with pytest.raises(
        UserError, match=r"lab\.png: truncated label file \(\d+ bytes; its 'IDAT' chunk is cut off\)"
    ):
        read_label(tmp_path / "lab.png")
    (tmp_path / "lab.png").write_bytes(data[:-12])  # every chunk whole, the IEND chunk missing
    with pytest.raises(UserError, match=r"lab\.png: truncated label file .*it has no IEND chunk"):
        read_label(tmp_path / "lab.png")


def test_corrupt_png_data_names_the_file(tmp_path):
    write_gray(tmp_path / "lab.png", (np.arange(64 * 80) % 19).reshape(64, 80).astype(np.uint8))
    write_rgb(tmp_path / "img.png", _photo())
    for name, reader, message in (
        ("lab.png", read_label, "cannot decode label map"),
        ("img.png", read_rgb, "cannot decode image"),
    ):
        data = bytearray((tmp_path / name).read_bytes())
        middle = len(data) // 2
        data[middle : middle + 16] = bytes(range(16))  # inside the compressed data: the CRC fails
        (tmp_path / name).write_bytes(bytes(data))
        with pytest.raises(UserError, match=rf"{name}: {message}"):
            reader(tmp_path / name)


def test_not_an_image_and_empty_files(tmp_path):
    (tmp_path / "notes.png").write_text("not a picture")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(
        UserError, match=r"notes\.png: not a recognised image file \(expected PNG, JPEG or WebP\)"
    ):
        read_rgb(tmp_path / "notes.png")
    with pytest.raises(UserError, match=r"empty\.jpg: empty image file"):
        read_rgb(tmp_path / "empty.jpg")


def _png_claiming(path: Path, width: int, height: int) -> None:
    """A small valid PNG whose IHDR (with a correct CRC) claims ``width`` x ``height``."""
    write_gray(path, np.zeros((4, 4), np.uint8))
    data = bytearray(path.read_bytes())
    ihdr = 8  # after the signature: length, "IHDR", 13 bytes of fields, CRC
    data[ihdr + 8 : ihdr + 16] = struct.pack(">II", width, height)
    data[ihdr + 21 : ihdr + 25] = struct.pack(">I", zlib.crc32(bytes(data[ihdr + 4 : ihdr + 21])))
    path.write_bytes(bytes(data))


def test_huge_header_is_refused_before_decoding(tmp_path):
    _png_claiming(tmp_path / "bomb.png", 40000, 40000)
    with Image.open(tmp_path / "bomb.png") as im:
        assert im.size == (40000, 40000)
    message = r"bomb\.png: header claims 40000 x 40000 = 1600000000 pixels, more than the limit of 134217728"
    with pytest.raises(UserError, match=message):
        read_rgb(tmp_path / "bomb.png")
    with pytest.raises(UserError, match=message):
        read_label(tmp_path / "bomb.png")


def test_pixel_limit_comes_from_the_environment_or_the_setter(tmp_path, monkeypatch):
    monkeypatch.delenv(MAX_PIXELS_ENV, raising=False)
    assert max_image_pixels() == 2**27
    write_rgb(tmp_path / "a.png", _photo(10, 20))
    monkeypatch.setenv(MAX_PIXELS_ENV, "199")
    with pytest.raises(
        UserError, match=r"a\.png: header claims 20 x 10 = 200 pixels, more than the limit of 199"
    ):
        read_rgb(tmp_path / "a.png")
    set_max_image_pixels(200)
    assert os.environ[MAX_PIXELS_ENV] == "200" and read_rgb(tmp_path / "a.png").shape == (10, 20, 3)
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(UserError, match=rf"environment {MAX_PIXELS_ENV}: expected a positive whole number"):
        read_rgb(tmp_path / "a.png")
    with pytest.raises(
        UserError, match=r"data\.max_image_pixels: expected a positive whole number of pixels, got 0"
    ):
        set_max_image_pixels(0)


def test_missing_folder_and_unreadable_files_say_so(tmp_path, monkeypatch):
    with pytest.raises(UserError, match=r"gone\.png: image file not found"):
        read_rgb(tmp_path / "gone.png")
    with pytest.raises(UserError, match=r": is a folder; expected the label file itself"):
        read_label(tmp_path)
    write_rgb(tmp_path / "locked.png", _photo(8, 8))

    def denied(path, mode="r"):
        raise PermissionError(13, "Permission denied", str(path))

    # Root reads a chmod-000 file anyway, so the refusal the file system gives others is simulated here.
    monkeypatch.setattr(image_file, "open", denied, raising=False)
    with pytest.raises(UserError, match=r"locked\.png: permission denied; cannot read this image file"):
        read_rgb(tmp_path / "locked.png")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_chmod_000_file_says_permission_denied(tmp_path):
    write_rgb(tmp_path / "locked.png", _photo(8, 8))
    (tmp_path / "locked.png").chmod(0)
    try:
        with pytest.raises(UserError, match=r"locked\.png: permission denied"):
            read_rgb(tmp_path / "locked.png")
    finally:
        (tmp_path / "locked.png").chmod(0o644)


def test_malformed_label_maps_name_file_and_value(tmp_path):
    colour = np.zeros((6, 8, 3), np.uint8)
    colour[..., 0] = 7
    Image.fromarray(colour).save(tmp_path / "colour.png")
    with pytest.raises(UserError, match=r"colour\.png: label map has differing colour channels"):
        read_label(tmp_path / "colour.png")
    Image.fromarray(np.full((6, 8), 300, np.uint16)).save(tmp_path / "wide.png")
    with pytest.raises(UserError, match=r"wide\.png: label values outside 0\.\.255 \(max 300\)"):
        read_label(tmp_path / "wide.png")


def test_benchmark_with_a_truncated_jpeg_fails_naming_it(tmp_path):
    """The silently wrong AP of the issue: a half-grey image scored as if it were whole."""
    root = tmp_path / "road_anomaly"
    data = _encoded(root / "original", "a.jpg", _photo(40, 60))
    (root / "original" / "a.jpg").write_bytes(data[: len(data) * 2 // 3])
    write_gray(root / "labels" / "a.png", np.zeros((40, 60), np.uint8))
    with pytest.raises(UserError, match=r"original/a\.jpg: truncated image file"):
        build_benchmark("RoadAnomaly", root=tmp_path)[0]


def test_image_and_label_of_different_sizes_name_both(tmp_path):
    root = tmp_path / "road_anomaly"
    write_rgb(root / "original" / "a.jpg", _photo(40, 60))
    write_gray(root / "labels" / "a.png", np.zeros((30, 60), np.uint8))
    with pytest.raises(
        UserError, match=r"image .*original/a\.jpg is 60 x 40 but its label .*labels/a\.png is 60 x 30"
    ):
        build_benchmark("RoadAnomaly", root=tmp_path)[0]
    stems = write_cityscapes(tmp_path)
    image = next((tmp_path / "cityscapes" / "leftImg8bit" / "train").glob(f"*/{stems[0]}_leftImg8bit.png"))
    write_rgb(image, _photo(20, 64))
    with pytest.raises(
        UserError, match=rf"{stems[0]}_leftImg8bit\.png is 64 x 20 but its label .* is 64 x 32"
    ):
        CityscapesSeg(tmp_path / "cityscapes")[0]


def test_predict_applies_the_configured_pixel_limit(tmp_path, monkeypatch):
    """``data.max_image_pixels`` from the command line reaches the reader; a header claiming more is
    refused before anything is allocated for it, naming the file and its claimed size."""
    monkeypatch.setenv(MAX_PIXELS_ENV, str(2**27))  # restored after the test; main() sets it
    torch.save(build_model("deeplab_wrn_light").state_dict(), tmp_path / "light.pth")
    (tmp_path / "light.yaml").write_text("model:\n  name: deeplab_wrn_light\n")
    write_rgb(tmp_path / "small.png", _photo(16, 24))
    _png_claiming(tmp_path / "bomb.png", 40000, 40000)
    common = ["--cfg", str(tmp_path / "light.yaml"), "--weight_path", str(tmp_path / "light.pth")]
    common += ["--out", str(tmp_path / "out"), "--device", "cpu", "--input"]
    with pytest.raises(UserError, match=r"bomb\.png: header claims 40000 x 40000 = 1600000000 pixels"):
        main(get_args_parser().parse_args([*common, str(tmp_path / "bomb.png")]))
    with pytest.raises(
        UserError, match=r"small\.png: header claims 24 x 16 = 384 pixels, more than the limit of 100"
    ):
        main(
            get_args_parser().parse_args([*common, str(tmp_path / "small.png"), "data.max_image_pixels=100"])
        )
    assert not any((tmp_path / "out").rglob("*")), "nothing is written for a refused image"


def test_png_header_test_reads_only_complete_headers():
    header = _encoded_png_header()
    assert is_rgb8_png(header) and not is_rgb8_png(header[:25]) and not is_rgb8_png(b"")
    assert not is_rgb8_png(b"GIF89a" + header[6:])


def _encoded_png_header() -> bytes:
    ok, buf = cv2.imencode(".png", np.zeros((2, 3, 3), np.uint8))
    assert ok
    return buf.tobytes()[:26]
