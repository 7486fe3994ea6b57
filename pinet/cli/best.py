"""`pinet best PATHS...`: group photos into bursts and pick the best of each (torch-free).

Grouping and picking live in pinet/camera/bursts.py; this module reads the options, reuses
`pinet score`'s path expansion, model opening and output code, and copies (or hard-links) the
picks and the rest into --keep-dir / --reject-dir. Originals are never moved or deleted.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from pinet.camera import DEFAULT_GAP_SECONDS, DEFAULT_MAX_DISTANCE
from pinet.cli.common import EXIT_FAILURE, EXIT_USAGE, fail, reported_errors, stderr
from pinet.cli.output import Column, OutputFormat, deliver, prepare_output, render_rows
from pinet.cli.progress import PROGRESS_OPTION, progress_wanted, tracked
from pinet.cli.score import Provider, open_scorer, expand_paths
from pinet.cli.score_video import is_video

BEST_COLUMNS = (Column("group", "burst", "right"), Column("rank", "rank", "right"), Column("pick", "pick"),
                Column("path", "path"), Column("score", "score", "right"), Column("margin", "margin", "right"),
                Column("taken", "taken"))


def best(
    paths: list[str] = typer.Argument(None, help="Photos, folders and globs", show_default=False),
    model: Path = typer.Option(None, "--model", "-m", help="Exported PINet ONNX model (default: the bundled model)"),
    provider: Provider = typer.Option(Provider.auto, "--provider", help="onnxruntime execution provider"),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Include photos in subfolders"),
    gap: float = typer.Option(DEFAULT_GAP_SECONDS, "--gap", min=0.0,
                              help="Seconds between shots that start a new burst (EXIF DateTimeOriginal + "
                                   "sub-seconds, else file time)"),
    max_distance: int = typer.Option(DEFAULT_MAX_DISTANCE, "--max-distance", min=0, max=63,
                                     help="Perceptual-hash bits (of 63) within which two shots show one scene; "
                                          "0 joins only shots that hash alike, 63 groups by time only"),
    keep_dir: Path = typer.Option(None, "--keep-dir", help="Copy each burst's pick here"),
    reject_dir: Path = typer.Option(None, "--reject-dir", help="Copy the other shots here"),
    link: bool = typer.Option(False, "--link", help="Hard-link instead of copying (same filesystem)"),
    output_format: OutputFormat = typer.Option(OutputFormat.table, "--format", "-f", help="Output format"),
    output: Path = typer.Option(None, "--output", "-o", help="Write the rows to this file instead of stdout"),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Photos per onnxruntime run"),
    threads: int = typer.Option(None, "--threads", min=1, help="onnxruntime intra-op threads"),
    progress: bool = PROGRESS_OPTION,
) -> None:
    """Group photos into bursts and pick the best of each. Never moves or deletes a photo.
    Exit 0: all scored; 1: some could not be read; 2: usage error."""
    if not paths:
        raise fail("no paths given; pass photos, folders or globs", EXIT_USAGE)
    if link and keep_dir is None and reject_dir is None:
        raise fail("--link needs --keep-dir or --reject-dir", EXIT_USAGE)
    files, unmatched = expand_paths(paths, recursive)
    files = [f for f in files if not is_video(f)]
    if not files:
        raise fail(f"no photos matched: {', '.join(paths)}", EXIT_USAGE)
    for argument in unmatched:
        stderr.print(f"[yellow]warning:[/] {escape(argument)} matched no image files", highlight=False)
    target = prepare_output(output) if output is not None else None
    scorer = open_scorer(model, provider, threads)

    from pinet.camera.bursts import BEST_FIELDS, burst_rows, group_bursts, sort_out
    from pinet.camera.photos import PhotoScanner

    with reported_errors(), tracked(progress_wanted(progress)) as tracker:
        bar = tracker.bar("scoring", len(files))
        photos = PhotoScanner(scorer, batch_size, hashes=True).scan(files, on_photo=lambda _: bar.advance())
        bursts = group_bursts(photos, gap, max_distance, scorer.higher_is_better)
        placed = {}
        if keep_dir is not None or reject_dir is not None:
            copying = tracker.bar("linking" if link else "copying", sum(len(b.members) for b in bursts))
            placed = sort_out(bursts, keep_dir, reject_dir, link, on_file=copying.advance)
    rows = burst_rows(photos, bursts, placed)
    title = f"PINet best shots ({scorer.preprocessing.score_name}): {len(bursts)} bursts"
    deliver(render_rows(rows, output_format, BEST_FIELDS, BEST_COLUMNS, title), target, output)

    failures = [p for p in photos if p.error is not None]
    if output_format is OutputFormat.table or output is not None:
        for photo in failures:
            stderr.print(f"[red]failed:[/] {escape(photo.error)}", highlight=False, soft_wrap=True)
    if failures:
        stderr.print(f"{len(photos) - len(failures)} of {len(photos)} photos scored, {len(failures)} failed",
                     highlight=False)
        raise typer.Exit(EXIT_FAILURE)
