"""Torch-free PINet scoring: numpy, Pillow and onnxruntime only.

This package never imports torch nor any other pinet package; a test proves it.

    from pinet_runtime import Scorer
    scorer = Scorer("model.onnx", providers="auto")
    print(scorer.score("photo.jpg"))
"""

from pinet_runtime.errors import (
    ImageDecodeError,
    ImageLimitError,
    MetadataError,
    ModelFileError,
    NonFiniteScoreError,
    PinetError,
)
from pinet_runtime.preprocess import DEFAULT_PREPROCESSING, Preprocessing, preprocess

# The scoring API loads onnxruntime; it is imported on first use so that code needing only the
# preprocessing contract (training, export validation) does not pay for it.
_LAZY = {
    "Scorer": "pinet_runtime.scorer",
    "ScoreResult": "pinet_runtime.scorer",
    "ProviderFallbackWarning": "pinet_runtime.scorer",
    "ModelMetadata": "pinet_runtime.metadata",
    "ModelInfo": "pinet_runtime.model_file",
    "read_model_info": "pinet_runtime.model_file",
    "default_model_path": "pinet_runtime.model_file",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pinet_runtime' has no attribute {name!r}")


__all__ = ["Preprocessing", "DEFAULT_PREPROCESSING", "ImageDecodeError", "ImageLimitError", "NonFiniteScoreError",
           "ModelFileError", "MetadataError", "PinetError", "preprocess", *_LAZY]
