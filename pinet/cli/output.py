"""Result rows out of a command: table|json|jsonl|csv rendering, stdout, and `--output FILE`.

Shared by `pinet score` (photos and video frames) and `pinet best`, so every command's rows come
out the same way. Only the standard library loads at import; rich loads when a table is drawn.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import typer
from rich.markup import escape

from pinet.cli.common import EXIT_FAILURE, EXIT_USAGE, fail, stderr

# File names that are not valid UTF-8 reach Python as lone surrogates (PEP 383). Text output
# encodes them back to the name's original bytes (the os.fsdecode/os.fsencode round trip), so a
# CSV or table row names the file exactly; JSON carries them as \udcXX escapes.
TEXT_ERRORS = "surrogateescape"


class OutputFormat(str, Enum):
    table = "table"
    json = "json"
    jsonl = "jsonl"
    csv = "csv"


@dataclass(frozen=True)
class Column:
    """One table column: the record field it shows, its heading and its alignment."""

    field: str
    heading: str
    justify: str = "left"


def _cell(value) -> str:
    """A CSV cell: empty for None, compact JSON for lists and dicts (video worst segments)."""
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    return value


def _shown(field: str, value) -> str:
    if value is None:
        return "[red]failed[/]" if field == "score" else ""
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, float):
        return f"{value:.2f}" if field == "time" else f"{value:.4f}"
    if isinstance(value, list):  # a video's worst segments
        return "; ".join(f"{s['start']:.2f}-{s['end']:.2f} s ({s['mean']:.3f})" for s in value)
    return str(value)


def render_rows(records: list[dict], output_format: OutputFormat, fields: tuple[str, ...],
                columns: tuple[Column, ...], title: str) -> str:
    """``records`` (dicts holding ``fields``) in one of the four formats.

    JSON is ASCII (non-ASCII and surrogate-escaped file names as \\uXXXX escapes) and never NaN.
    """
    if output_format is OutputFormat.json:
        return json.dumps(records, indent=2, allow_nan=False) + "\n"
    if output_format is OutputFormat.jsonl:
        return "".join(json.dumps(record, allow_nan=False) + "\n" for record in records)
    if output_format is OutputFormat.csv:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        for record in records:
            writer.writerow({k: _cell(record.get(k)) for k in fields})
        return buffer.getvalue()
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title)
    for column in columns:
        table.add_column(column.heading, justify=column.justify, overflow="fold")
    for record in records:
        cells = []
        for column in columns:
            value = record.get(column.field)
            # A file name is never markup; the "failed" marker is.
            cells.append(Text(str(value)) if column.field == "path" else _shown(column.field, value))
        table.add_row(*cells)
    buffer = io.StringIO()
    widest = max((len(str(r.get("path", ""))) for r in records), default=0)
    Console(file=buffer, width=max(100, min(200, widest + 30 + 8 * len(columns))), force_terminal=False,
            color_system=None).print(table)
    return buffer.getvalue()


def prepare_output(output: Path, option: str = "--output") -> Path:
    """Check before any work that ``output`` can be written; returns the file to write (symbolic
    links resolved). Creates missing parent folders. Raises typer.Exit(2) naming ``option`` and the reason."""
    target = Path(os.path.realpath(output))
    if target.is_dir():
        raise fail(f"{option} {output} is a directory; name a file", EXIT_USAGE)
    if target.exists() and not target.is_file():
        return target  # a device or pipe (/dev/stdout): written in place, not replaced
    from pinet_runtime.files import temporary_path

    try:
        temporary_path(target).unlink()  # the folder exists (created) and takes a new file
    except OSError as err:
        raise fail(f"{option} {output} cannot be written ({err.strerror or err}: {err.filename or target.parent})",
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


def deliver(text: str, target: Path | None, output: Path | None) -> None:
    """Write the rendered rows to ``target`` (atomically) or stdout. When the file cannot be written
    (the disk filled up while scoring) the rows still come out on stdout and the command exits 1."""
    if target is None:
        write_stdout(text)
        return
    from pinet_runtime.files import write_text_atomic

    try:
        write_text_atomic(target, text, errors=TEXT_ERRORS)
    except OSError as err:
        stderr.print(f"[red]error:[/] cannot write {escape(str(output))} ({escape(err.strerror or str(err))}); "
                     "the results follow on stdout", highlight=False)
        write_stdout(text)
        raise typer.Exit(EXIT_FAILURE) from None
