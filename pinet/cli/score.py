"""`pinet score PATHS...`: score images with an exported ONNX model (torch-free).

Only the standard library and typer load at import; numpy, Pillow and onnxruntime load inside the
command, so `pinet --help` stays instant.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import math
import os
import sys
import warnings
from enum import Enum
from pathlib import Path

import typer

from rich.markup import escape

from pinet.cli.common import EXIT_FAILURE, EXIT_USAGE, fail, reported_errors, stderr

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
    """Image files of a folder; a broken or looping symbolic link with an image suffix is kept so
    that it is reported ("broken symbolic link", "cannot read the file") rather than skipped."""
    candidates = directory.rglob("*") if recursive else directory.iterdir()
    return sorted(p for p in candidates if p.suffix.lower() in IMAGE_SUFFIXES and (p.is_file() or p.is_symlink()))


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
    # JSON is ASCII (non-ASCII and surrogate-escaped file names as \uXXXX escapes) and never NaN.
    if output_format is OutputFormat.json:
        return json.dumps(records, indent=2, allow_nan=False) + "\n"
    if output_format is OutputFormat.jsonl:
        return "".join(json.dumps(record, allow_nan=False) + "\n" for record in records)
    if output_format is OutputFormat.csv:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=RESULT_FIELDS, lineterminator="\n")
        writer.writeheader()
        for record in records:
            writer.writerow({k: "" if record[k] is None else record[k] for k in RESULT_FIELDS})
        return buffer.getvalue()
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"PINet scores ({score_name})")
    table.add_column("path", overflow="fold")
    table.add_column("score", justify="right")
    table.add_column("crops", justify="right")
    for record in records:
        shown = f"{record['score']:.4f}" if record["score"] is not None else "[red]failed[/]"
        table.add_row(Text(record["path"]), shown, str(record["crops"]))  # a file name is never markup
    buffer = io.StringIO()
    Console(file=buffer, width=max(100, min(200, max((len(r["path"]) for r in records), default=0) + 30)),
            force_terminal=False, color_system=None).print(table)
    return buffer.getvalue()


# File names that are not valid UTF-8 reach Python as lone surrogates (PEP 383). Text output
# encodes them back to the name's original bytes (the os.fsdecode/os.fsencode round trip), so a
# CSV or table row names the file exactly; JSON carries them as \udcXX escapes.
TEXT_ERRORS = "surrogateescape"


def prepare_output(output: Path) -> Path:
    """Check before scoring that ``output`` can be written; returns the file to write (symbolic
    links resolved). Creates missing parent folders. Raises typer.Exit(2) with the reason."""
    target = Path(os.path.realpath(output))
    if target.is_dir():
        raise fail(f"--output {output} is a directory; name a file", EXIT_USAGE)
    if target.exists() and not target.is_file():
        return target  # a device or pipe (/dev/stdout): written in place, not replaced
    from pinet_runtime.files import temporary_path

    try:
        temporary_path(target).unlink()  # the folder exists (created) and takes a new file
    except OSError as err:
        raise fail(f"--output {output} cannot be written ({err.strerror or err}: {err.filename or target.parent})",
                   EXIT_USAGE) from None
    return target


def write_stdout(text: str) -> None:
    """stdout in its own encoding; surrogate-escaped file names go out as their original bytes."""
    stream = getattr(sys.stdout, "buffer", None)
    if stream is None:
        sys.stdout.write(text)
    else:
        sys.stdout.flush()
        encoding = sys.stdout.encoding or "utf-8"
        try:
            data = text.encode(encoding, TEXT_ERRORS)
        except UnicodeEncodeError:  # a character the console's encoding lacks
            data = text.encode(encoding, "backslashreplace")
        stream.write(data)
        stream.flush()
    sys.stdout.flush()


def _open_scorer(model: Path | None, provider: Provider, threads: int | None):
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
    output: Path = typer.Option(None, "--output", "-o", help="Write the results to this file instead of stdout: "
                                                             "atomically, checked before scoring (exit 2 if it "
                                                             "cannot be written), missing parent folders are "
                                                             "created, a replaced file keeps its permissions"),
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
        stderr.print(f"[yellow]warning:[/] {escape(argument)} matched no image files", highlight=False)

    target = prepare_output(output) if output is not None else None
    scorer = _open_scorer(model, provider, threads)
    with reported_errors():  # e.g. the model loaded but onnxruntime cannot run it: no image is to blame
        records = _score_all(scorer, files, batch_size)
    if sort:
        records = sort_records(records, scorer.higher_is_better)
    text = render(records, output_format, scorer.preprocessing.score_name)
    if target is not None:
        from pinet_runtime.files import write_text_atomic

        try:
            write_text_atomic(target, text, errors=TEXT_ERRORS)
        except OSError as err:  # e.g. the disk filled up while scoring: the results still come out
            stderr.print(f"[red]error:[/] cannot write {escape(str(output))} ({escape(err.strerror or str(err))}); "
                         "the results follow on stdout", highlight=False)
            write_stdout(text)
            raise typer.Exit(EXIT_FAILURE) from None
    else:
        write_stdout(text)

    failures = [r for r in records if r["error"] is not None]
    if output_format is OutputFormat.table or output is not None:
        for record in failures:
            stderr.print(f"[red]failed:[/] {escape(record['error'])}", highlight=False, soft_wrap=True)
    if failures:
        stderr.print(f"{len(records) - len(failures)} of {len(records)} images scored, {len(failures)} failed",
                     highlight=False)
        raise typer.Exit(EXIT_FAILURE)

