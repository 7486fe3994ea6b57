"""What a report shows, gathered from a folder (scored here) or a scores file from `pinet score` /
`pinet best` (JSON, JSONL or CSV), plus the model's card.

A scores file gives the ranking scores and, from `pinet best`, the burst groups; the pictures are
still opened here with the model (so the thumbnails can carry per-crop scores). When the file's
scores disagree with that model's the report says so.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from pinet_runtime.errors import PinetError

SCORES_FILE_SUFFIXES = (".json", ".jsonl", ".csv")
# Above this difference a file's score and the model's are not the same model's scores.
DISAGREEMENT = 1e-3


class ScoresFileError(PinetError):
    """A scores file that cannot be read as `pinet score` / `pinet best` output."""


@dataclass
class ReportEntry:
    path: str
    score: float | None
    error: str | None = None
    crop_scores: tuple[float, ...] = ()
    thumbnail: bytes | None = None
    group: int | None = None
    rank: int | None = None
    pick: bool = False
    margin: float | None = None


@dataclass
class ReportData:
    entries: list[ReportEntry]
    card: dict                        # the model's card: name, precision, scale, ...
    higher_is_better: bool
    score_range: tuple[float, float]
    source: str                       # what the report was made from
    notes: list[str] = field(default_factory=list)
    has_groups: bool = False


def model_card(info) -> dict:
    """Name, precision and score scale from the model file's own metadata (pinet_runtime ModelInfo)."""
    meaning = info.score_meaning
    low, high = meaning["range"]
    return {"name": f"{info.variant} ({info.path.name})", "precision": info.precision,
            "scale": f"{meaning['name']}, {low:g} to {high:g}, "
                     f"{'higher' if meaning['higher_is_better'] else 'lower'} is better",
            "variant": info.variant, "file": str(info.path), "parameters": info.parameters,
            "pinet_version": info.pinet_version, "export_date": info.export_date}


def is_scores_file(arguments: list[str]) -> bool:
    return len(arguments) == 1 and Path(arguments[0]).suffix.lower() in SCORES_FILE_SUFFIXES \
        and Path(arguments[0]).is_file()


def read_scores_file(path: str | os.PathLike) -> list[dict]:
    """Rows with path, score, error and (from `pinet best`) group, rank, pick, margin; video frame
    and summary rows (kind frame | video) are dropped. ScoresFileError when it is not such a file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as err:
        raise ScoresFileError(path, f"cannot read the file ({err.strerror or err})") from None
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            rows = list(csv.DictReader(text.splitlines()))
        elif suffix == ".jsonl":
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            rows = json.loads(text)
    except (ValueError, csv.Error) as err:
        raise ScoresFileError(path, f"not valid {suffix[1:].upper()} ({err})") from None
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise ScoresFileError(path, "expected a list of rows (the output of pinet score or pinet best)")
    parsed = []
    for number, row in enumerate(rows, start=1):
        if not row.get("path"):
            raise ScoresFileError(path, f"row {number} has no path: not the output of pinet score or pinet best")
        if row.get("kind") in ("frame", "video"):
            continue
        parsed.append(_typed(path, number, row))
    return parsed


def _typed(path: Path, number: int, row: dict) -> dict:
    """CSV gives strings; JSON gives the values. Either way: float/int/bool/None."""
    def value(key, kind):
        raw = row.get(key)
        if raw is None or raw == "":
            return None
        try:
            if kind is bool:
                return raw if isinstance(raw, bool) else str(raw).lower() in ("true", "1", "yes")
            return kind(raw)
        except (TypeError, ValueError):
            raise ScoresFileError(path, f"row {number}: {key} {raw!r} is not a {kind.__name__}") from None

    return {"path": str(row["path"]), "score": value("score", float), "error": row.get("error") or None,
            "group": value("group", int), "rank": value("rank", int), "pick": bool(value("pick", bool)),
            "margin": value("margin", float)}


def entries_from_file(rows: list[dict], photos: dict, model_name: str) -> tuple[list[ReportEntry], list[str]]:
    """Report entries from a scores file's rows and the model's look at the same pictures
    (``photos``: path -> Photo). Returns (entries, notes)."""
    entries, notes, seen, differences = [], [], set(), []
    for row in rows:
        if row["path"] in seen:
            continue
        seen.add(row["path"])
        photo = photos.get(row["path"])
        entry = ReportEntry(row["path"], row["score"], row["error"], group=row["group"], rank=row["rank"],
                            pick=row["pick"], margin=row["margin"])
        if photo is not None and photo.error is None:
            entry.crop_scores, entry.thumbnail = photo.crop_scores, photo.thumbnail
            if entry.score is None and entry.error is None:
                entry.score = photo.score
            elif entry.score is not None:
                differences.append(abs(entry.score - photo.score))
        elif photo is not None and entry.error is None:
            entry.error = f"no thumbnail: {photo.error}"
        entries.append(entry)
    drifted = [d for d in differences if d > DISAGREEMENT]
    if drifted:
        notes.append(f"{len(drifted)} of {len(differences)} scores in the file differ from {model_name}'s by up to "
                     f"{max(drifted):.3f}: the file was probably made with another model. Ranking uses the file's "
                     f"scores; the per-crop scores on the thumbnails are {model_name}'s.")
    return entries, notes


def entries_from_bursts(photos: list, bursts: list) -> list[ReportEntry]:
    """Report entries from photos scored here and their bursts (pinet.camera.bursts)."""
    placed = {}
    for burst in bursts:
        for rank, photo in enumerate(burst.members, start=1):
            placed[photo.path] = (burst.number, rank, burst.margin if rank == 1 else None)
    entries = []
    for photo in photos:
        group, rank, margin = placed.get(photo.path, (None, None, None))
        entries.append(ReportEntry(photo.path, photo.score, photo.error, photo.crop_scores, photo.thumbnail,
                                   group, rank, rank == 1, margin))
    return entries


def ranked(entries: list[ReportEntry], higher_is_better: bool) -> list[ReportEntry]:
    """Best first by the model's direction; entries without a score last, in input order."""
    scored = [e for e in entries if e.score is not None]
    unscored = [e for e in entries if e.score is None]
    return sorted(scored, key=lambda e: e.score, reverse=higher_is_better) + unscored
