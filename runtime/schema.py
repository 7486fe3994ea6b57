"""The schema of the model-file contract: typed checks with one message per field.

Every check returns ``None`` or a problem that names the field and the allowed values. JSON
read from a file is checked as it is: ``224.0`` is not an integer, ``"false"`` is not a
boolean, ``NaN`` is not a finite number. :class:`pinet_runtime.preprocess.Preprocessing` and
:class:`pinet_runtime.metadata.ModelMetadata` validate themselves with these on construction.
"""

from __future__ import annotations

from pinet_runtime.geometry import MAX_CROP_PIXELS, MAX_CROP_SIZE, MAX_GRID, MAX_RESIZE_SHORT_SIDE, \
    MIN_CROP_SIZE

CONTRACT_VERSION = 1
CROP_LAYOUTS = ("center", "center_corners", "grid")
RESIZE_FILTERS = ("bicubic", "bilinear", "lanczos")
MEAN_RANGE = (-1000.0, 1000.0)
STD_RANGE = (1e-4, 1000.0)
SCORE_BOUND = 1e9          # |score_range| ends
MAX_TEXT = 200             # characters of a name


def shown(value) -> str:
    """repr() cut to a readable length (a hostile file may hold megabytes in one field)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def integer(field: str, value, low: int, high: int) -> str | None:
    if is_int(value) and low <= value <= high:
        return None
    return f"{field} must be an integer in [{low}, {high}], got {shown(value)}"


def boolean(field: str, value) -> str | None:
    if isinstance(value, bool):
        return None
    return f"{field} must be a boolean (true or false), got {shown(value)}"


def choice(field: str, value, allowed: tuple) -> str | None:
    if isinstance(value, str) and value in allowed:
        return None
    return f"{field} must be one of {list(allowed)}, got {shown(value)}"


def text(field: str, value, max_length: int = MAX_TEXT) -> str | None:
    if isinstance(value, str) and 0 < len(value) <= max_length and value.isprintable():
        return None
    return f"{field} must be a non-empty printable string of at most {max_length} characters, got {shown(value)}"


def numbers(field: str, value, count: int, low: float, high: float) -> str | None:
    """``count`` finite numbers in [low, high] (NaN and infinities fail the range test)."""
    if isinstance(value, (list, tuple)) and len(value) == count \
            and all(is_number(v) and low <= v <= high for v in value):
        return None
    return f"{field} must be {count} finite numbers in [{low:g}, {high:g}], got {shown(value)}"


def integers(field: str, value, count: int, low: int, high: int) -> str | None:
    if isinstance(value, (list, tuple)) and len(value) == count and all(is_int(v) and low <= v <= high for v in value):
        return None
    return f"{field} must be {count} integers in [{low}, {high}], got {shown(value)}"


def preprocessing_problems(prep) -> list[str]:
    """Every schema problem of a Preprocessing (empty when valid)."""
    version = prep.contract_version
    problems = [
        f"contract_version {version} is newer than this toolkit's {CONTRACT_VERSION}"
        if is_int(version) and version > CONTRACT_VERSION else integer("contract_version", version, 1, CONTRACT_VERSION),
        boolean("apply_exif_orientation", prep.apply_exif_orientation),
        integers("alpha_background", prep.alpha_background, 3, 0, 255),
        boolean("jpeg_draft", prep.jpeg_draft),
        choice("resize_filter", prep.resize_filter, RESIZE_FILTERS),
        integer("crop_size", prep.crop_size, MIN_CROP_SIZE, MAX_CROP_SIZE),
        choice("crop_layout", prep.crop_layout, CROP_LAYOUTS),
        integer("grid_rows", prep.grid_rows, 1, MAX_GRID),
        integer("grid_cols", prep.grid_cols, 1, MAX_GRID),
        numbers("mean", prep.mean, 3, *MEAN_RANGE),
        numbers("std", prep.std, 3, *STD_RANGE),
        text("score_name", prep.score_name),
        numbers("score_range", prep.score_range, 2, -SCORE_BOUND, SCORE_BOUND),
        boolean("higher_is_better", prep.higher_is_better),
    ]
    crop_ok = is_int(prep.crop_size) and MIN_CROP_SIZE <= prep.crop_size <= MAX_CROP_SIZE
    resize = prep.resize_short_side
    if resize is not None:
        low = prep.crop_size if crop_ok else MIN_CROP_SIZE
        if not (is_int(resize) and low <= resize <= MAX_RESIZE_SHORT_SIDE):
            why = " (below crop_size)" if is_int(resize) and resize < low and crop_ok else ""
            problems.append(f"resize_short_side must be null or an integer in [crop_size={low}, "
                            f"{MAX_RESIZE_SHORT_SIDE}], got {shown(resize)}{why}")
    if not any(problems) and prep.score_range[0] >= prep.score_range[1]:
        problems.append(f"score_range must be [low, high] with low < high, got {shown(prep.score_range)}")
    if not any(problems) and crop_ok:
        crops = prep.num_crops
        if crops * prep.crop_size ** 2 > MAX_CROP_PIXELS:
            problems.append(f"crop_size and the layout make {crops} crops of {prep.crop_size}x{prep.crop_size} = "
                            f"{crops * prep.crop_size ** 2} pixels, above the limit of {MAX_CROP_PIXELS}")
    return [problem for problem in problems if problem]
