"""Size arithmetic of the contract and the limits that bound the work and memory per image.

Every limit is checked on the size an image *declares* (file header, array shape, Pillow size)
before a pixel buffer of that size is allocated; an image past one is refused with
:class:`ImageLimitError` naming the input and the limit. docs/runtime.md lists them.
"""

from __future__ import annotations

from pinet_runtime.errors import ImageDecodeError, ImageLimitError

# Per image. 2**26 = 8192 x 8192: a 64 MP decoded image is at most ~1 GB of intermediate buffers
# (16-bit and float images are the costliest conversions). JPEGs are checked after libjpeg's
# DCT scaling (jpeg_draft), so camera photos far larger than this still score.
MAX_DECODED_PIXELS = 1 << 26
# The image after step 4 (resize), when a resize happens: 2**24 = 4096 x 4096.
MAX_RESIZED_PIXELS = 1 << 24
# long side / short side. Phone panoramas stay under 10:1; a 1 x 65535 strip would otherwise be
# "upscaled" to a 384 x 25 million image.
MAX_ASPECT_RATIO = 20
# Schema bounds of the stored preprocessing (checked when a model is opened).
MIN_CROP_SIZE = 8
MAX_CROP_SIZE = 1024
MAX_RESIZE_SHORT_SIDE = 4096
MAX_GRID = 16
MAX_CROP_PIXELS = 1 << 24   # crops per image x crop_size^2 (float32 input of 192 MiB at most)


def target_size(width: int, height: int, prep) -> tuple[int, int]:
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


def check_shape(name: str, width: int, height: int) -> None:
    """No pixels, or an aspect ratio past MAX_ASPECT_RATIO: refused (needs only the header)."""
    if width < 1 or height < 1:
        raise ImageDecodeError(name, f"image has no pixels ({width}x{height})")
    long_side, short_side = max(width, height), min(width, height)
    if long_side > MAX_ASPECT_RATIO * short_side:
        raise ImageLimitError(name, f"aspect ratio of {width}x{height} is {long_side / short_side:.0f}:1, past the "
                                    f"limit of {MAX_ASPECT_RATIO}:1 (MAX_ASPECT_RATIO)")


def check_limits(name: str, width: int, height: int, prep) -> tuple[int, int]:
    """All per-image limits for an image about to be decoded at width x height; returns the
    size step 4 will resize it to."""
    check_shape(name, width, height)
    if width * height > MAX_DECODED_PIXELS:
        raise ImageLimitError(name, f"{width}x{height} = {width * height} pixels, past the decoded-size limit of "
                                    f"{MAX_DECODED_PIXELS} pixels (MAX_DECODED_PIXELS)")
    size = target_size(width, height, prep)
    if size != (width, height) and size[0] * size[1] > MAX_RESIZED_PIXELS:
        raise ImageLimitError(name, f"{width}x{height} would be resized to {size[0]}x{size[1]} = {size[0] * size[1]} "
                                    f"pixels, past the resized-size limit of {MAX_RESIZED_PIXELS} pixels "
                                    "(MAX_RESIZED_PIXELS)")
    return size
