"""Video quality over time: decode a clip with PyAV (the `video` extra), score every Nth frame with
the Scorer, and summarise the clip (mean, 5th percentile, worst segments).

Each sampled frame goes through the runtime's own decoding step (``load_image`` on the frame's
RGB pixels: resize to the contract's short side) before ``Scorer.score_many``, so a frame is
scored exactly as the same picture saved as a PNG would be, and a batch holds small images, not
full-size 4K frames. A file that cannot be opened, decodes to no frame, or ends well before the
duration its container declares (a truncated download) is a per-file error; the frames decoded
before the damage are kept.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from pinet_runtime.errors import ImageDecodeError, PinetError

WORST_SEGMENTS = 3
# A sample is "low" when it scores half a standard deviation below the clip's mean; a clip whose
# scores spread less than this fraction of the score range has no worst segment (it is uniform).
LOW_SPREAD_FRACTION = 0.02
LOW_DEVIATIONS = 0.5


class VideoError(PinetError):
    """A video file cannot be scored (or only partly): the message names the file and the problem."""


@dataclass(frozen=True)
class Sampling:
    """Which frames to score: one every ``seconds`` of video time, or every ``frames``-th frame."""

    seconds: float | None = None
    frames: int | None = None

    def __str__(self) -> str:
        return f"{self.frames}f" if self.frames else f"{self.seconds:g}s"


def parse_every(text: str) -> Sampling:
    """``1s``, ``0.5s``, ``250ms`` or ``10f``; PinetError naming --every otherwise."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(s|ms|f)\s*", text.lower())
    if match:
        value, unit = float(match.group(1)), match.group(2)
        if unit == "f" and value >= 1 and value.is_integer():
            return Sampling(frames=int(value))
        if unit in ("s", "ms") and value > 0:
            return Sampling(seconds=value / 1000 if unit == "ms" else value)
    raise PinetError("--every", f"{text!r} is not a sampling step; write seconds (1s, 0.5s, 250ms) or a frame "
                                f"count (10f, a whole number >= 1)")


@dataclass(frozen=True)
class FrameScore:
    frame: int          # index of the frame in decoding order, from 0
    time: float         # seconds from the start of the stream
    score: float | None
    error: str | None
    crops: int
    seconds: float      # scoring time charged to this frame


@dataclass(frozen=True)
class Segment:
    """A stretch of consecutive low-scoring samples: [start, end) in seconds, its mean and worst score."""

    start: float
    end: float
    mean: float
    worst: float

    def to_dict(self) -> dict:
        return {"start": round(self.start, 3), "end": round(self.end, 3), "mean": round(self.mean, 6),
                "worst": round(self.worst, 6)}


@dataclass
class VideoScores:
    path: str
    frames: list[FrameScore] = field(default_factory=list)
    error: str | None = None
    duration: float | None = None     # what the container declares, seconds
    step: float | None = None         # seconds between samples
    higher_is_better: bool = True
    score_span: float = 1.0           # width of the model's score range

    @property
    def scores(self) -> np.ndarray:
        return np.array([f.score for f in self.frames if f.score is not None], dtype=np.float64)

    @property
    def mean(self) -> float | None:
        return float(self.scores.mean()) if self.scores.size else None

    @property
    def p5(self) -> float | None:
        return float(np.percentile(self.scores, 5)) if self.scores.size else None

    def worst_segments(self, limit: int = WORST_SEGMENTS) -> list[Segment]:
        """Runs of consecutive samples scoring well below the clip's mean (by the model's direction),
        worst mean first."""
        scored = [f for f in self.frames if f.score is not None]
        if len(scored) < 3:
            return []
        sign = 1.0 if self.higher_is_better else -1.0
        values = sign * np.array([f.score for f in scored])
        spread = float(values.std())
        if spread < LOW_SPREAD_FRACTION * self.score_span:
            return []
        low = values < values.mean() - LOW_DEVIATIONS * spread
        step = self.step or 0.0
        end_cap = self.duration if self.duration else math.inf
        segments, start = [], None
        for index, is_low in enumerate([*low, False]):
            if is_low and start is None:
                start = index
            elif not is_low and start is not None:
                run = scored[start:index]
                run_values = [f.score for f in run]
                segments.append(Segment(run[0].time, min(run[-1].time + step, end_cap), float(np.mean(run_values)),
                                        float(min(run_values) if self.higher_is_better else max(run_values))))
                start = None
        segments.sort(key=lambda s: sign * s.mean)
        return segments[:limit]


def _open_container(path: str):
    import av

    if not os.path.exists(path):
        raise VideoError(path, "no such file")
    if not os.path.isfile(path):
        raise VideoError(path, "not a regular file")
    try:
        container = av.open(path)
    except (av.error.FFmpegError, OSError) as err:
        raise VideoError(path, f"not a video PyAV can open ({_reason(err)})") from None
    if not container.streams.video:
        container.close()
        raise VideoError(path, "no video stream in the file")
    return container


def _reason(err: Exception) -> str:
    text = getattr(err, "strerror", None) or str(err) or type(err).__name__
    return text.split(": '")[0]  # PyAV appends the file name, which the message already has


def _declared_duration(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000  # av.time_base: microseconds
    return None


def _frame_interval(stream) -> float | None:
    rate = stream.average_rate or stream.guessed_rate
    return 1.0 / float(rate) if rate else None


class _FrameSampler:
    """Decodes one stream and yields the sampled frames as the runtime's resized RGB images, keeping
    what the caller needs afterwards: each sample's (index, time), the last decoded frame's time, and
    a decoding failure part way (the frames before it are still yielded)."""

    def __init__(self, container, stream, every: Sampling, prep) -> None:
        self.container, self.stream, self.every, self.prep = container, stream, every, prep
        self.interval = _frame_interval(stream)
        start = stream.start_time
        self.origin = float(start * stream.time_base) if start is not None and stream.time_base else 0.0
        self.positions: list[tuple[int, float]] = []
        self.last_time: float | None = None
        self.damage: str | None = None

    def _time(self, frame, index: int) -> float:
        if frame.time is not None:
            return float(frame.time) - self.origin
        return index * (self.interval or 0.0)

    def __iter__(self) -> Iterator:
        import av

        from pinet_runtime.preprocess import load_image

        every, next_time, index = self.every, 0.0, -1
        try:
            for frame in self.container.decode(self.stream):
                index += 1
                time = self.last_time = self._time(frame, index)
                if every.frames:
                    if index % every.frames:
                        continue
                elif time + 1e-6 < next_time:
                    continue
                else:  # the next sample is due at the next multiple of the step after this frame
                    next_time = (math.floor(time / every.seconds + 1e-6) + 1) * every.seconds
                self.positions.append((index, time))
                pixels = frame.to_ndarray(format="rgb24")
                try:
                    yield load_image(pixels, self.prep)
                except ImageDecodeError:  # e.g. past a size limit: score_many gives this frame its error
                    yield pixels
        except (av.error.FFmpegError, OSError) as err:
            self.damage = f"damaged after frame {index} ({_reason(err)})"


def score_video(scorer, path: str | os.PathLike, every: Sampling, batch_size: int = 8,
                on_sample: Callable[[float | None, float], None] | None = None) -> VideoScores:
    """Score the sampled frames of one video. Never raises for the file's own problems: they are
    the result's ``error`` (frames decoded before the damage stay). ``on_sample(duration, time)``
    is called after each scored sample (progress bars)."""
    path = os.fspath(path)
    prep = scorer.preprocessing
    low, high = prep.score_range
    result = VideoScores(path, higher_is_better=scorer.higher_is_better, score_span=float(high - low) or 1.0)
    try:
        container = _open_container(path)
    except VideoError as err:
        result.error = str(err)
        return result
    with container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame and slice threads in the decoder
        result.duration = _declared_duration(container, stream)
        sampler = _FrameSampler(container, stream, every, prep)
        interval = sampler.interval
        result.step = every.seconds if every.seconds else (every.frames * interval if interval else None)
        # score_many yields a result only after its batch's frames were drawn, so positions[n] exists.
        for count, scored in enumerate(scorer.score_many(sampler, batch_size=batch_size)):
            index, time = sampler.positions[count]
            error = None if scored.error is None else f"{path} frame {index}: {scored.error.split(': ', 1)[-1]}"
            result.frames.append(FrameScore(index, time, scored.score, error, scored.crops, scored.seconds))
            if on_sample is not None:
                on_sample(result.duration, time)
    result.error = _file_problem(path, result, sampler)
    return result


def _file_problem(path: str, result: VideoScores, sampler: _FrameSampler) -> str | None:
    if sampler.damage:
        return f"{path}: {sampler.damage}"
    if not result.frames:
        return f"{path}: no video frame could be decoded"
    duration, frame = result.duration, sampler.interval or 0.0
    decoded_to = sampler.last_time + frame
    if duration and decoded_to < duration - max(1.0, 2 * frame):
        return (f"{path}: truncated or damaged: frames end at {decoded_to:.2f} s of the {duration:.2f} s "
                f"the container declares")
    return None
