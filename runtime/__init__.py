"""Torch-free PINet scoring: numpy, Pillow and onnxruntime only.

This package never imports torch nor any other pinet package; a test proves it.
"""

from pinet_runtime.preprocess import (
    DEFAULT_PREPROCESSING,
    ImageDecodeError,
    Preprocessing,
    preprocess,
)

__all__ = ["Preprocessing", "DEFAULT_PREPROCESSING", "ImageDecodeError", "preprocess"]
