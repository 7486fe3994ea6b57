"""The runtime's error types: one per failure kind, each naming its subject and the problem.

- image side (per item, never fatal to a batch): :class:`ImageDecodeError`, with
  :class:`ImageLimitError` for images past the documented size limits (runtime/geometry.py);
- model side (raised when a model file is opened, never per image): :class:`ModelFileError`;
- a model that returned a non-finite score for one image: :class:`NonFiniteScoreError`;
- data that breaks the model-file contract's schema: :class:`MetadataError` (a model file
  wraps it into ModelFileError naming the file and the metadata key).
"""

from __future__ import annotations

import os


class _ItemError(ValueError):
    """A failure of one input item: ``source_name`` names the item, ``problem`` says what went wrong."""

    def __init__(self, source_name: str, problem: str):
        self.source_name = source_name
        self.problem = problem
        super().__init__(f"{source_name}: {problem}")


class ImageDecodeError(_ItemError):
    """An input could not be turned into crops; the message names the input and the problem."""


class ImageLimitError(ImageDecodeError):
    """The image's size or aspect ratio is past a documented limit; refused before any pixel
    buffer of that size is allocated."""


class NonFiniteScoreError(_ItemError):
    """The model returned NaN or an infinity for this image: never reported as a score."""


class MetadataError(ValueError):
    """A contract value breaks the schema; ``field`` names it, the message gives the allowed range."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(message)


class ModelFileError(ValueError):
    """A model file cannot be used; the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class NoDefaultModelError(ModelFileError):
    """This install carries no bundled default model (the caller must name a model file)."""
