"""Bursts: photos grouped by capture time and look, and the best of each picked by the model.

Grouping, in two steps:

1. time: photos sorted by capture time (EXIF DateTimeOriginal + sub-seconds, else the file's
   time) start a new window wherever the gap to the previous photo exceeds ``gap`` seconds;
2. look: inside a window, photos whose perceptual hashes differ by at most ``max_distance`` bits
   are joined (single linkage, so a burst that drifts a little from frame to frame stays one),
   which keeps two scenes shot within the same second apart.

The pick is the member the model scores best (by its score direction); the margin is how far the
runner-up is behind. Copies go to --keep-dir / --reject-dir; the originals are never moved,
renamed or deleted, and an existing file there is never overwritten.
"""

from __future__ import annotations

import filecmp
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pinet.camera import DEFAULT_GAP_SECONDS, DEFAULT_MAX_DISTANCE
from pinet.camera.phash import distances
from pinet.camera.photos import Photo
from pinet_runtime.errors import PinetError



@dataclass
class Burst:
    number: int              # 1, 2, ... in capture order
    members: list[Photo]     # best first
    margin: float | None     # pick's lead over the runner-up; None for a single photo

    @property
    def pick(self) -> Photo:
        return self.members[0]


def time_windows(photos: list[Photo], gap: float) -> list[list[Photo]]:
    """Photos in capture order, split wherever consecutive capture times are more than ``gap`` apart."""
    ordered = sorted(photos, key=lambda p: (p.taken, p.path))
    windows: list[list[Photo]] = []
    for photo in ordered:
        if windows and photo.taken - windows[-1][-1].taken <= gap:
            windows[-1].append(photo)
        else:
            windows.append([photo])
    return windows


def similar_groups(window: list[Photo], max_distance: int) -> list[list[Photo]]:
    """Connected components of "hashes within ``max_distance``" inside one window, in capture order."""
    if len(window) == 1:
        return [window]
    parent = list(range(len(window)))

    def root(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    hashed = [i for i, photo in enumerate(window) if photo.phash is not None]
    values = np.array([window[i].phash for i in hashed], dtype=np.uint64)
    for a in range(len(hashed) - 1):
        for b in np.nonzero(distances(values[a + 1:], window[hashed[a]].phash) <= max_distance)[0]:
            parent[root(hashed[a])] = root(hashed[a + 1 + int(b)])
    components: dict[int, list[Photo]] = {}
    for index, photo in enumerate(window):
        components.setdefault(root(index), []).append(photo)
    return sorted(components.values(), key=lambda members: (members[0].taken, members[0].path))


def group_bursts(photos: list[Photo], gap: float = DEFAULT_GAP_SECONDS, max_distance: int = DEFAULT_MAX_DISTANCE,
                 higher_is_better: bool = True) -> list[Burst]:
    """The bursts of the scored photos (those with an error or no capture time are left out)."""
    if gap < 0:
        raise PinetError("--gap", f"must be >= 0 seconds, got {gap}")
    usable = [p for p in photos if p.score is not None and p.taken is not None]
    sign = -1.0 if higher_is_better else 1.0
    bursts = []
    for window in time_windows(usable, gap):
        for members in similar_groups(window, max_distance):
            ranked = sorted(members, key=lambda p: (sign * p.score, p.taken, p.path))
            margin = abs(ranked[0].score - ranked[1].score) if len(ranked) > 1 else None
            bursts.append(Burst(len(bursts) + 1, ranked, margin))
    return bursts


def _same_file(first: Path, second: Path) -> bool:
    try:
        return os.path.samefile(first, second) or filecmp.cmp(first, second, shallow=False)
    except OSError:
        return False


def place(source: str, folder: Path, link: bool) -> Path:
    """Copy (or hard-link) ``source`` into ``folder`` under its own name, or ``name-2.ext``, ... when
    another file holds that name; a file already there with the same content is reused (a re-run).
    Returns the path in ``folder``. Never overwrites; never touches ``source``."""
    source_path = Path(source)
    folder.mkdir(parents=True, exist_ok=True)
    destination, number = folder / source_path.name, 2
    while destination.exists() or destination.is_symlink():
        if _same_file(source_path, destination):
            return destination
        destination = folder / f"{source_path.stem}-{number}{source_path.suffix}"
        number += 1
    try:
        if link:
            os.link(source_path, destination)
        else:
            from pinet_runtime.files import temporary_path

            temporary = temporary_path(destination)
            try:
                shutil.copy2(source_path, temporary)  # keeps the file's times (and so mtime grouping)
                os.replace(temporary, destination)
            finally:
                temporary.unlink(missing_ok=True)
    except OSError as err:
        hint = "; without --link the photo is copied" if link else ""
        raise PinetError(destination, f"cannot {'hard-link' if link else 'copy'} {source} here "
                                      f"({err.strerror or err}){hint}") from None
    return destination


def sort_out(bursts: list[Burst], keep_dir: Path | None, reject_dir: Path | None, link: bool,
             on_file=None) -> dict[str, str]:
    """Each burst's pick into ``keep_dir`` and the rest into ``reject_dir`` (either may be None).
    Returns {source path: copy's path}."""
    placed: dict[str, str] = {}
    for burst in bursts:
        for rank, photo in enumerate(burst.members):
            folder = keep_dir if rank == 0 else reject_dir
            if folder is not None:
                placed[photo.path] = str(place(photo.path, folder, link))
            if on_file is not None:
                on_file()
    return placed


BEST_FIELDS = ("group", "rank", "pick", "path", "score", "margin", "taken", "time_source", "copied_to", "error",
               "crops", "seconds")


def burst_rows(photos: list[Photo], bursts: list[Burst], placed: dict[str, str] | None = None) -> list[dict]:
    """One row per photo: burst by burst (capture order), best first; photos that failed last."""
    placed = placed or {}
    rows = []
    for burst in bursts:
        for rank, photo in enumerate(burst.members, start=1):
            rows.append(_row(photo, burst.number, rank, burst.margin if rank == 1 else None, placed))
    grouped = {p.path for burst in bursts for p in burst.members}
    rows.extend(_row(p, None, None, None, placed) for p in photos if p.path not in grouped)
    return rows


def _row(photo: Photo, group: int | None, rank: int | None, margin: float | None, placed: dict) -> dict:
    return {"group": group, "rank": rank, "pick": rank == 1, "path": photo.path, "score": photo.score,
            "margin": margin, "taken": photo.taken_text, "time_source": photo.time_source,
            "copied_to": placed.get(photo.path), "error": photo.error, "crops": len(photo.crop_scores),
            "seconds": round(photo.seconds, 6)}
