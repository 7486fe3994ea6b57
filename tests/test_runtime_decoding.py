"""Robust decoding through the Scorer: every awkward input either scores as the contract says
(runtime/preprocess.py) or is reported with its name and the problem - never a crash, never a
silent score. Every file is generated here; expectations are built from raw pixel arrays.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from pinet_runtime import Scorer


@pytest.fixture(scope="module")
def scorer(tiny_onnx, tmp_path_factory) -> Scorer:
    return Scorer(tiny_onnx.build_tiny_model(tmp_path_factory.mktemp("model") / "tiny.onnx"), providers="cpu")


def _pattern(height: int, width: int) -> np.ndarray:
    """Asymmetric colours so that any rotation or channel change moves the tiny model's score."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // (width - 1), y * 255 // (height - 1), (x * y) % 256], axis=-1).astype(np.uint8)


def test_exif_orientation_is_applied(scorer, tmp_path):
    upright = _pattern(48, 64)
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(upright).save(path, quality=98, exif=exif.tobytes())
    with Image.open(path) as stored:
        stored_pixels = np.asarray(stored.convert("RGB"))  # as stored, orientation not applied
    displayed = np.rot90(stored_pixels, k=-1)  # 90 degrees clockwise
    assert displayed.shape == (64, 48, 3)
    score = scorer.score(path)
    assert score == pytest.approx(scorer.score(np.ascontiguousarray(displayed)), abs=1e-5)
    assert abs(score - scorer.score(stored_pixels)) > 1e-2  # the test would notice a missing rotation


def test_grayscale_is_replicated(scorer, tmp_path):
    gray = _pattern(40, 50)[:, :, 0]
    Image.fromarray(gray, "L").save(tmp_path / "gray.png")
    rgb = np.repeat(gray[:, :, None], 3, axis=2)
    assert scorer.score(tmp_path / "gray.png") == pytest.approx(scorer.score(rgb), abs=1e-6)


def test_alpha_modes_are_composited_over_white(scorer, tmp_path):
    colour = _pattern(40, 50)
    alpha = np.where(np.add.outer(np.arange(40), np.arange(50)) % 7 < 3, 0, 255).astype(np.uint8)
    expected_rgb = np.where(alpha[:, :, None] == 0, 255, colour).astype(np.uint8)
    Image.fromarray(np.dstack([colour, alpha]), "RGBA").save(tmp_path / "rgba.png")
    assert scorer.score(tmp_path / "rgba.png") == pytest.approx(scorer.score(expected_rgb), abs=1e-6)

    gray = colour[:, :, 0]
    Image.fromarray(np.dstack([gray, alpha]), "LA").save(tmp_path / "la.png")
    expected_gray = np.where(alpha == 0, 255, gray).astype(np.uint8)
    assert scorer.score(tmp_path / "la.png") == pytest.approx(
        scorer.score(np.repeat(expected_gray[:, :, None], 3, axis=2)), abs=1e-6)
    # The black that transparent pixels hold must not leak in.
    assert abs(scorer.score(tmp_path / "la.png") - scorer.score(np.repeat(gray[:, :, None], 3, axis=2))) > 1e-2


def test_palette_with_transparency_is_composited(scorer, tmp_path):
    indices = (np.add.outer(np.arange(40), np.arange(50)) // 5 % 4).astype(np.uint8)
    palette_rgb = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200], [10, 10, 10]], dtype=np.uint8)
    image = Image.fromarray(indices, "P")
    image.putpalette(palette_rgb.flatten().tolist())
    image.save(tmp_path / "palette.png", transparency=3)  # index 3 is transparent
    expected = palette_rgb[indices]
    expected[indices == 3] = 255
    assert scorer.score(tmp_path / "palette.png") == pytest.approx(scorer.score(expected), abs=1e-6)


def test_cmyk_goes_through_pillows_conversion(scorer, tmp_path):
    cmyk_pixels = np.dstack([_pattern(40, 50), _pattern(40, 50)[:, :, :1] // 3])
    cmyk = Image.fromarray(cmyk_pixels, "CMYK")
    cmyk.save(tmp_path / "cmyk.tif")
    expected = np.asarray(cmyk.convert("RGB"))
    assert scorer.score(tmp_path / "cmyk.tif") == pytest.approx(scorer.score(expected), abs=1e-6)


def test_sixteen_bit_and_float_images_are_scaled(scorer, tmp_path):
    values16 = (np.add.outer(np.arange(40), np.arange(50)) * 700).astype(np.uint16)
    Image.fromarray(values16).save(tmp_path / "deep.png")
    expected16 = np.clip(np.rint(values16 * (255.0 / 65535.0)), 0, 255).astype(np.uint8)
    assert scorer.score(tmp_path / "deep.png") == pytest.approx(
        scorer.score(np.repeat(expected16[:, :, None], 3, axis=2)), abs=1e-6)

    values_float = (np.add.outer(np.arange(40), np.arange(50)) / 90.0).astype(np.float32)
    Image.fromarray(values_float, "F").save(tmp_path / "float.tif")
    expected_float = np.clip(np.rint(values_float.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    assert scorer.score(tmp_path / "float.tif") == pytest.approx(
        scorer.score(np.repeat(expected_float[:, :, None], 3, axis=2)), abs=1e-6)


def test_images_smaller_than_a_crop_are_upscaled_and_scored(tiny_onnx, scorer, tmp_path):
    Image.new("RGB", (3, 2), (90, 160, 20)).save(tmp_path / "tiny.png")
    (result,) = scorer.score_many([tmp_path / "tiny.png"])
    assert result.ok and result.crops == 5
    prep = scorer.preprocessing
    standardised = (np.array([90, 160, 20]) / 255.0 - np.array(prep.mean)) / np.array(prep.std)
    crops = np.broadcast_to(standardised[None, :, None, None], (5, 3, 32, 32))
    assert result.score == pytest.approx(tiny_onnx.tiny_expected_score(crops), abs=1e-5)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims a huge size: Pillow's bomb check fires before any pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_bad_inputs_are_reported_with_name_and_problem_and_the_batch_goes_on(scorer, tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(_pattern(40, 50)).save(good)
    jpeg = io.BytesIO()
    Image.fromarray(_pattern(200, 300)).save(jpeg, "JPEG", quality=90)
    cases = {
        "truncated.jpg": (jpeg.getvalue()[: len(jpeg.getvalue()) // 2], "truncated"),
        "empty.png": (b"", "empty file (0 bytes)"),
        "notes.jpg": (b"these are shopping notes, not pixels\n" * 20, "not an image"),
        # An ISO-BMFF 'ftyp' box with brand heic: what a phone's HEIC file starts with.
        "phone.heic": (struct.pack(">I", 24) + b"ftypheic" + b"\x00\x00\x00\x00" + b"mif1heic" + b"\x00" * 64,
                       "HEIC"),
        "bomb.png": (_png_header_only(30000, 30000), "decompression-bomb"),
    }
    items = [good]
    for name, (content, _) in cases.items():
        (tmp_path / name).write_bytes(content)
        items.append(tmp_path / name)
    items.append(good)
    results = list(scorer.score_many(items, batch_size=3))
    assert results[0].ok and results[-1].ok and results[0].score == pytest.approx(results[-1].score)
    for result, (name, (_, fragment)) in zip(results[1:-1], cases.items()):
        assert result.score is None and result.crops == 0, name
        assert name in result.error and fragment in result.error, result.error
    assert Image.MAX_IMAGE_PIXELS is not None  # the limit is kept, not disabled
