"""The model-file contract: the metadata every exported PINet ONNX file carries (``metadata_props``).

:class:`ModelMetadata` is the one typed form of it. The exporter builds one and writes
``to_props()``; the runtime reads ``ModelMetadata.from_props()``; nobody else parses the keys.
Everything the runtime needs (preprocessing, the score's meaning, the model's identity) travels
inside the file. A missing or malformed field is refused with one message naming the key, the
field and the allowed values.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime

from pinet_runtime.errors import MetadataError, ModelFileError
from pinet_runtime.preprocess import Preprocessing
from pinet_runtime.schema import boolean, choice, integer, is_int, shown, text

PREPROCESSING = "pinet.preprocessing"      # Preprocessing.to_json()
SCORE_MEANING = "pinet.score_meaning"      # {"name", "range", "higher_is_better"}, from the preprocessing
MODEL_CONFIG = "pinet.model_config"        # ModelConfig as JSON
VARIANT = "pinet.variant"
STAGE = "pinet.stage"
PRECISION = "pinet.precision"              # fp32 | fp16 | int8
CALIBRATION = "pinet.calibration"          # JSON summary, "none" for fp32/fp16
SOURCE_SHA256 = "pinet.source_checkpoint_sha256"
PINET_VERSION = "pinet.version"
EXPORT_DATE = "pinet.export_date"
FORMAT_VERSION = "pinet.onnx_format_version"
PARAMETERS = "pinet.parameters"            # parameter count; written by export, optional on read (older files)
# What the graph takes: "crops" (the runtime's crops model; absent in files of before the key) or
# "image" (the end-to-end graph of `pinet export --end-to-end`: uint8 pixels in, one score out).
INTERFACE = "pinet.interface"
# Conventions of the ONNX model zoo / Windows ML for image inputs.
BITMAP_PIXEL_FORMAT = "Image.BitmapPixelFormat"
NOMINAL_PIXEL_RANGE = "Image.NominalPixelRange"
# ONNX's image metadata (docs/MetadataProps.md) has no value for per-channel standardised input
# ((x/255 - mean) / std, mean/std in pinet.preprocessing), so we say exactly that; the input carries
# no IMAGE type denotation, so Windows ML-style consumers do not act on the key. Pixels are RGB.
NOMINAL_PIXEL_RANGE_VALUE = "Standardized_MeanStd"
BITMAP_PIXEL_FORMAT_VALUE = "Rgb8"
# The end-to-end graph takes raw 8-bit pixels, ONNX's NominalRange_0_255.
E2E_PIXEL_RANGE_VALUE = "NominalRange_0_255"

ONNX_FORMAT_VERSION = 1
REQUIRED_KEYS = (
    PREPROCESSING, SCORE_MEANING, MODEL_CONFIG, VARIANT, STAGE, PRECISION, CALIBRATION,
    SOURCE_SHA256, PINET_VERSION, EXPORT_DATE, FORMAT_VERSION, BITMAP_PIXEL_FORMAT,
    NOMINAL_PIXEL_RANGE,
)
INPUT_NAME = "crops"
OUTPUT_NAME = "scores"
E2E_INPUT_NAME = "image"     # uint8 [H, W, 3], upright RGB
E2E_OUTPUT_NAME = "score"    # float32 scalar: the image's score (mean over the contract's crops)
CROPS_INTERFACE, IMAGE_INTERFACE = "crops", "image"
INTERFACES = (CROPS_INTERFACE, IMAGE_INTERFACE)
PIXEL_RANGES = {CROPS_INTERFACE: NOMINAL_PIXEL_RANGE_VALUE, IMAGE_INTERFACE: E2E_PIXEL_RANGE_VALUE}
PRECISIONS = ("fp32", "fp16", "int8")
SCORING_STAGE = 2
MAX_PARAMETERS = 10 ** 12
_OPTIONAL_KEYS = (PARAMETERS, INTERFACE)
CALIBRATION_FLAGS = ("reduce_range", "portable")  # booleans when present; the rest is free-form
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ModelMetadata:
    """Every PINet metadata key, typed. Validated on construction (MetadataError names the key)."""

    preprocessing: Preprocessing
    model_config: dict
    variant: str
    precision: str
    source_sha256: str
    pinet_version: str
    export_date: str
    calibration: dict | None = None           # None for fp32/fp16 ("none" in the file)
    parameters: int | None = None             # None only for files exported before it was written
    stage: int = SCORING_STAGE
    format_version: int = ONNX_FORMAT_VERSION
    bitmap_pixel_format: str = BITMAP_PIXEL_FORMAT_VALUE
    nominal_pixel_range: str = NOMINAL_PIXEL_RANGE_VALUE
    interface: str = CROPS_INTERFACE
    extra: dict = field(default_factory=dict)  # other keys of the file (e.g. onnxruntime's), kept verbatim

    def __post_init__(self) -> None:
        # Free-form JSON parts are kept as JSON would give them back (lists, not tuples).
        for name in ("model_config", "calibration"):
            value = getattr(self, name)
            if isinstance(value, dict):
                object.__setattr__(self, name, json.loads(json.dumps(value)))
        for key, problem in self._problems():
            if problem:
                raise MetadataError(key, f"metadata {key}: {problem}")

    def _problems(self):
        prep, calibration, config = self.preprocessing, self.calibration, self.model_config
        yield PREPROCESSING, None if isinstance(prep, Preprocessing) else f"expected a Preprocessing, got {shown(prep)}"
        yield MODEL_CONFIG, None if isinstance(config, dict) else f"must be a JSON object, got {shown(config)}"
        yield VARIANT, text("variant", self.variant)
        if isinstance(config, dict) and "variant" in config and config["variant"] != self.variant:
            yield MODEL_CONFIG, f"variant {shown(config['variant'])} disagrees with {VARIANT} {shown(self.variant)}"
        yield PRECISION, choice("precision", self.precision, PRECISIONS)
        yield SOURCE_SHA256, None if isinstance(self.source_sha256, str) and _SHA256.fullmatch(self.source_sha256) \
            else f"must be 64 lowercase hex digits, got {shown(self.source_sha256)}"
        yield PINET_VERSION, text("version", self.pinet_version, 64)
        yield EXPORT_DATE, _iso_date_problem(self.export_date)
        if calibration is not None and not isinstance(calibration, dict):
            yield CALIBRATION, f"must be a JSON object or \"none\", got {shown(calibration)}"
        for flag in CALIBRATION_FLAGS if isinstance(calibration, dict) else ():
            if flag in calibration:
                yield CALIBRATION, boolean(flag, calibration[flag])
        if self.parameters is not None:
            yield PARAMETERS, integer("parameters", self.parameters, 1, MAX_PARAMETERS)
        yield STAGE, None if self.stage == SCORING_STAGE and is_int(self.stage) else \
            f"must be {SCORING_STAGE} (a scoring model), got {shown(self.stage)}"
        yield FORMAT_VERSION, integer("format version", self.format_version, 1, ONNX_FORMAT_VERSION)
        yield BITMAP_PIXEL_FORMAT, choice("pixel format", self.bitmap_pixel_format, (BITMAP_PIXEL_FORMAT_VALUE,))
        yield INTERFACE, choice("interface", self.interface, INTERFACES)
        if self.interface in INTERFACES:
            yield NOMINAL_PIXEL_RANGE, choice("pixel range", self.nominal_pixel_range, (PIXEL_RANGES[self.interface],))
        yield "extra", None if isinstance(self.extra, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.extra.items()) else "extra keys must be strings"

    @property
    def score_meaning(self) -> dict:
        """{"name", "range", "higher_is_better"}: derived from the preprocessing, never stored apart."""
        prep = self.preprocessing
        return {"name": prep.score_name, "range": list(prep.score_range), "higher_is_better": prep.higher_is_better}

    def to_props(self) -> dict[str, str]:
        """Every key as the string ONNX ``metadata_props`` holds (extra keys included)."""
        props = dict(self.extra)
        props.update({
            PREPROCESSING: self.preprocessing.to_json(),
            SCORE_MEANING: json.dumps(self.score_meaning, sort_keys=True),
            MODEL_CONFIG: json.dumps(self.model_config, sort_keys=True),
            VARIANT: self.variant,
            STAGE: str(self.stage),
            PRECISION: self.precision,
            CALIBRATION: "none" if self.calibration is None else json.dumps(self.calibration, sort_keys=True),
            SOURCE_SHA256: self.source_sha256,
            PINET_VERSION: self.pinet_version,
            EXPORT_DATE: self.export_date,
            FORMAT_VERSION: str(self.format_version),
            BITMAP_PIXEL_FORMAT: self.bitmap_pixel_format,
            NOMINAL_PIXEL_RANGE: self.nominal_pixel_range,
        })
        if self.parameters is not None:
            props[PARAMETERS] = str(self.parameters)
        if self.interface != CROPS_INTERFACE:  # crops files keep exactly the keys they always had
            props[INTERFACE] = self.interface
        return props

    @classmethod
    def from_props(cls, props: dict, path: str | os.PathLike) -> "ModelMetadata":
        """Parse and validate a file's metadata; ModelFileError naming ``path`` and the key otherwise."""
        missing = [key for key in REQUIRED_KEYS if not props.get(key)]
        if missing:
            raise ModelFileError(path, "not an exported PINet model: metadata keys missing: " + ", ".join(missing))
        version = _int(path, props, FORMAT_VERSION)
        if version > ONNX_FORMAT_VERSION:
            raise ModelFileError(path, f"ONNX format version {version} is newer than this runtime's "
                                       f"{ONNX_FORMAT_VERSION}; upgrade pinet-iqa")
        try:
            prep = Preprocessing.from_dict(_json(path, props, PREPROCESSING), require_all=True)
        except (TypeError, ValueError) as err:
            raise ModelFileError(path, f"metadata {PREPROCESSING} is not usable ({err})") from None
        _check_score_meaning(path, _json(path, props, SCORE_MEANING), prep)
        calibration = None if props[CALIBRATION] == "none" else _json(path, props, CALIBRATION)
        try:
            return cls(preprocessing=prep, model_config=_json(path, props, MODEL_CONFIG), variant=props[VARIANT],
                       precision=props[PRECISION], source_sha256=props[SOURCE_SHA256],
                       pinet_version=props[PINET_VERSION], export_date=props[EXPORT_DATE], calibration=calibration,
                       parameters=_int(path, props, PARAMETERS) if props.get(PARAMETERS) else None,
                       stage=_int(path, props, STAGE), format_version=version,
                       bitmap_pixel_format=props[BITMAP_PIXEL_FORMAT], nominal_pixel_range=props[NOMINAL_PIXEL_RANGE],
                       interface=props.get(INTERFACE, CROPS_INTERFACE),
                       extra={k: v for k, v in props.items() if k not in REQUIRED_KEYS + _OPTIONAL_KEYS})
        except MetadataError as err:
            raise ModelFileError(path, str(err)) from None


def _iso_date_problem(value) -> str | None:
    try:
        datetime.fromisoformat(value)
        return None
    except (TypeError, ValueError):
        return f"must be an ISO 8601 date, got {shown(value)}"


def _json(path, props: dict, key: str) -> dict:
    try:
        value = json.loads(props[key])
    except (ValueError, RecursionError) as err:  # JSONDecodeError is a ValueError; so is a 5000-digit int
        raise ModelFileError(path, f"metadata {key} is not valid JSON ({err})") from None
    if not isinstance(value, dict):
        raise ModelFileError(path, f"metadata {key} should be a JSON object, got {type(value).__name__}")
    return value


def _int(path, props: dict, key: str) -> int:
    value = props[key].strip()
    if not re.fullmatch(r"[+-]?[0-9]{1,19}", value):
        raise ModelFileError(path, f"metadata {key} should be an integer, got {shown(props[key])}")
    return int(value)


def _check_score_meaning(path, meaning: dict, prep: Preprocessing) -> None:
    """The stored score meaning must be well typed and agree with the preprocessing's."""
    problems = [text("name", meaning.get("name")), boolean("higher_is_better", meaning.get("higher_is_better"))]
    stored_range = meaning.get("range")
    if not (isinstance(stored_range, list) and len(stored_range) == 2):
        problems.append(f"range must be [low, high], got {shown(stored_range)}")
    problems = [p for p in problems if p]
    if not problems:
        expected = {"name": prep.score_name, "range": list(prep.score_range), "higher_is_better": prep.higher_is_better}
        unknown = sorted(set(meaning) - set(expected))
        differing = [k for k in expected if meaning[k] != expected[k]]
        if unknown:
            problems.append(f"unknown fields {unknown}")
        elif differing:
            problems.append(f"{', '.join(differing)} disagree(s) with {PREPROCESSING} "
                            f"({shown({k: meaning[k] for k in differing})} vs {shown({k: expected[k] for k in differing})})")
    if problems:
        raise ModelFileError(path, f"metadata {SCORE_MEANING}: " + "; ".join(problems))
