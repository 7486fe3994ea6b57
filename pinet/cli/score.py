"""`pinet score PATHS...`: score images with an exported ONNX model (torch-free).

Only the standard library and typer load at import; numpy, Pillow and onnxruntime load inside the
command, so `pinet --help` stays instant. Video files among the inputs are scored frame by frame
(pinet/cli/score_video.py, the `video` extra).
"""

from __future__ import annotations

import glob
import math
import os
import warnings
from enum import Enum
from pathlib import Path

import typer

from rich.markup import escape

from pinet.cli.common import EXIT_FAILURE, EXIT_USAGE, fail, reported_errors, stderr
from pinet.cli.output import Column, OutputFormat, deliver, prepare_output, render_rows
from pinet.cli.progress import PROGRESS_OPTION, Bar, progress_wanted, tracked
from pinet.cli.score_video import EVERY_OPTION, VIDEO_COLUMNS, VIDEO_FIELDS, VIDEO_SUFFIXES, failed_videos, \
    is_video, sampling_for, score_videos, with_video_rows
from pinet.cli.score_ray import ENGINE_OPTION, RAY_ADDRESS_OPTION, RAY_OUTPUT_OPTION, WORKERS_OPTION, \
    Engine, engine_scorer

# What a directory contributes: files with these suffixes (case-insensitive). Formats Pillow may
# lack a plugin for (HEIC, AVIF) are included so that they are reported rather than skipped quietly.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff",
                            ".webp", ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".heic", ".heif", ".avif"})
PROGRESS_MIN_FILES = 4
RESULT_FIELDS = ("path", "score", "error", "crops", "seconds")
RESULT_COLUMNS = (Column("path", "path"), Column("score", "score", "right"), Column("crops", "crops", "right"))


class Provider(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


def _is_glob(text: str) -> bool:
    return glob.has_magic(text)


def _images_in(directory: Path, recursive: bool) -> list[Path]:
    """Image files of a folder; a broken or looping symbolic link with an image suffix is kept so
    that it is reported ("broken symbolic link", "cannot read the file") rather than skipped."""
    candidates = directory.rglob("*") if recursive else directory.iterdir()
    wanted = IMAGE_SUFFIXES | VIDEO_SUFFIXES
    return sorted(p for p in candidates if p.suffix.lower() in wanted and (p.is_file() or p.is_symlink()))


def expand_paths(arguments: list[str], recursive: bool) -> tuple[list[str], list[str]]:
    """Files, directories and globs to a de-duplicated file list in argument order.

    Returns (files, arguments that matched nothing). A plain path that does not exist is kept so
    that it is reported as that item's error ("no such file"); globs are expanded here so that
    quoted globs work on every shell.
    """
    files: list[str] = []
    seen: set[str] = set()
    unmatched: list[str] = []

    def add(path: Path | str) -> None:
        key = os.path.normpath(str(path))
        if key not in seen:
            seen.add(key)
            files.append(str(path))

    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            found = _images_in(path, recursive)
        elif path.exists() or not _is_glob(argument):
            found = [path]
        else:
            found = []
            for match in sorted(glob.glob(argument, recursive=recursive)):
                match_path = Path(match)
                found.extend(_images_in(match_path, recursive) if match_path.is_dir() else [match_path])
        if not found:
            unmatched.append(argument)
        for item in found:
            add(item)
    return files, unmatched


def _record(result) -> dict:
    score, error = result.score, result.error
    if score is not None and not math.isfinite(score):  # the Scorer never reports one; keep JSON valid anyway
        score, error = None, f"{result.source}: non-finite score ({score})"
    return {"path": result.source, "score": score, "error": error, "crops": result.crops,
            "seconds": round(result.seconds, 6)}


def sort_records(records: list[dict], higher_is_better: bool) -> list[dict]:
    """Best first (by the model's score meaning); failures last, in input order."""
    scored = [r for r in records if r["score"] is not None]
    failed = [r for r in records if r["score"] is None]
    return sorted(scored, key=lambda r: r["score"], reverse=higher_is_better) + failed


def render(records: list[dict], output_format: OutputFormat, score_name: str) -> str:
    return render_rows(records, output_format, RESULT_FIELDS, RESULT_COLUMNS, f"PINet scores ({score_name})")


def open_scorer(model: Path | None, provider: Provider, threads: int | None):
    from pinet_runtime.errors import NoDefaultModelError
    from pinet_runtime.scorer import Scorer

    if model is not None and not model.exists():
        raise fail(f"model file {model} not found", EXIT_USAGE)
    with warnings.catch_warnings(record=True) as caught, reported_errors():
        warnings.simplefilter("always")
        try:
            scorer = Scorer(model, providers=provider.value, threads=threads)
        except NoDefaultModelError as err:  # the install, not the model, is missing something: a usage error
            raise fail(str(err), EXIT_USAGE) from None
    for warning in caught:
        stderr.print(f"[yellow]warning:[/] {escape(str(warning.message))}", highlight=False)
    return scorer


def _score_all(scorer, files: list[str], batch_size: int, tracker) -> list[dict]:
    if not files:
        return []
    bar = tracker.bar("scoring", len(files)) if len(files) >= PROGRESS_MIN_FILES else Bar()
    records = []
    for result in scorer.score_many(files, batch_size=batch_size):
        records.append(_record(result))
        bar.advance()
    return records


def score(
    paths: list[str] = typer.Argument(None, help="Image and video files, folders and globs (quote globs to let "
                                                 "pinet expand them)", show_default=False),
    model: Path = typer.Option(None, "--model", "-m", help="Exported PINet ONNX model (default: the bundled "
                                                           "model, INT8 on CPU and FP32 on CUDA)"),
    provider: Provider = typer.Option(Provider.auto, "--provider", help="onnxruntime execution provider"),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Include images in subfolders"),
    output_format: OutputFormat = typer.Option(OutputFormat.table, "--format", "-f", help="Output format"),
    output: Path = typer.Option(None, "--output", "-o", help="Write the results to this file instead of stdout: "
                                                             "atomically, checked before scoring (exit 2 if it "
                                                             "cannot be written), missing parent folders are "
                                                             "created, a replaced file keeps its permissions"),
    sort: bool = typer.Option(False, "--sort", help="Sort by score, best first (failures last)"),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Images per onnxruntime run"),
    threads: int = typer.Option(None, "--threads", min=1, help="onnxruntime intra-op threads "
                                                               "(default: onnxruntime's choice)"),
    every: str = EVERY_OPTION,
    progress: bool = PROGRESS_OPTION,
    engine: Engine = ENGINE_OPTION,
    ray_address: str = RAY_ADDRESS_OPTION,
    workers: int = WORKERS_OPTION,
    ray_output: Path = RAY_OUTPUT_OPTION,
) -> None:
    """Score images and videos with an exported model. Exit 0: all scored; 1: some failed; 2: usage error."""
    if not paths:
        raise fail("no paths given; pass image files, folders or globs", EXIT_USAGE)
    files, unmatched = expand_paths(paths, recursive)
    if not files:
        raise fail(f"nothing matched: {', '.join(unmatched)}", EXIT_USAGE)
    for argument in unmatched:
        stderr.print(f"[yellow]warning:[/] {escape(argument)} matched no image files", highlight=False)
    videos = [f for f in files if is_video(f)]
    files = [f for f in files if not is_video(f)]
    sampling = sampling_for(videos, every)

    target = prepare_output(output) if output is not None else None
    scorer = open_scorer(model, provider, threads)
    # --engine ray: the same model and score_many, run by a Ray actor pool (--ray-output writes and exits here).
    runner = engine_scorer(scorer, files, engine, provider.value, ray_address, workers, threads, batch_size,
                           ray_output, output_format is OutputFormat.csv)
    # e.g. the model loaded but onnxruntime cannot run it: no image is to blame
    with reported_errors(), tracked(progress_wanted(progress)) as tracker:
        records = _score_all(runner, files, batch_size, tracker)
        blocks = score_videos(scorer, videos, sampling, batch_size, tracker)
    if sort:
        records = sort_records(records, scorer.higher_is_better)
    score_name = scorer.preprocessing.score_name
    if videos:
        text = render_rows(with_video_rows(records, blocks), output_format, VIDEO_FIELDS, VIDEO_COLUMNS,
                           f"PINet scores ({score_name})")
    else:
        text = render(records, output_format, score_name)
    deliver(text, target, output)

    failures = [r for r in records if r["error"] is not None] + failed_videos(blocks)
    if output_format is OutputFormat.table or output is not None:
        for record in failures:
            stderr.print(f"[red]failed:[/] {escape(record['error'])}", highlight=False, soft_wrap=True)
    if failures:
        total, noun = len(records) + len(blocks), "files" if videos else "images"
        stderr.print(f"{total - len(failures)} of {total} {noun} scored, {len(failures)} failed", highlight=False)
        raise typer.Exit(EXIT_FAILURE)
