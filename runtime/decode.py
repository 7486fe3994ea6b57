"""Steps 1-3 of the contract: open, check the limits, decode, orient and convert to 8-bit RGB.

Every failure here is an :class:`ImageDecodeError` naming the input: Pillow's parsers raise many
exception types on hostile files, and all of them are translated, so a bad file never escapes as
anything else. Files are closed before returning (multi-frame files included).
"""

from __future__ import annotations

import functools
import io
import math
import os
import stat
import struct

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from pinet_runtime.errors import ImageDecodeError
from pinet_runtime.geometry import check_limits, check_shape, target_size

# What Pillow's parsers and conversions were seen to raise on mutated files. MemoryError is kept
# for a device short of memory even within the limits: that image fails, the batch goes on.
PILLOW_FAILURES = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, KeyError, TypeError,
                   ArithmeticError, RecursionError, MemoryError)
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_ICC_MODES = ("RGB", "RGBA", "CMYK")
# How an image was decoded, in the returned image's ``info``: FULL_DECODE, or for a JPEG decoded at
# a reduced DCT scale JPEG_DCT_PREFIX + the denominator ("jpeg-dct-1/4").
DECODE_PATH_KEY = "pinet.decode"
FULL_DECODE = "full"
JPEG_DCT_PREFIX = "jpeg-dct-1/"
ONE_BLOCK = 1 << 30   # Pillow reads at most this many bytes per decoder call: the whole file
# The DCT-scaled decode must stay >= DRAFT_GAP x the resize target, so that the final resample
# (antialiased) still does a real reduction: libjpeg's scaled IDCT alone keeps more aliasing and
# fine texture than a full decode + resize, and a model trained on human sharpness judgements sees
# it (a 768 -> 384 px photo scored 0.043 higher with DCT 1/2 straight to the target). Pillow's own
# `reducing_gap` guidance: 2.0 is indistinguishable from a full decode for most images.
DRAFT_GAP = 2.0


def decode_rgb(source, prep, name: str) -> Image.Image:
    """Any supported source to an oriented 8-bit RGB image (not yet resized). ImageDecodeError."""
    try:
        if isinstance(source, Image.Image):
            return _finish(source, prep, name)
        if isinstance(source, np.ndarray):
            return _finish(_image_from_array(source, name, prep), prep, name)
        with _open_bytes(source, name) as stream, Image.open(stream) as image:
            check_shape(name, image.width, image.height)
            path = FULL_DECODE
            if prep.jpeg_draft and image.format == "JPEG":
                # libjpeg's DCT scaling: decode at 1/2, 1/4 or 1/8 while staying >= DRAFT_GAP x the target.
                width = image.width
                wanted = target_size(image.width, image.height, prep)
                image.draft(image.mode, tuple(math.ceil(side * DRAFT_GAP) for side in wanted))
                if image.width < width:
                    path = f"{JPEG_DCT_PREFIX}{round(width / image.width)}"
                    # The fast path of a large JPEG: the whole file in one read, so libjpeg decodes it
                    # in one call instead of suspending and resuming at every 64 KiB block (3-5%
                    # less CPU on 12-MP photos, the same pixels).
                    image.decodermaxblock = ONE_BLOCK
            # Orientation and conversion happen while the file is open: a multi-frame file keeps
            # reading from it (TIFF EXIF), and leaving the block closes it whatever the format.
            return _finish(image, prep, name, path)
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as err:
        raise ImageDecodeError(name, f"refused by Pillow's decompression-bomb limit ({err})") from None
    except UnidentifiedImageError:
        raise ImageDecodeError(name, "not an image Pillow can read (unknown or unsupported format, "
                                     "e.g. HEIC without a plugin)") from None
    except MemoryError:
        raise ImageDecodeError(name, "out of memory while decoding") from None
    except PILLOW_FAILURES as err:
        raise ImageDecodeError(name, f"corrupt or truncated image ({type(err).__name__}: {err})") from None


def _open_bytes(source, name: str):
    """A binary stream over the source's bytes; the file's own problems are named here."""
    if isinstance(source, (bytes, bytearray)):
        if len(source) == 0:
            raise ImageDecodeError(name, "empty input (0 bytes)")
        return io.BytesIO(source)
    if not isinstance(source, (str, os.PathLike)):
        raise ImageDecodeError(name, "expected a path, bytes, a PIL image or a uint8 array")
    try:
        info = os.stat(source)
    except FileNotFoundError:
        raise ImageDecodeError(name, "broken symbolic link (its target does not exist)" if os.path.islink(source)
                               else "no such file") from None
    except (OSError, ValueError) as err:  # ELOOP, EACCES on a folder, a NUL in the name ...
        raise ImageDecodeError(name, f"cannot read the file ({getattr(err, 'strerror', None) or err})") from None
    if stat.S_ISDIR(info.st_mode):
        raise ImageDecodeError(name, "not a regular file (a directory)")
    if not stat.S_ISREG(info.st_mode):
        raise ImageDecodeError(name, "not a regular file")
    if info.st_size == 0:
        raise ImageDecodeError(name, "empty file (0 bytes)")
    try:
        return open(source, "rb")
    except OSError as err:
        raise ImageDecodeError(name, f"cannot open the file ({err.strerror or err})") from None


def _finish(image: Image.Image, prep, name: str, path: str | None = None) -> Image.Image:
    check_limits(name, image.width, image.height, prep)  # before the pixel buffer is allocated
    image.load()
    if prep.apply_exif_orientation:
        image = ImageOps.exif_transpose(image)
    rgb = to_rgb(to_srgb(image), prep, name)
    if path is not None:   # a file's decode; a caller's PIL image (maybe returned as is) is left alone
        rgb.info[DECODE_PATH_KEY] = path
    return rgb


def to_srgb(image: Image.Image) -> Image.Image:
    """Pixels with an embedded colour profile (Adobe RGB, Display P3, a CMYK press profile ...)
    converted to sRGB, what the models were trained on, where Pillow's littlecms can. sRGB profiles
    are left alone (no work, same pixels), as is an image whose profile littlecms rejects."""
    icc = image.info.get("icc_profile")
    if not icc or image.mode not in _ICC_MODES:
        return image
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if "srgb" in ImageCms.getProfileDescription(source).lower():
            return image
        return ImageCms.profileToProfile(image, source, _srgb_profile(), outputMode="RGBA" if "A" in image.mode else "RGB")
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return image


@functools.lru_cache(maxsize=1)
def _srgb_profile():
    return ImageCms.createProfile("sRGB")


def _image_from_array(array: np.ndarray, name: str, prep) -> Image.Image:
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ImageDecodeError(name, "expected an HxW, HxWx3 or HxWx4 array")
    if array.dtype != np.uint8:
        raise ImageDecodeError(name, f"expected uint8 pixels, got {array.dtype}")
    check_limits(name, array.shape[1], array.shape[0], prep)  # before the contiguous copy
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[array.shape[2]]
    return Image.fromarray(np.ascontiguousarray(array if mode != "L" else array[:, :, 0]), mode)


def to_rgb(image: Image.Image, prep, name: str = "<image>") -> Image.Image:
    """Step 3: any Pillow mode to 8-bit RGB, by the rules in runtime/preprocess.py's docstring."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        # round(v * 255 / 65535) = floor((v + 128) / 257) exactly for 0 <= v <= 65535 (no ties):
        # integer arithmetic, 4 bytes per pixel instead of float64's 8.
        values = np.clip(np.asarray(image), 0, 65535).astype(np.uint32)
        values += 128
        values //= 257
        return _gray_to_rgb(values.astype(np.uint8))
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        np.nan_to_num(values, copy=False, nan=0.0)
        values *= 255.0
        np.rint(values, out=values)
        np.clip(values, 0, 255, out=values)
        return _gray_to_rgb(values.astype(np.uint8))
    if mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, tuple(prep.alpha_background))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as err:
        raise ImageDecodeError(name, f"cannot convert mode {mode} to RGB ({err})") from None


def _gray_to_rgb(gray: np.ndarray) -> Image.Image:
    return Image.fromarray(gray, "L").convert("RGB")
