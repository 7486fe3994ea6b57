"""`pinet score PATHS...`: score images with an exported ONNX model (torch-free).

Only the standard library and typer load at import; numpy, Pillow and onnxruntime load inside the
command, so `pinet --help` stays instant.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
import sys
import tempfile
import warnings
from enum import Enum
from pathlib import Path

import typer

from pinet.cli.common import EXIT_FAILURE, EXIT_USAGE, fail, stderr

# What a directory contributes: files with these suffixes (case-insensitive). Formats Pillow may
# lack a plugin for (HEIC, AVIF) are included so that they are reported rather than skipped quietly.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff",
                            ".webp", ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".heic", ".heif", ".avif"})
PROGRESS_MIN_FILES = 4
RESULT_FIELDS = ("path", "score", "error", "crops", "seconds")


class OutputFormat(str, Enum):
    table = "table"
    json = "json"
    jsonl = "jsonl"
    csv = "csv"


class Provider(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


def _is_glob(text: str) -> bool:
    return glob.has_magic(text)


def _images_in(directory: Path, recursive: bool) -> list[Path]:
    candidates = directory.rglob("*") if recursive else directory.iterdir()
    return sorted(p for p in candidates if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


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
    return {"path": result.source, "score": result.score, "error": result.error, "crops": result.crops,
            "seconds": round(result.seconds, 6)}


def sort_records(records: list[dict], higher_is_better: bool) -> list[dict]:
    """Best first (by the model's score meaning); failures last, in input order."""
    scored = [r for r in records if r["score"] is not None]
    failed = [r for r in records if r["score"] is None]
    return sorted(scored, key=lambda r: r["score"], reverse=higher_is_better) + failed


def render(records: list[dict], output_format: OutputFormat, score_name: str) -> str:
    if output_format is OutputFormat.json:
        return json.dumps(records, indent=2) + "\n"
    if output_format is OutputFormat.jsonl:
        return "".join(json.dumps(record) + "\n" for record in records)
    if output_format is OutputFormat.csv:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=RESULT_FIELDS, lineterminator="\n")
        writer.writeheader()
        for record in records:
            writer.writerow({k: "" if record[k] is None else record[k] for k in RESULT_FIELDS})
        return buffer.getvalue()
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"PINet scores ({score_name})")
    table.add_column("path", overflow="fold")
    table.add_column("score", justify="right")
    table.add_column("crops", justify="right")
    for record in records:
        shown = f"{record['score']:.4f}" if record["score"] is not None else "[red]failed[/]"
        table.add_row(record["path"], shown, str(record["crops"]))
    buffer = io.StringIO()
    Console(file=buffer, width=max(100, min(200, max((len(r["path"]) for r in records), default=0) + 30)),
            force_terminal=False, color_system=None).print(table)
    return buffer.getvalue()


def write_atomically(path: Path, text: str) -> None:
    """Write via a temp file in the same folder + os.replace, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
        os.replace(temp_name, path)
    except BaseException:
        os.unlink(temp_name)
        raise


def _open_scorer(model: Path | None, provider: Provider, threads: int | None):
    from pinet_runtime.model_file import ModelFileError, NoDefaultModelError
    from pinet_runtime.scorer import Scorer

    if model is not None and not model.exists():
        raise fail(f"model file {model} not found", EXIT_USAGE)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            scorer = Scorer(model, providers=provider.value, threads=threads)
        except NoDefaultModelError as err:
            raise fail(str(err), EXIT_USAGE) from None
        except ModelFileError as err:
            raise fail(str(err)) from None
    for warning in caught:
        stderr.print(f"[yellow]warning:[/] {warning.message}", highlight=False)
    return scorer


def _score_all(scorer, files: list[str], batch_size: int) -> list[dict]:
    results = scorer.score_many(files, batch_size=batch_size)
    if not (stderr.is_terminal and len(files) >= PROGRESS_MIN_FILES):
        return [_record(result) for result in results]
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    records = []
    with Progress(TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=stderr, transient=True) as progress:
        task = progress.add_task("scoring", total=len(files))
        for result in results:
            records.append(_record(result))
            progress.advance(task)
    return records


def score(
    paths: list[str] = typer.Argument(None, help="Image files, folders and globs (quote globs to let pinet "
                                                 "expand them)", show_default=False),
    model: Path = typer.Option(None, "--model", "-m", help="Exported PINet ONNX model (default: the bundled "
                                                           "model, INT8 on CPU and FP32 on CUDA)"),
    provider: Provider = typer.Option(Provider.auto, "--provider", help="onnxruntime execution provider"),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Include images in subfolders"),
    output_format: OutputFormat = typer.Option(OutputFormat.table, "--format", "-f", help="Output format"),
    output: Path = typer.Option(None, "--output", "-o", help="Write the results to this file (atomically) "
                                                             "instead of stdout"),
    sort: bool = typer.Option(False, "--sort", help="Sort by score, best first (failures last)"),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Images per onnxruntime run"),
    threads: int = typer.Option(None, "--threads", min=1, help="onnxruntime intra-op threads "
                                                               "(default: onnxruntime's choice)"),
) -> None:
    """Score images with an exported model. Exit 0: all scored; 1: some failed; 2: usage error."""
    if not paths:
        raise fail("no paths given; pass image files, folders or globs", EXIT_USAGE)
    files, unmatched = expand_paths(paths, recursive)
    if not files:
        raise fail(f"nothing matched: {', '.join(unmatched)}", EXIT_USAGE)
    for argument in unmatched:
        stderr.print(f"[yellow]warning:[/] {argument} matched no image files", highlight=False)

    scorer = _open_scorer(model, provider, threads)
    records = _score_all(scorer, files, batch_size)
    if sort:
        records = sort_records(records, scorer.higher_is_better)
    text = render(records, output_format, scorer.preprocessing.score_name)
    if output is not None:
        write_atomically(output, text)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()

    failures = [r for r in records if r["error"] is not None]
    if output_format is OutputFormat.table or output is not None:
        for record in failures:
            stderr.print(f"[red]failed:[/] {record['error']}", highlight=False, soft_wrap=True)
    if failures:
        stderr.print(f"{len(records) - len(failures)} of {len(records)} images scored, {len(failures)} failed",
                     highlight=False)
        raise typer.Exit(EXIT_FAILURE)

