"""The preprocessing contract: data round trips, geometry, colour rules, normalisation, golden arrays."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pinet_runtime.preprocess import (
    ImageDecodeError,
    Preprocessing,
    crop_origins,
    load_image,
    make_crops,
    normalize,
    preprocess,
    target_size,
)

DATA = Path(__file__).parent / "data"


def test_golden_crops_are_pinned():
    prep = Preprocessing(resize_short_side=40, crop_size=32, crop_layout="center_corners")
    crops = preprocess(DATA / "golden_input.png", prep)
    golden = np.load(DATA / "golden_crops.npy")
    assert crops.dtype == np.float32 and crops.shape == (5, 3, 32, 32)
    np.testing.assert_array_equal(crops, golden)


def test_crops_match_an_independent_computation():
    prep = Preprocessing(resize_short_side=40, crop_size=32)
    source = Image.open(DATA / "golden_input.png").convert("RGB")
    resized = np.asarray(source.resize((53, 40), Image.Resampling.BICUBIC)).astype(np.float64)
    mean, std = np.array(prep.mean), np.array(prep.std)
    # centre, top-left, top-right, bottom-left, bottom-right of a 53x40 image with 32 px crops
    origins = [(4, 10), (0, 0), (0, 21), (8, 0), (8, 21)]
    expected = np.stack([((resized[t:t + 32, l:l + 32] / 255.0 - mean) / std).transpose(2, 0, 1)
                         for t, l in origins])
    np.testing.assert_allclose(preprocess(DATA / "golden_input.png", prep), expected, atol=1e-5)


@pytest.mark.parametrize("size, short, expected", [
    ((768, 512), 384, (576, 384)),
    ((512, 768), 384, (384, 576)),
    ((300, 200), 384, (576, 384)),      # small images are upscaled to the same short side
    ((384, 384), 384, (384, 384)),
    ((4000, 3000), 384, (512, 384)),
])
def test_target_size(size, short, expected):
    assert target_size(*size, Preprocessing(resize_short_side=short)) == expected


def test_native_size_kept_without_resize_unless_below_crop():
    prep = Preprocessing(resize_short_side=None, crop_size=224)
    assert target_size(500, 400, prep) == (500, 400)
    assert target_size(300, 100, prep) == (672, 224)


def test_crop_layouts():
    assert crop_origins(300, 400, Preprocessing(crop_size=100, crop_layout="center")) == [(100, 150)]
    five = crop_origins(300, 400, Preprocessing(crop_size=100))
    assert five == [(100, 150), (0, 0), (0, 300), (200, 0), (200, 300)]
    grid = crop_origins(300, 400, Preprocessing(crop_size=100, crop_layout="grid", grid_rows=2, grid_cols=3))
    assert grid == [(0, 0), (0, 150), (0, 300), (200, 0), (200, 150), (200, 300)]
    assert Preprocessing(crop_layout="grid", grid_rows=2, grid_cols=3).num_crops == 6
    with pytest.raises(ValueError, match="smaller than"):
        crop_origins(50, 400, Preprocessing(crop_size=100))


def test_normalize_formula_and_layout():
    prep = Preprocessing(mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))
    pixels = np.array([[[255, 0, 51]]], dtype=np.uint8)        # 1x1 RGB
    out = normalize(pixels, prep)
    assert out.shape == (3, 1, 1) and out.dtype == np.float32
    np.testing.assert_allclose(out[:, 0, 0], [1.0, -1.0, 0.2], atol=1e-6)


def test_alpha_is_composited_over_the_background():
    rgba = np.zeros((40, 40, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[:, :20, 3] = 255          # opaque red-ish on the left
    rgba[:, 20:, 3] = 0            # fully transparent on the right
    prep = Preprocessing(resize_short_side=None, crop_size=8, alpha_background=(10, 20, 30))
    rgb = np.asarray(load_image(Image.fromarray(rgba, "RGBA"), prep))
    assert tuple(rgb[5, 5]) == (200, 0, 0)
    assert tuple(rgb[5, 30]) == (10, 20, 30)


def test_sixteen_bit_float_and_gray_rules():
    prep = Preprocessing(resize_short_side=None, crop_size=8)
    sixteen = Image.fromarray(np.full((10, 10), 65535, dtype=np.uint16))
    assert np.asarray(load_image(sixteen, prep)).max() == 255
    half = Image.fromarray(np.full((10, 10), 0.5, dtype=np.float32), "F")
    assert set(np.unique(np.asarray(load_image(half, prep)))) == {128}
    gray = Image.fromarray(np.full((10, 10), 77, dtype=np.uint8), "L")
    assert np.asarray(load_image(gray, prep)).shape == (10, 10, 3)
    assert set(np.unique(np.asarray(load_image(gray, prep)))) == {77}


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :20] = 255                                   # white left half
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6                                       # rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif, quality=95)
    prep = Preprocessing(resize_short_side=None, crop_size=8, jpeg_draft=False)
    shown = np.asarray(load_image(path, prep))
    assert shown.shape[:2] == (40, 20)                     # portrait after orientation
    assert shown[:15].mean() > 200 and shown[25:].mean() < 50   # white half now on top


def test_array_bytes_and_path_inputs_agree(tmp_path, sample_photos):
    prep = Preprocessing(resize_short_side=96, crop_size=64, jpeg_draft=False)
    path = sample_photos[0]
    from_path = preprocess(path, prep)
    from_bytes = preprocess(path.read_bytes(), prep)
    from_array = preprocess(np.asarray(Image.open(path).convert("RGB")), prep)
    np.testing.assert_array_equal(from_path, from_bytes)
    np.testing.assert_array_equal(from_path, from_array)


def test_jpeg_draft_decodes_close_to_full_decode(sample_photos):
    full = preprocess(sample_photos[0], Preprocessing(resize_short_side=128, jpeg_draft=False, crop_size=96))
    draft = preprocess(sample_photos[0], Preprocessing(resize_short_side=128, jpeg_draft=True, crop_size=96))
    assert full.shape == draft.shape
    assert np.abs(full - draft).mean() < 0.1              # same picture, slightly different pixels


def test_bad_inputs_name_the_source(tmp_path):
    prep = Preprocessing()
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    for path, problem in [(empty, "empty"), (text, "not an image"), (tmp_path / "missing.png", "no such file")]:
        with pytest.raises(ImageDecodeError) as info:
            preprocess(path, prep)
        assert str(path) in str(info.value) and problem in str(info.value)


def test_contract_round_trips_and_refuses_bad_data():
    prep = Preprocessing(crop_layout="grid", grid_rows=2, grid_cols=2, mean=(0.1, 0.2, 0.3))
    assert Preprocessing.from_json(prep.to_json()) == prep
    with pytest.raises(ValueError, match="crop_layout"):
        Preprocessing(crop_layout="random")
    with pytest.raises(ValueError, match="newer"):
        Preprocessing(contract_version=99)
    with pytest.raises(ValueError, match="unknown fields"):
        Preprocessing.from_dict({**prep.to_dict(), "sharpen": True})
    with pytest.raises(ValueError, match="below crop_size"):
        Preprocessing(resize_short_side=100, crop_size=224)


def test_make_crops_uses_the_layout(sample_photos):
    prep = Preprocessing(crop_layout="grid", grid_rows=2, grid_cols=2, crop_size=64, resize_short_side=96)
    image = load_image(sample_photos[0], prep)
    crops = make_crops(image, prep)
    assert crops.shape == (4, 3, 64, 64)
    assert image.size == (144, 96)
