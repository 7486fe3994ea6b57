"""synth, our distortion generator (`pinet data synth`): writes the synth set (images, pseudo scores, manifest).

Layout of ``<out>``::

    references/<stem>.png              the reference after load_image (short side = --short-side)
    images/<stem>/<type>_<level>.png   distorted images (PNG, compress_level 1)
    shards/<stem>.json                 one finished reference: its rows (written last, atomically)
    manifest.csv                       built from the shards of the selected references
    synth.json                         settings, counts, pseudo-score formula, timing
    errors.jsonl                       references that could not be read in the latest run

Resuming: a reference is done exactly when its shard exists with matching settings; every file
is written to a hidden temp name and moved into place, so a killed run never leaves a partial
file that counts as done, and the next run deletes leftover temp files and redoes the rest.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from pinet_runtime.files import atomic_path, is_temporary_file, write_text_atomic
from pinet_runtime.preprocess import ImageDecodeError, Preprocessing, load_image
from pinet_training.distortions import LEVELS, distort_array, get_distortion
from pinet_training.pseudo_scores import DEFAULT_METRIC_SHORT_SIDE, FORMULA_NAME, METRICS
from pinet_training.synth_manifest import SPLIT_RULE, SynthItem, read_manifest, split_of, write_manifest

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
SHARD_VERSION = 1
DEFAULT_TYPES_PER_REF = 12


@dataclass(frozen=True)
class SynthSettings:
    """Everything that decides the generated pixels and scores (plus run-only knobs)."""

    short_side: int = 384
    types: tuple[str, ...] = ()
    types_per_ref: int = DEFAULT_TYPES_PER_REF
    seed: int = 0
    metric_short_side: int | None = DEFAULT_METRIC_SHORT_SIDE
    val_fraction: float = 0.15

    def shard_key(self) -> str:
        """Fingerprint of the settings a shard's content depends on (not val_fraction)."""
        data = {"version": SHARD_VERSION, "short_side": self.short_side, "types": list(self.types),
                "types_per_ref": self.types_per_ref, "seed": self.seed,
                "metric_short_side": self.metric_short_side, "formula": FORMULA_NAME}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ReferenceResult:
    """What a worker reports for one reference: its manifest rows or the error."""

    stem: str
    source: str
    rows: tuple[dict, ...] = ()
    error: str | None = None
    seconds: float = 0.0
    skipped: bool = False


@dataclass(frozen=True)
class SynthSummary:
    references: int
    processed: int
    skipped: int
    failed: tuple[ReferenceResult, ...]
    images: int
    seconds: float
    manifest: Path


def list_references(refs_dir: Path, max_refs: int | None) -> list[Path]:
    """Image files directly in ``refs_dir``, sorted by name, the first ``max_refs`` of them."""
    files = sorted(p for p in refs_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    return files[:max_refs] if max_refs is not None else files


def _derived_int(*parts: object) -> int:
    """A stable 31-bit int from the parts (Python's hash() is salted per process)."""
    text = ":".join(str(part) for part in parts)
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16) & 0x7FFFFFFF


def types_for_reference(stem: str, settings: SynthSettings) -> list[str]:
    """The distortion types applied to one reference: all of them, or a stable random subset."""
    if settings.types_per_ref >= len(settings.types):
        return list(settings.types)
    rng = np.random.default_rng(_derived_int(settings.seed, stem, "types"))
    chosen = rng.choice(len(settings.types), size=settings.types_per_ref, replace=False)
    return [settings.types[i] for i in sorted(chosen)]


def distortion_seed(stem: str, name: str, settings: SynthSettings) -> int:
    """One seed per (reference, type), shared by its 5 levels so they form one clean ladder."""
    return _derived_int(settings.seed, stem, name)


def _save_png_atomic(image: Image.Image, path: Path) -> None:
    with atomic_path(path) as temporary:
        image.save(temporary, format="PNG", compress_level=1)


def _shard_path(out_dir: Path, stem: str) -> Path:
    return out_dir / "shards" / f"{stem}.json"


def load_done_shard(out_dir: Path, stem: str, settings: SynthSettings) -> dict | None:
    """The shard of a finished reference, or None when absent, unreadable or made with other settings."""
    path = _shard_path(out_dir, stem)
    if not path.is_file():
        return None
    try:
        shard = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return shard if isinstance(shard, dict) and shard.get("settings_key") == settings.shard_key() else None


def process_reference(source: Path, out_dir: Path, settings: SynthSettings) -> ReferenceResult:
    """Distort, store and score one reference; writes its shard last. Never raises for bad input."""
    from pinet_training.pseudo_scores import score_batch

    started = time.perf_counter()
    stem = source.stem
    prep = Preprocessing(resize_short_side=settings.short_side, crop_size=min(224, settings.short_side))
    try:
        reference = load_image(source, prep)
    except ImageDecodeError as err:
        return ReferenceResult(stem, str(source), error=err.problem)
    reference_file = f"references/{stem}.png"
    _save_png_atomic(reference, out_dir / reference_file)
    pixels = np.asarray(reference)
    rows = []
    for name in types_for_reference(stem, settings):
        distortion = get_distortion(name)
        seed = distortion_seed(stem, name, settings)
        ladder = [distort_array(pixels, name, level, seed) for level in LEVELS]
        scores = score_batch(pixels, ladder, settings.metric_short_side)
        for level, distorted, score in zip(LEVELS, ladder, scores):
            file = f"images/{stem}/{name}_{level}.png"
            _save_png_atomic(Image.fromarray(distorted, "RGB"), out_dir / file)
            rows.append({"file": file, "reference": stem, "reference_file": reference_file, "distortion": name,
                         "distortion_class": distortion.coarse_class, "class_index": distortion.class_index,
                         "level": level, "seed": seed, "pseudo_score": round(score.score, 6),
                         "metrics": {k: round(v, 6) for k, v in score.mapped.items()}})
    seconds = time.perf_counter() - started
    shard = {"settings_key": settings.shard_key(), "source": str(source), "seconds": round(seconds, 3), "rows": rows}
    shard_path = _shard_path(out_dir, stem)
    shard_path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(shard_path, json.dumps(shard))
    return ReferenceResult(stem, str(source), rows=tuple(rows), seconds=seconds)


def _init_worker() -> None:
    from pinet_training.pseudo_scores import limit_torch_threads

    limit_torch_threads(1)


def _worker(task: tuple[Path, Path, SynthSettings]) -> ReferenceResult:
    return process_reference(*task)


def remove_temp_files(out_dir: Path) -> int:
    """Delete temp files a killed run left behind; returns how many."""
    removed = 0
    for path in out_dir.rglob(".*.tmp"):
        if path.is_file() and is_temporary_file(path):
            path.unlink()
            removed += 1
    return removed


def run_synth(refs_dir: Path, out_dir: Path, settings: SynthSettings, max_refs: int | None = None,
              workers: int = 1, on_result: Callable[[ReferenceResult], None] | None = None,
              on_start: Callable[[int], None] | None = None) -> SynthSummary:
    """Generate (or finish) the data set; returns counts. Bad references are reported, not raised."""
    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_temp_files(out_dir)
    sources = list_references(refs_dir, max_refs)
    results: dict[str, ReferenceResult] = {}
    failed: list[ReferenceResult] = []
    pending: list[Path] = []
    seen: dict[str, Path] = {}
    for source in sources:
        if source.stem in seen:
            failed.append(ReferenceResult(source.stem, str(source),
                                          error=f"same file stem as {seen[source.stem].name}; rename one of them"))
            continue
        seen[source.stem] = source
        shard = load_done_shard(out_dir, source.stem, settings)
        if shard is None:
            pending.append(source)
        else:
            results[source.stem] = ReferenceResult(source.stem, str(source), rows=tuple(shard["rows"]),
                                                   seconds=shard.get("seconds", 0.0), skipped=True)
    if on_start is not None:
        on_start(len(pending))
    for result in _run_pending(pending, out_dir, settings, workers):
        if result.error is not None:
            failed.append(result)
        else:
            results[result.stem] = result
        if on_result is not None:
            on_result(result)
    rows = []
    for stem in sorted(results):
        split = split_of(stem, settings.val_fraction)
        rows.extend({**row, "split": split} for row in results[stem].rows)
    manifest = write_manifest(out_dir, rows)
    _write_errors(out_dir, failed)
    seconds = time.perf_counter() - started
    summary = SynthSummary(references=len(sources), processed=sum(not r.skipped for r in results.values()),
                           skipped=sum(r.skipped for r in results.values()), failed=tuple(failed),
                           images=len(rows), seconds=seconds, manifest=manifest)
    _write_info(out_dir, refs_dir, settings, summary, results, rows, workers, max_refs)
    return summary


def _run_pending(pending: list[Path], out_dir: Path, settings: SynthSettings, workers: int):
    tasks = [(source, out_dir, settings) for source in pending]
    if workers <= 1 or len(tasks) <= 1:
        _init_worker()
        for task in tasks:
            yield _worker(task)
        return
    # spawn: the parent may have torch loaded (tests), and forking a process with live
    # OpenMP/torch thread pools can deadlock the children.
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes=min(workers, len(tasks)), initializer=_init_worker) as pool:
        yield from pool.imap_unordered(_worker, tasks)


def _write_errors(out_dir: Path, failed: list[ReferenceResult]) -> None:
    lines = [json.dumps({"reference": r.source, "stem": r.stem, "error": r.error}) + "\n" for r in failed]
    write_text_atomic(out_dir / "errors.jsonl", "".join(lines))


def _write_info(out_dir: Path, refs_dir: Path, settings: SynthSettings, summary: SynthSummary,
                results: dict[str, ReferenceResult], rows: list[dict], workers: int, max_refs: int | None) -> None:
    per_split = {split: sum(1 for row in rows if row["split"] == split) for split in ("train", "val")}
    refs_per_split = {split: sum(1 for stem in results if split_of(stem, settings.val_fraction) == split)
                      for split in ("train", "val")}
    info = {
        "settings": {**asdict(settings), "types": list(settings.types), "refs": str(refs_dir),
                     "max_refs": max_refs, "workers": workers},
        "split_rule": SPLIT_RULE,
        "pseudo_score": {"formula": FORMULA_NAME, "metrics": list(METRICS),
                         "metric_short_side": settings.metric_short_side,
                         "module": "pinet_training.pseudo_scores"},
        "counts": {"references_listed": summary.references, "references_done": len(results),
                   "references_failed": len(summary.failed), "processed_this_run": summary.processed,
                   "skipped_this_run": summary.skipped, "images": len(rows), "images_per_split": per_split,
                   "references_per_split": refs_per_split},
        "timing": {"this_run_wall_s": round(summary.seconds, 2),
                   "reference_work_s_total": round(sum(r.seconds for r in results.values()), 2),
                   "python": sys.version.split()[0], "cpu_count": os.cpu_count()},
    }
    write_text_atomic(out_dir / "synth.json", json.dumps(info, indent=2))


__all__ = ["SynthSettings", "SynthSummary", "ReferenceResult", "SynthItem", "SPLIT_RULE", "read_manifest",
           "run_synth", "process_reference", "list_references", "types_for_reference", "distortion_seed",
           "DEFAULT_TYPES_PER_REF", "split_of"]
