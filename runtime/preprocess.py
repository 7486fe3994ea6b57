"""The preprocessing contract: how an image becomes the crops a PINet model sees.

The contract is data (:class:`Preprocessing`), stored in every checkpoint and every exported
ONNX file, plus ONE numpy/Pillow implementation below. Training evaluation, export validation
and the runtime all call these functions, so PyTorch, ONNX FP32 and INT8 see identical pixels.

Steps, in order (each one is a field of the dataclass):

1. decode with Pillow; for JPEG, optionally let libjpeg decode at a reduced DCT scale that is
   still at least as large as the resize target (``jpeg_draft``) - 4-8x faster on camera photos;
2. apply the EXIF orientation tag (``apply_exif_orientation``);
3. convert to 8-bit RGB: palette images with transparency and every alpha mode are composited
   over ``alpha_background``; grayscale is replicated; CMYK goes through Pillow's conversion;
   16-bit integer images are scaled by 255/65535; 32-bit float images are read as 0..1;
4. resize so the short side equals ``resize_short_side`` (down or up, bicubic, antialiased),
   keeping the aspect ratio. With ``resize_short_side=None`` the native size is kept unless the
   short side is below ``crop_size``, which is then upscaled to exactly ``crop_size``;
5. cut ``crop_size`` square crops in a fixed layout (``crop_layout``): ``center`` (1 crop),
   ``center_corners`` (centre + 4 corners, 5 crops) or ``grid`` (``grid_rows`` x ``grid_cols``
   crops spread evenly, first and last touching the borders);
6. scale to 0..1, subtract ``mean`` and divide by ``std`` per channel; layout NCHW float32.

The model's score for the image is the mean of its per-crop outputs; the score's meaning is
described by ``score_name``, ``score_range`` and ``higher_is_better``.
"""

from __future__ import annotations

import io
import json
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CONTRACT_VERSION = 1
CROP_LAYOUTS = ("center", "center_corners", "grid")

ImageSource = Union[str, os.PathLike, bytes, bytearray, Image.Image, np.ndarray]


class ImageDecodeError(ValueError):
    """An input could not be turned into crops; the message names the input and the problem."""

    def __init__(self, source_name: str, problem: str):
        self.source_name = source_name
        self.problem = problem
        super().__init__(f"{source_name}: {problem}")


@dataclass(frozen=True)
class Preprocessing:
    """Everything needed to turn an image into model input, and to read the model's output."""

    contract_version: int = CONTRACT_VERSION
    apply_exif_orientation: bool = True
    alpha_background: tuple[int, int, int] = (255, 255, 255)
    jpeg_draft: bool = True
    resize_short_side: int | None = 384
    resize_filter: str = "bicubic"
    crop_size: int = 224
    crop_layout: str = "center_corners"
    grid_rows: int = 3
    grid_cols: int = 3
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    score_name: str = "pseudo-MOS"
    score_range: tuple[float, float] = (0.0, 1.0)
    higher_is_better: bool = True

    def __post_init__(self) -> None:
        problems = []
        if self.crop_layout not in CROP_LAYOUTS:
            problems.append(f"crop_layout {self.crop_layout!r} is not one of {CROP_LAYOUTS}")
        if self.crop_size < 8:
            problems.append(f"crop_size {self.crop_size} is below 8")
        if self.resize_short_side is not None and self.resize_short_side < self.crop_size:
            problems.append(f"resize_short_side {self.resize_short_side} is below crop_size {self.crop_size}")
        if self.resize_filter not in _FILTERS:
            problems.append(f"resize_filter {self.resize_filter!r} is not one of {sorted(_FILTERS)}")
        if min(self.grid_rows, self.grid_cols) < 1:
            problems.append("grid_rows and grid_cols must be >= 1")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            problems.append("mean and std need 3 values, std > 0")
        if self.contract_version > CONTRACT_VERSION:
            problems.append(f"contract_version {self.contract_version} is newer than this toolkit's {CONTRACT_VERSION}")
        if problems:
            raise ValueError("invalid preprocessing: " + "; ".join(problems))

    @property
    def num_crops(self) -> int:
        return {"center": 1, "center_corners": 5, "grid": self.grid_rows * self.grid_cols}[self.crop_layout]

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "Preprocessing":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"invalid preprocessing: unknown fields {unknown} (written by a newer toolkit?)")
        tuples = {"alpha_background", "mean", "std", "score_range"}
        values = {k: tuple(v) if k in tuples and v is not None else v for k, v in data.items()}
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> "Preprocessing":
        return cls.from_dict(json.loads(text))


_FILTERS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
            "lanczos": Image.Resampling.LANCZOS}


def describe_source(source: ImageSource) -> str:
    """A short human name for an input, used in every error message."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, (bytes, bytearray)):
        return f"<{len(source)} bytes>"
    if isinstance(source, Image.Image):
        return f"<PIL image {source.mode} {source.size[0]}x{source.size[1]}>"
    if isinstance(source, np.ndarray):
        return f"<array {source.dtype} {source.shape}>"
    return f"<{type(source).__name__}>"


def target_size(width: int, height: int, prep: Preprocessing) -> tuple[int, int]:
    """The (width, height) an image of this size is resized to (step 4)."""
    short = min(width, height)
    if prep.resize_short_side is not None:
        wanted = prep.resize_short_side
    elif short < prep.crop_size:
        wanted = prep.crop_size
    else:
        return width, height
    scale = wanted / short
    # The short side lands on `wanted` exactly; the long side is rounded.
    if width <= height:
        return wanted, max(wanted, round(height * scale))
    return max(wanted, round(width * scale)), wanted


def load_image(source: ImageSource, prep: Preprocessing) -> Image.Image:
    """Steps 1-4: decode, orient, convert to RGB and resize. Raises ImageDecodeError."""
    name = describe_source(source)
    if isinstance(source, Image.Image):
        image = source
        image.load()
    elif isinstance(source, np.ndarray):
        image = _image_from_array(source, name)
    else:
        image = _decode(source, name, prep)
    if prep.apply_exif_orientation:
        image = ImageOps.exif_transpose(image)
    rgb = to_rgb(image, prep, name)
    size = target_size(rgb.width, rgb.height, prep)
    if size != rgb.size:
        rgb = rgb.resize(size, _FILTERS[prep.resize_filter])
    return rgb


def _decode(source, name: str, prep: Preprocessing) -> Image.Image:
    if isinstance(source, (bytes, bytearray)):
        if len(source) == 0:
            raise ImageDecodeError(name, "empty input (0 bytes)")
        stream = io.BytesIO(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise ImageDecodeError(name, "no such file" if not path.exists() else "not a regular file")
        if path.stat().st_size == 0:
            raise ImageDecodeError(name, "empty file (0 bytes)")
        stream = path
    try:
        image = Image.open(stream)
        if prep.jpeg_draft and image.format == "JPEG":
            # libjpeg's DCT scaling: decode at 1/2, 1/4 or 1/8 while staying >= the resize target.
            image.draft(image.mode, target_size(image.width, image.height, prep))
        image.load()
    except Image.DecompressionBombError as err:
        raise ImageDecodeError(name, f"refused by Pillow's decompression-bomb limit ({err})") from None
    except UnidentifiedImageError:
        raise ImageDecodeError(name, "not an image Pillow can read (unknown or unsupported format, "
                                     "e.g. HEIC without a plugin)") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageDecodeError(name, f"corrupt or truncated image ({err})") from None
    return image


def _image_from_array(array: np.ndarray, name: str) -> Image.Image:
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ImageDecodeError(name, "expected an HxW, HxWx3 or HxWx4 array")
    if array.dtype != np.uint8:
        raise ImageDecodeError(name, f"expected uint8 pixels, got {array.dtype}")
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[array.shape[2]]
    return Image.fromarray(np.ascontiguousarray(array if mode != "L" else array[:, :, 0]), mode)


def to_rgb(image: Image.Image, prep: Preprocessing, name: str = "<image>") -> Image.Image:
    """Step 3: any Pillow mode to 8-bit RGB, by the rules in the module docstring."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        values = np.asarray(image, dtype=np.float64) * (255.0 / 65535.0)
        return _gray_to_rgb(values)
    if mode == "F":
        values = np.asarray(image, dtype=np.float64) * 255.0
        return _gray_to_rgb(values)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, prep.alpha_background)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as err:
        raise ImageDecodeError(name, f"cannot convert mode {mode} to RGB ({err})") from None


def _gray_to_rgb(values: np.ndarray) -> Image.Image:
    gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2), "RGB")


def crop_origins(height: int, width: int, prep: Preprocessing) -> list[tuple[int, int]]:
    """Step 5: (top, left) of each crop, in a fixed order."""
    size = prep.crop_size
    if height < size or width < size:
        raise ValueError(f"image {width}x{height} is smaller than the {size}px crop")
    bottom, right = height - size, width - size
    centre = (bottom // 2, right // 2)
    if prep.crop_layout == "center":
        return [centre]
    if prep.crop_layout == "center_corners":
        return [centre, (0, 0), (0, right), (bottom, 0), (bottom, right)]
    tops = _spread(bottom, prep.grid_rows)
    lefts = _spread(right, prep.grid_cols)
    return [(top, left) for top in tops for left in lefts]


def _spread(extent: int, count: int) -> list[int]:
    if count == 1:
        return [extent // 2]
    return [math.floor(i * extent / (count - 1) + 0.5) for i in range(count)]


def normalize(pixels: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """Step 6: uint8 [..., H, W, 3] to float32 [..., 3, H, W], scaled and standardised."""
    mean = np.asarray(prep.mean, dtype=np.float32)
    std = np.asarray(prep.std, dtype=np.float32)
    scaled = (pixels.astype(np.float32) / np.float32(255.0) - mean) / std
    return np.ascontiguousarray(np.moveaxis(scaled, -1, -3))


def make_crops(image: Image.Image, prep: Preprocessing) -> np.ndarray:
    """Steps 5-6 on an already loaded RGB image: float32 [N, 3, crop, crop]."""
    pixels = np.asarray(image, dtype=np.uint8)
    size = prep.crop_size
    crops = np.stack([pixels[top:top + size, left:left + size]
                      for top, left in crop_origins(pixels.shape[0], pixels.shape[1], prep)])
    return normalize(crops, prep)


def preprocess(source: ImageSource, prep: Preprocessing) -> np.ndarray:
    """The whole contract: any supported input to float32 crops [N, 3, crop, crop]."""
    return make_crops(load_image(source, prep), prep)


DEFAULT_PREPROCESSING = Preprocessing()
__all__ = ["Preprocessing", "ImageDecodeError", "DEFAULT_PREPROCESSING", "load_image", "to_rgb",
           "crop_origins", "normalize", "make_crops", "preprocess", "target_size", "describe_source",
           "IMAGENET_MEAN", "IMAGENET_STD"]
