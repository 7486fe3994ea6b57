"""The metadata every exported PINet ONNX file carries (key names from pinet_runtime.metadata)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from pinet import __version__
from pinet_runtime import metadata as keys
from pinet_runtime.preprocess import Preprocessing

# ONNX's image metadata (docs/MetadataProps.md) lists NominalRange_0_255, Normalized_0_1,
# Normalized_1_1 and NominalRange_16_235. None is true of our input: crops are standardised
# per channel ((x/255 - mean) / std, mean/std in pinet.preprocessing), so we say exactly that
# rather than pick a convention value a consumer would apply wrongly. The input tensor carries
# no IMAGE type denotation, so Windows ML-style consumers do not act on this key.
NOMINAL_PIXEL_RANGE_VALUE = "Standardized_MeanStd"
# The preprocessing decodes to 8-bit RGB before cropping.
BITMAP_PIXEL_FORMAT_VALUE = "Rgb8"


def score_meaning(prep: Preprocessing) -> str:
    return json.dumps({"name": prep.score_name, "range": list(prep.score_range),
                       "higher_is_better": prep.higher_is_better}, sort_keys=True)


def build_metadata(model_config, prep: Preprocessing, precision: str, source_sha256: str,
                   calibration: dict | None = None) -> dict[str, str]:
    """All REQUIRED_KEYS as strings; ``calibration`` is None for fp32/fp16 ("none")."""
    values = {
        keys.PREPROCESSING: prep.to_json(),
        keys.SCORE_MEANING: score_meaning(prep),
        keys.MODEL_CONFIG: model_config.to_json(),
        keys.VARIANT: model_config.variant,
        keys.STAGE: "2",
        keys.PRECISION: precision,
        keys.CALIBRATION: "none" if calibration is None else json.dumps(calibration, sort_keys=True),
        keys.SOURCE_SHA256: source_sha256,
        keys.PINET_VERSION: __version__,
        keys.EXPORT_DATE: datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        keys.FORMAT_VERSION: str(keys.ONNX_FORMAT_VERSION),
        keys.BITMAP_PIXEL_FORMAT: BITMAP_PIXEL_FORMAT_VALUE,
        keys.NOMINAL_PIXEL_RANGE: NOMINAL_PIXEL_RANGE_VALUE,
    }
    missing = [key for key in keys.REQUIRED_KEYS if key not in values]
    if missing:  # a key added to the runtime's list must be added here too
        raise RuntimeError(f"export does not fill metadata keys {missing}")
    return values


def set_metadata(model_proto, values: dict[str, str]) -> None:
    """Replace the given keys in ``model_proto.metadata_props``, keeping any others."""
    kept = [(p.key, p.value) for p in model_proto.metadata_props if p.key not in values]
    del model_proto.metadata_props[:]
    for key, value in [*kept, *values.items()]:
        entry = model_proto.metadata_props.add()
        entry.key, entry.value = key, value


def drop_metadata_prefix(model_proto, prefix: str) -> None:
    kept = [(p.key, p.value) for p in model_proto.metadata_props if not p.key.startswith(prefix)]
    del model_proto.metadata_props[:]
    for key, value in kept:
        entry = model_proto.metadata_props.add()
        entry.key, entry.value = key, value


def read_metadata(model_proto) -> dict[str, str]:
    return {p.key: p.value for p in model_proto.metadata_props}


def missing_keys(model_proto) -> list[str]:
    present = read_metadata(model_proto)
    return [key for key in keys.REQUIRED_KEYS if not present.get(key)]
