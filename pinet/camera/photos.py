"""One pass over a set of photos: decode once, score every crop, and keep what the workflows need.

Each photo is decoded by the runtime's own ``load_image`` (EXIF orientation, JPEG DCT scaling,
resize to the model's short side) and cut into crops by ``make_crops``: exactly what
``Scorer.score`` does, so the mean of the per-crop scores here equals ``pinet score``'s score.
The same decoded pixels give the perceptual hash (burst splitting) and the report's thumbnail,
so nothing is decoded twice. Crops of up to ``batch_size`` photos go through the model in one
``Scorer.score_crops`` run while the next batch is decoded; a photo that cannot be read gets its
error and the run goes on.
"""

from __future__ import annotations

import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

import numpy as np
from PIL import Image

from pinet_runtime.decode import PILLOW_FAILURES
from pinet_runtime.errors import ImageDecodeError
from pinet_runtime.preprocess import crop_origins, load_image, make_crops

EXIF_IFD = 0x8769
DATETIME_ORIGINAL = 0x9003
SUBSEC_TIME_ORIGINAL = 0x9291


@dataclass
class Photo:
    path: str
    score: float | None = None
    error: str | None = None
    crop_scores: tuple[float, ...] = ()
    crop_boxes: tuple[tuple[int, int, int], ...] = ()   # (left, top, side) in the scored image's pixels
    scored_size: tuple[int, int] | None = None          # (width, height) of the image the crops come from
    taken: float | None = None                          # capture time, seconds since the epoch
    time_source: str | None = None                      # "exif" | "mtime"
    phash: int | None = None
    thumbnail: bytes | None = None                      # JPEG, with the crop scores drawn on it
    seconds: float = 0.0

    @property
    def taken_text(self) -> str | None:
        if self.taken is None:
            return None
        return datetime.fromtimestamp(self.taken).isoformat(timespec="milliseconds")


def capture_time(path: str) -> tuple[float | None, str | None]:
    """EXIF DateTimeOriginal + SubsecTimeOriginal (read as local time, like the camera's clock),
    else the file's modification time, else (None, None)."""
    taken = exif_capture_time(path)
    if taken is not None:
        return taken, "exif"
    try:
        return os.stat(path).st_mtime, "mtime"
    except OSError:
        return None, None


def exif_capture_time(path: str) -> float | None:
    """Seconds since the epoch from the EXIF capture date; None when the file has no readable one."""
    try:
        with Image.open(path) as image:
            exif = image.getexif().get_ifd(EXIF_IFD)
        stamp = _exif_text(exif.get(DATETIME_ORIGINAL))
        if not stamp:
            return None
        moment = datetime.strptime(stamp, "%Y:%m:%d %H:%M:%S")
    except (*PILLOW_FAILURES, Image.DecompressionBombError):  # ValueError covers a malformed date
        return None
    digits = "".join(c for c in _exif_text(exif.get(SUBSEC_TIME_ORIGINAL)) if c.isdigit())
    return moment.timestamp() + (float(f"0.{digits}") if digits else 0.0)


def _exif_text(value) -> str:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return value.strip().strip("\x00").strip() if isinstance(value, str) else ""


@dataclass
class _Pending:
    photo: Photo
    image: Image.Image
    crops: np.ndarray


class PhotoScanner:
    """Scores photos in batches; ``hashes`` and ``thumbnail`` (a function of the decoded image and
    the photo, returning JPEG bytes) say what else to keep from the decoded pixels."""

    def __init__(self, scorer, batch_size: int = 8, hashes: bool = True,
                 thumbnail: Callable[[Image.Image, Photo], bytes] | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.scorer, self.batch_size, self.hashes, self.thumbnail = scorer, batch_size, hashes, thumbnail

    def scan(self, paths: list[str], on_photo: Callable[[Photo], None] | None = None) -> list[Photo]:
        """Every path's Photo, in input order; ``on_photo`` is called as each one is done."""
        photos = [Photo(str(path)) for path in paths]
        batches = [photos[start:start + self.batch_size] for start in range(0, len(photos), self.batch_size)]
        # As in Scorer.score_many: one worker decodes the next batch while the model scores this one
        # (Pillow and onnxruntime release the GIL).
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pinet-decode") as pool:
            upcoming = pool.submit(self._decode_batch, batches[0]) if batches else None
            for index, batch in enumerate(batches):
                pending = upcoming.result()
                if index + 1 < len(batches):
                    upcoming = pool.submit(self._decode_batch, batches[index + 1])
                for photo in batch:
                    if photo.error is not None and on_photo is not None:
                        on_photo(photo)
                self._flush(pending, on_photo)
        return photos

    def _decode_batch(self, photos: list[Photo]) -> list[_Pending]:
        return [item for item in map(self._decode, photos) if item is not None]

    def _decode(self, photo: Photo) -> _Pending | None:
        """Capture time, decoded picture and crops; None (and ``photo.error``) when it cannot be read."""
        started = time.perf_counter()
        photo.taken, photo.time_source = capture_time(photo.path)
        prep = self.scorer.preprocessing
        pending = None
        try:
            image = load_image(photo.path, prep)
            crops = make_crops(image, prep)
        except ImageDecodeError as err:
            photo.error = str(err)
        except PILLOW_FAILURES as err:  # the same safety net as Scorer.score_many
            photo.error = f"{photo.path}: cannot decode ({type(err).__name__}: {err})"
        else:
            photo.scored_size = image.size
            photo.crop_boxes = tuple((left, top, prep.crop_size)
                                     for top, left in crop_origins(image.height, image.width, prep))
            pending = _Pending(photo, image, crops)
        photo.seconds = time.perf_counter() - started
        return pending

    def _flush(self, pending: list[_Pending], on_photo) -> None:
        if not pending:
            return
        started = time.perf_counter()
        per_crop = self.scorer.score_crops(np.concatenate([item.crops for item in pending]))
        model_seconds = time.perf_counter() - started
        offset = 0
        for item in pending:
            photo, count = item.photo, len(item.crops)
            values = per_crop[offset:offset + count]
            offset += count
            mean = float(np.mean(values))
            if math.isfinite(mean):
                photo.score, photo.crop_scores = mean, tuple(float(v) for v in values)
            else:
                photo.error = f"{photo.path}: the model returned a non-finite score ({mean}); no score is reported"
            if self.hashes:
                from pinet.camera.phash import perceptual_hash

                photo.phash = perceptual_hash(item.image)
            if self.thumbnail is not None:
                photo.thumbnail = self.thumbnail(item.image, photo)
            photo.seconds += model_seconds * count / len(per_crop)
            if on_photo is not None:
                on_photo(photo)
