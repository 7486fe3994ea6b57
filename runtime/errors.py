"""The project's error types. Every one derives from :class:`PinetError`, which names its subject
(a file, an input item, a metadata field, an option) and the problem, so a caller such as the CLI
catches one type and prints one line.

Runtime kinds:

- image side (per item, never fatal to a batch): :class:`ImageDecodeError`, with
  :class:`ImageLimitError` for images past the documented size limits (runtime/geometry.py);
- model side (raised when a model file is opened, never per image): :class:`ModelFileError`;
- a model that returned a non-finite score for one image: :class:`NonFiniteScoreError`;
- data that breaks the model-file contract's schema: :class:`MetadataError` (a model file
  wraps it into ModelFileError naming the file and the metadata key).

The training, export and checkpoint packages derive their own kinds from PinetError.
"""

from __future__ import annotations

import os


class PinetError(ValueError):
    """A failure this toolkit explains: ``subject`` names what it is about, ``problem`` says what is wrong.

    ``PinetError(subject, problem)`` reads "subject: problem". ``PinetError(message)`` is for
    messages that already name their subject (e.g. an option's name): ``subject`` is then empty.
    """

    def __init__(self, subject: str | os.PathLike, problem: str | None = None):
        if problem is None:
            subject, problem = "", str(subject)
        self.subject = os.fspath(subject) if isinstance(subject, os.PathLike) else str(subject)
        self.problem = problem
        super().__init__(self.describe())

    def describe(self) -> str:
        return f"{self.subject}: {self.problem}" if self.subject else self.problem


class _ItemError(PinetError):
    """A failure of one input item: ``source_name`` names the item, ``problem`` says what went wrong."""

    def __init__(self, source_name: str, problem: str):
        self.source_name = source_name
        super().__init__(source_name, problem)


class ImageDecodeError(_ItemError):
    """An input could not be turned into crops; the message names the input and the problem."""


class ImageLimitError(ImageDecodeError):
    """The image's size or aspect ratio is past a documented limit; refused before any pixel
    buffer of that size is allocated."""


class NonFiniteScoreError(_ItemError):
    """The model returned NaN or an infinity for this image: never reported as a score."""


class MetadataError(PinetError):
    """A contract value breaks the schema; ``field`` names it, the message gives the allowed range."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(field, message)

    def describe(self) -> str:
        return self.problem  # the schema's messages already say which value of which key is wrong


class ModelFileError(PinetError):
    """A model file cannot be used; the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = os.fspath(path)
        super().__init__(self.path, problem)


class NoDefaultModelError(ModelFileError):
    """This install carries no bundled default model (the caller must name a model file)."""
