"""Scoring images with an exported PINet model: the API camera apps embed.

    from pinet_runtime import Scorer
    scorer = Scorer("model.onnx")            # or Scorer() for the bundled default model
    print(scorer.score("photo.jpg"))         # mean of the per-crop scores
    for result in scorer.score_many(paths):  # per-item errors, input order
        print(result.source, result.score, result.error)
"""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence, Union

import numpy as np
import onnxruntime as ort

from pinet_runtime.decode import PILLOW_FAILURES
from pinet_runtime.errors import NonFiniteScoreError
from pinet_runtime.int8_probe import u8s8_saturates
from pinet_runtime.metadata import CROPS_INTERFACE
from pinet_runtime.model_file import ModelFileError, ModelInfo, default_model_path, int8_is_safe_here, \
    load_session, model_info_from_session
from pinet_runtime.model_file import ORT_ERRORS
from pinet_runtime.preprocess import ImageDecodeError, ImageSource, describe_source, preprocess

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
PROVIDER_CHOICES = ("auto", "cpu", "cuda")
ProviderRequest = Union[str, Sequence[Union[str, tuple]]]
logger = logging.getLogger(__name__)

# preprocess() turns every image-side failure into ImageDecodeError; this safety net keeps any
# failure it might miss (a Pillow plugin's novel exception) to that item in a batch.
_DECODER_FAILURES = PILLOW_FAILURES


class ProviderFallbackWarning(UserWarning):
    """A requested onnxruntime execution provider is not in use; scoring runs on another one."""


@dataclass(frozen=True)
class ScoreResult:
    """One input's outcome: a score, or an error message naming the input and the problem."""

    source: str
    score: float | None
    error: str | None
    crops: int
    seconds: float

    @property
    def ok(self) -> bool:
        return self.error is None


def requested_providers(providers: ProviderRequest) -> list:
    """The provider list to ask onnxruntime for, from "auto" | "cpu" | "cuda" | an explicit list."""
    if isinstance(providers, str):
        choice = providers.lower()
        if choice == "cpu":
            return [CPU]
        if choice == "cuda":
            return [CUDA, CPU]
        if choice == "auto":
            # The GPU build lists CUDA; whether a GPU is really there shows after session creation.
            return [CUDA, CPU] if CUDA in ort.get_available_providers() else [CPU]
        raise ValueError(f"providers {providers!r} is not one of {PROVIDER_CHOICES} nor a list of provider names")
    listed = list(providers)
    if not listed:
        raise ValueError("providers list is empty")
    return listed


def _provider_name(provider) -> str:
    return provider[0] if isinstance(provider, tuple) else provider


class Scorer:
    """Scores images with one exported PINet ONNX model.

    Safe to share between threads: after construction nothing on ``self`` changes, and
    onnxruntime's ``InferenceSession.run`` is thread-safe.
    """

    def __init__(self, model: str | os.PathLike | None = None, providers: ProviderRequest = "auto",
                 threads: int | None = None):
        wanted = requested_providers(providers)
        available = ort.get_available_providers()
        usable = [p for p in wanted if _provider_name(p) in available]
        unavailable = [_provider_name(p) for p in wanted if _provider_name(p) not in available]
        if not usable:
            usable = [CPU]
        explicit = not (isinstance(providers, str) and providers.lower() == "auto")
        default_model = model is None
        if default_model:
            # INT8 QDQ is the fast choice on CPUs but slow on CUDA (docs/export.md): ship FP32 there.
            on_cuda = _provider_name(usable[0]) == CUDA
            model = default_model_path("fp32" if on_cuda else "int8")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads is not None:
            if threads < 1:
                raise ValueError(f"threads must be >= 1, got {threads}")
            options.intra_op_num_threads = threads
        self._session = load_session(model, options, usable)
        self.info: ModelInfo = model_info_from_session(model, self._session)
        if self.info.interface != CROPS_INTERFACE:
            raise ModelFileError(model, "an end-to-end model (input 'image': uint8 [H, W, 3] pixels, output one "
                                        "score); pinet_runtime scores the crops model it was built from "
                                        "(model.onnx / model.int8.onnx). Run this file with onnxruntime directly "
                                        "(examples/score_e2e.py)")
        if default_model and self.info.precision == "int8" and not int8_is_safe_here(self.info, u8s8_saturates()):
            # Only a non-portable INT8 file (full 8-bit weights) can saturate here; portable ones never fall back.
            logger.warning("%s has full 8-bit INT8 weights, which saturate this machine's onnxruntime U8S8 "
                           "kernels (x86 without VNNI): scoring with the bundled FP32 model instead", model)
            model = default_model_path("fp32")   # the bundled FP32 file: exact everywhere
            self._session = load_session(model, options, usable)
            self.info = model_info_from_session(model, self._session)
        self.providers: list[str] = list(self._session.get_providers())
        fell_back = unavailable + [_provider_name(p) for p in usable
                                   if _provider_name(p) not in self.providers]
        if fell_back:
            message = (f"execution provider(s) {', '.join(dict.fromkeys(fell_back))} not in use "
                       f"(available in this onnxruntime: {', '.join(available)}); scoring runs on "
                       f"{', '.join(self.providers)}")
            if explicit:
                warnings.warn(message, ProviderFallbackWarning, stacklevel=2)
            else:
                logger.info(message)
        self._input_name = self.info.input.name
        self._output_name = self.info.output.name
        batch_axis = self.info.input.shape[0]
        self._fixed_batch = batch_axis if isinstance(batch_axis, int) and batch_axis > 0 else None
        self._input_dtype = np.float16 if self.info.input.element_type == "tensor(float16)" else np.float32

    @property
    def preprocessing(self):
        return self.info.preprocessing

    @property
    def higher_is_better(self) -> bool:
        return self.info.higher_is_better

    def crops(self, source: ImageSource) -> np.ndarray:
        """The model input for one image (float32 [N, 3, S, S]); raises ImageDecodeError."""
        return preprocess(source, self.info.preprocessing)

    def score_crops(self, crops: np.ndarray) -> np.ndarray:
        """Per-crop scores (float64 [N]) for already preprocessed crops."""
        crops = np.asarray(crops, dtype=self._input_dtype)
        if self._fixed_batch is None:
            return self._run(crops)
        # A model exported with a fixed batch: run in chunks of that size, padding the last one.
        size = self._fixed_batch
        parts = []
        for start in range(0, len(crops), size):
            chunk = crops[start:start + size]
            padded = np.concatenate([chunk, np.repeat(chunk[-1:], size - len(chunk), axis=0)])
            parts.append(self._run(padded)[:len(chunk)])
        return np.concatenate(parts) if parts else np.zeros(0)

    def _run(self, crops: np.ndarray) -> np.ndarray:
        try:
            (scores,) = self._session.run([self._output_name], {self._input_name: crops})
        except ORT_ERRORS as err:  # the graph itself fails: a model-side fault, whatever the image
            first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise ModelFileError(self.info.path, f"onnxruntime failed to run the model ({first_line})") from None
        scores = np.asarray(scores, dtype=np.float64)
        if scores.size != len(crops):
            raise ModelFileError(self.info.path, f"output {self._output_name!r} has shape {list(scores.shape)} "
                                                 f"for {len(crops)} crops; expected one score per crop")
        return scores.reshape(len(crops))

    def score(self, source: ImageSource) -> float:
        """The image's score: the mean of its per-crop scores. Raises ImageDecodeError for a bad
        image and NonFiniteScoreError when the model returns NaN or an infinity for it."""
        value = float(np.mean(self.score_crops(self.crops(source))))
        if not math.isfinite(value):
            raise NonFiniteScoreError(describe_source(source), _non_finite(value))
        return value

    def score_many(self, items: Iterable[ImageSource], batch_size: int = 8,
                   prefetch: bool = True) -> Iterator[ScoreResult]:
        """Score many images, yielding one ScoreResult per item in input order.

        Bad items give a result with ``error`` set and the run goes on. The crops of up to
        ``batch_size`` images go through the model in one session run. With ``prefetch`` one
        worker thread decodes the next batch while the model runs on this one (Pillow and
        onnxruntime release the GIL): on camera-size JPEGs decoding costs about as much as the
        model, and the two then overlap. Results are the same either way.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        batches = _batches(items, batch_size)
        if not prefetch:
            for batch in batches:
                yield from self._score_prepared(self._prepare(batch))
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pinet-decode") as pool:
            pending = None
            for batch in batches:
                upcoming = pool.submit(self._prepare, batch)
                if pending is not None:
                    yield from self._score_prepared(pending.result())
                pending = upcoming
            if pending is not None:
                yield from self._score_prepared(pending.result())

    def _prepare(self, items: list) -> list[tuple]:
        """(name, crops or None, error or None, decode seconds) per item."""
        prepared = []
        for item in items:
            name = describe_source(item)
            started = time.perf_counter()
            try:
                crops, error = self.crops(item), None
            except ImageDecodeError as err:
                crops, error = None, str(err)
            except _DECODER_FAILURES as err:
                crops, error = None, f"{name}: cannot decode ({type(err).__name__}: {err})"
            if crops is not None and len(crops) == 0:
                crops, error = None, f"{name}: no crops"
            prepared.append((name, crops, error, time.perf_counter() - started))
        return prepared

    def _score_prepared(self, prepared: list[tuple]) -> list[ScoreResult]:
        good = [crops for _, crops, _, _ in prepared if crops is not None]
        model_seconds = 0.0
        per_crop = np.zeros(0)
        if good:
            started = time.perf_counter()
            per_crop = self.score_crops(np.concatenate(good))
            model_seconds = time.perf_counter() - started
        total_crops = max(sum(len(c) for c in good), 1)

        results, offset = [], 0
        for name, crops, error, decode_seconds in prepared:
            if crops is None:
                results.append(ScoreResult(name, None, error, 0, decode_seconds))
                continue
            count = len(crops)
            image_scores = per_crop[offset:offset + count]
            offset += count
            # The shared session run is charged to each image in proportion to its crops.
            seconds = decode_seconds + model_seconds * count / total_crops
            value = float(np.mean(image_scores))
            if math.isfinite(value):
                results.append(ScoreResult(name, value, None, count, seconds))
            else:  # never reported as a score
                results.append(ScoreResult(name, None, f"{name}: {_non_finite(value)}", count, seconds))
        return results


def _batches(items: Iterable, size: int) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _non_finite(value: float) -> str:
    return f"the model returned a non-finite score ({value}) for this image; no score is reported"
