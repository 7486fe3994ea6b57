"""Names of the metadata keys every exported PINet ONNX file carries (``metadata_props``).

The runtime needs nothing but these keys and the graph: preprocessing, the score's meaning
and the model's identity all travel inside the file.
"""

from __future__ import annotations

PREPROCESSING = "pinet.preprocessing"      # Preprocessing.to_json()
SCORE_MEANING = "pinet.score_meaning"      # {"name", "range", "higher_is_better"} as JSON
MODEL_CONFIG = "pinet.model_config"        # ModelConfig as JSON
VARIANT = "pinet.variant"
STAGE = "pinet.stage"
PRECISION = "pinet.precision"              # fp32 | fp16 | int8
CALIBRATION = "pinet.calibration"          # JSON summary, "none" for fp32/fp16
SOURCE_SHA256 = "pinet.source_checkpoint_sha256"
PINET_VERSION = "pinet.version"
EXPORT_DATE = "pinet.export_date"
FORMAT_VERSION = "pinet.onnx_format_version"
# Conventions of the ONNX model zoo / Windows ML for image inputs.
BITMAP_PIXEL_FORMAT = "Image.BitmapPixelFormat"
NOMINAL_PIXEL_RANGE = "Image.NominalPixelRange"

ONNX_FORMAT_VERSION = 1
REQUIRED_KEYS = (
    PREPROCESSING, SCORE_MEANING, MODEL_CONFIG, VARIANT, STAGE, PRECISION, CALIBRATION,
    SOURCE_SHA256, PINET_VERSION, EXPORT_DATE, FORMAT_VERSION, BITMAP_PIXEL_FORMAT,
    NOMINAL_PIXEL_RANGE,
)
INPUT_NAME = "crops"
OUTPUT_NAME = "scores"
