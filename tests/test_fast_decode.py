"""The fast decode path of large JPEGs: taken for a JPEG at least twice the resize target, not for
a small JPEG or a PNG; the same pixels as the plain DCT-scaled decode; scores that agree with a full
decode on real photos; EXIF orientation, colour profiles and 16-bit images on every path."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from pinet_runtime.decode import DECODE_PATH_KEY, FULL_DECODE, JPEG_DCT_PREFIX, decode_rgb, to_srgb
from pinet_runtime.preprocess import DEFAULT_PREPROCESSING, Preprocessing, load_image, preprocess

PREP = DEFAULT_PREPROCESSING   # short side 384: a JPEG of 768+ px short side takes the fast path
ORIENTATION = 0x0112


def _jpeg(image: Image.Image, path: Path, **save) -> Path:
    image.save(path, format="JPEG", quality=95, **save)
    return path


@pytest.fixture(scope="module")
def large_jpeg(sample_photos, tmp_path_factory) -> Path:
    """A real photo enlarged to 2400x1600: DCT scale 1/2 (1200x800) stays >= DRAFT_GAP x the 576x384
    target, 1/4 would not."""
    with Image.open(sample_photos[0]) as image:
        big = image.convert("RGB").resize((2400, 1600), Image.Resampling.BICUBIC)
    return _jpeg(big, tmp_path_factory.mktemp("fast") / "large.jpg")


def test_fast_path_taken_for_a_large_jpeg_path_and_bytes(large_jpeg):
    for source in (large_jpeg, str(large_jpeg), large_jpeg.read_bytes()):
        image = load_image(source, PREP)
        assert image.info[DECODE_PATH_KEY] == JPEG_DCT_PREFIX + "2" and image.size == (576, 384)


def test_fast_path_not_taken_for_a_small_jpeg_a_png_or_with_jpeg_draft_off(sample_photos, large_jpeg, tmp_path):
    assert load_image(sample_photos[0], PREP).info[DECODE_PATH_KEY] == FULL_DECODE   # 768x512 < 2 x 576x384
    with Image.open(large_jpeg) as image:
        image.save(tmp_path / "large.png")
    assert load_image(tmp_path / "large.png", PREP).info[DECODE_PATH_KEY] == FULL_DECODE
    no_draft = dataclasses.replace(PREP, jpeg_draft=False)
    assert load_image(large_jpeg, no_draft).info[DECODE_PATH_KEY] == FULL_DECODE


def test_fast_path_pixels_are_pillows_dct_scaled_decode(large_jpeg):
    """One-block decoding changes how libjpeg is fed, not what it computes."""
    with Image.open(large_jpeg) as image:
        image.draft("RGB", (2 * 576, 2 * 384))
        expected = np.asarray(image.convert("RGB"))
    got = np.asarray(decode_rgb(large_jpeg, PREP, "large"))
    assert got.shape == expected.shape == (800, 1200, 3) and np.array_equal(got, expected)


def test_fast_path_applies_exif_orientation(large_jpeg, tmp_path):
    with Image.open(large_jpeg) as image:
        upright = image.convert("RGB")
    exif = Image.Exif()
    exif[ORIENTATION] = 8   # stored rotated 90 degrees clockwise; displayed after rotating back
    sideways = _jpeg(upright.transpose(Image.Transpose.ROTATE_270), tmp_path / "sideways.jpg", exif=exif.tobytes())
    oriented = load_image(sideways, PREP)
    assert oriented.info[DECODE_PATH_KEY] == JPEG_DCT_PREFIX + "2" and oriented.size == (576, 384)
    reference = np.asarray(load_image(large_jpeg, PREP), dtype=np.float64)
    assert np.abs(np.asarray(oriented, dtype=np.float64) - reference).mean() < 3.0   # re-encoded, same picture
    unrotated = np.asarray(load_image(sideways, dataclasses.replace(PREP, apply_exif_orientation=False)))
    assert unrotated.shape == (576, 384, 3)


def _adobe_rgb_photo(pristine_dir: Path) -> Image.Image:
    with Image.open(pristine_dir / "skimage_rocket.png") as image:
        image.load()
        return image


def test_fast_path_converts_an_embedded_colour_profile_to_srgb(pristine_dir, tmp_path):
    """skimage's rocket photo carries an Adobe RGB (1998) profile: its JPEG, enlarged, takes the fast
    path and comes out as the sRGB conversion of its pixels, not the stored values."""
    photo = _adobe_rgb_photo(pristine_dir)
    icc = photo.info["icc_profile"]
    assert "Adobe RGB" in ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc)))
    big = photo.convert("RGB").resize((photo.width * 4, photo.height * 4), Image.Resampling.BICUBIC)
    path = _jpeg(big, tmp_path / "adobe.jpg", icc_profile=icc)
    decoded = decode_rgb(path, PREP, "adobe")
    assert decoded.info[DECODE_PATH_KEY].startswith(JPEG_DCT_PREFIX)
    with Image.open(path) as image:
        image.draft("RGB", decoded.size)
        stored = image.convert("RGB")
        converted = ImageCms.profileToProfile(stored, ImageCms.ImageCmsProfile(io.BytesIO(icc)),
                                              ImageCms.createProfile("sRGB"), outputMode="RGB")
    assert np.array_equal(np.asarray(decoded), np.asarray(converted))
    assert np.abs(np.asarray(decoded, dtype=int) - np.asarray(stored, dtype=int)).mean() > 2
    # An sRGB profile is left alone: same pixels, no conversion work.
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    tagged = stored.copy()
    tagged.info["icc_profile"] = srgb
    assert to_srgb(tagged) is tagged


def test_sixteen_bit_input_keeps_its_scaling(large_jpeg, tmp_path):
    """16-bit images are never JPEG (full path) and are still scaled by 255/65535."""
    gray = np.asarray(load_image(large_jpeg, PREP).convert("L"), dtype=np.uint16)
    Image.fromarray(gray * 257).save(tmp_path / "sixteen.png")
    decoded = load_image(tmp_path / "sixteen.png", PREP)
    assert decoded.info[DECODE_PATH_KEY] == FULL_DECODE
    assert np.array_equal(np.asarray(decoded)[..., 0], gray.astype(np.uint8))


def _agreement(fast: list[float], full: list[float]) -> tuple[float, float]:
    from scipy.stats import spearmanr

    return float(spearmanr(fast, full).statistic), float(np.abs(np.subtract(fast, full)).mean())


def test_tiny_model_scores_with_the_fast_path_agree_with_full_decode(tiny_onnx, sample_photos, tmp_path):
    """With the tiny contract (short side 40) every bundled 768x512 JPEG takes the fast path at DCT
    scale 1/4 (1/8 would leave 64 px, under DRAFT_GAP x 40); per-image scores agree with full
    decoding within SRCC >= 0.995, mean |diff| <= 0.01 of the score range."""
    pytest.importorskip("onnx")
    from pinet_runtime.scorer import Scorer

    fast = Scorer(tiny_onnx.build_tiny_model(tmp_path / "fast.onnx"))
    full_prep = dataclasses.replace(tiny_onnx.TINY_PREPROCESSING, jpeg_draft=False)
    full = Scorer(tiny_onnx.build_tiny_model(tmp_path / "full.onnx", prep=full_prep))
    assert all(load_image(p, fast.preprocessing).info[DECODE_PATH_KEY] == JPEG_DCT_PREFIX + "4" for p in sample_photos)
    srcc, mean_diff = _agreement([fast.score(p) for p in sample_photos], [full.score(p) for p in sample_photos])
    low, high = fast.info.score_meaning["range"]
    assert srcc >= 0.995 and mean_diff <= 0.01 * (high - low)


@pytest.mark.slow
def test_default_model_scores_with_the_fast_path_agree_with_full_decode(pristine_dir, tmp_path):
    """The bundled FP32 model at its 384 px target. Camera-size JPEGs made of real pixels (4 x 4
    tiles of 384 px from 16 pristine photos each, 1536 px, q95) take DCT scale 1/2 and a real
    resample; each score is within 0.015 of the full decode's (measured max 0.011, mean 0.007: docs/
    runtime.md). The 768 px photos, for which DCT 1/2 would BE the 384 px target (0.043 off with
    the new CLIVE model), take the full path."""
    onnx = pytest.importorskip("onnx")
    from pinet_export.onnx_metadata import read_typed_metadata, set_metadata
    from pinet_runtime.model_file import default_model_path
    from pinet_runtime.scorer import Scorer

    photos = [p for p in sorted(pristine_dir.glob("*.png")) if min(Image.open(p).size) >= 384]
    assert len(photos) >= 64
    mosaics = []
    for first in range(0, 64, 16):
        mosaic = Image.new("RGB", (1536, 1536))
        for k, path in enumerate(photos[first:first + 16]):
            with Image.open(path) as image:
                mosaic.paste(image.convert("RGB").crop((0, 0, 384, 384)), ((k % 4) * 384, (k // 4) * 384))
        mosaics.append(_jpeg(mosaic, tmp_path / f"mosaic_{first}.jpg"))
    fast = Scorer(default_model_path("fp32"), providers="cpu")
    model = onnx.load(str(default_model_path("fp32")))
    meta = read_typed_metadata(model)
    set_metadata(model, dataclasses.replace(meta, preprocessing=dataclasses.replace(meta.preprocessing,
                                                                                    jpeg_draft=False)))
    onnx.save(model, str(tmp_path / "full.onnx"))
    full = Scorer(tmp_path / "full.onnx", providers="cpu")
    for path in mosaics:
        assert load_image(path, fast.preprocessing).info[DECODE_PATH_KEY] == JPEG_DCT_PREFIX + "2"
        assert abs(fast.score(path) - full.score(path)) <= 0.015, path.name
    large = [p for p in photos if min(Image.open(p).size) >= 768]
    with Image.open(large[0]) as image:
        single = _jpeg(image.convert("RGB"), tmp_path / "single.jpg")
    assert load_image(single, fast.preprocessing).info[DECODE_PATH_KEY] == FULL_DECODE


def test_preprocess_of_a_normal_photo_is_unchanged_by_the_fast_path_code(sample_photos):
    """A small JPEG goes the full path: crops equal those of Pillow's plain decode + the contract."""
    prep = Preprocessing()
    with Image.open(sample_photos[2]) as image:
        pixels = np.asarray(image.convert("RGB"))
    assert np.array_equal(preprocess(sample_photos[2], prep), preprocess(pixels, prep))
