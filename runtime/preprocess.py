"""The preprocessing contract: how an image becomes the crops a PINet model sees.

The contract is data (:class:`Preprocessing`), stored in every checkpoint and every exported
ONNX file, plus ONE numpy/Pillow implementation below. Training evaluation, export validation
and the runtime all call these functions, so PyTorch, ONNX FP32 and INT8 see identical pixels.

Steps, in order (each one is a field of the dataclass):

1. decode with Pillow (runtime/decode.py); for JPEG, optionally let libjpeg decode at a reduced
   DCT scale that is still at least as large as the resize target (``jpeg_draft``) - 4-8x faster
   on camera photos. Before any pixel buffer is allocated the declared size is checked against
   the per-image limits of runtime/geometry.py (aspect ratio, decoded and resized pixel counts);
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
described by ``score_name``, ``score_range`` and ``higher_is_better``. Every field is validated
against the schema of runtime/schema.py when a Preprocessing is built; every image-side failure
is an ImageDecodeError naming the input.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, fields
from typing import Union

import numpy as np
from PIL import Image

from pinet_runtime.decode import PILLOW_FAILURES, decode_rgb, to_rgb
from pinet_runtime.errors import ImageDecodeError, ImageLimitError, MetadataError
from pinet_runtime.geometry import check_limits, target_size
from pinet_runtime.schema import CONTRACT_VERSION, CROP_LAYOUTS, preprocessing_problems  # noqa: F401 (re-exported)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ImageSource = Union[str, os.PathLike, bytes, bytearray, Image.Image, np.ndarray]
_TUPLE_FIELDS = ("alpha_background", "mean", "std", "score_range")


@dataclass(frozen=True)
class Preprocessing:
    """Everything needed to turn an image into model input, and to read the model's output.

    Validated on construction against the schema in runtime/schema.py (types, finite values,
    ranges); a bad value raises ValueError naming every offending field and its allowed range.
    """

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
        for name in _TUPLE_FIELDS:  # lists (as JSON gives them) become tuples: equality and hashing
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        problems = preprocessing_problems(self)
        if problems:
            raise MetadataError(problems[0].split(" ", 1)[0], "invalid preprocessing: " + "; ".join(problems))

    @property
    def num_crops(self) -> int:
        return {"center": 1, "center_corners": 5, "grid": self.grid_rows * self.grid_cols}[self.crop_layout]

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict, require_all: bool = False) -> "Preprocessing":
        """From stored data. ``require_all``: a missing field is an error (model files) rather
        than its default (older checkpoints)."""
        if not isinstance(data, dict):
            raise MetadataError("preprocessing", f"invalid preprocessing: expected a JSON object, got {type(data).__name__}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise MetadataError(unknown[0], f"invalid preprocessing: unknown fields {unknown} (written by a newer toolkit?)")
        missing = [name for name in known if name not in data]
        if require_all and missing:
            raise MetadataError(missing[0], f"invalid preprocessing: fields missing: {', '.join(missing)}")
        return cls(**data)

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


def load_image(source: ImageSource, prep: Preprocessing) -> Image.Image:
    """Steps 1-4: decode, orient, convert to RGB and resize. Raises ImageDecodeError (also
    ImageLimitError, its subclass, for an image past a size limit of runtime/geometry.py)."""
    name = describe_source(source)
    rgb = decode_rgb(source, prep, name)
    size = check_limits(name, rgb.width, rgb.height, prep)
    if size != rgb.size:
        try:
            rgb = rgb.resize(size, _FILTERS[prep.resize_filter])
        except MemoryError:
            raise ImageDecodeError(name, f"out of memory resizing to {size[0]}x{size[1]}") from None
    return rgb


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
    """The whole contract: any supported input to float32 crops [N, 3, crop, crop].
    Every image-side failure raises ImageDecodeError naming the input."""
    image = load_image(source, prep)
    try:
        return make_crops(image, prep)
    except PILLOW_FAILURES as err:
        raise ImageDecodeError(describe_source(source), f"cannot make crops ({type(err).__name__}: {err})") from None


DEFAULT_PREPROCESSING = Preprocessing()
__all__ = ["Preprocessing", "ImageDecodeError", "ImageLimitError", "DEFAULT_PREPROCESSING", "load_image", "to_rgb",
           "crop_origins", "normalize", "make_crops", "preprocess", "target_size", "describe_source",
           "IMAGENET_MEAN", "IMAGENET_STD"]
