"""Readers for the label containers the published datasets use: CSV, whitespace text, .xlsx, .mat.

Each returns plain Python rows and raises :class:`DatasetError` naming the file and the problem.
openpyxl and scipy are imported inside the functions (they belong to the ``train`` extra).
"""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

from pinet_training.datasets.common import DatasetError


def read_csv_table(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    """Rows of a headed CSV as dicts (column names stripped); error when a required column is absent."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            missing = [c for c in required if c not in columns]
            if missing:
                raise DatasetError(path, f"missing column(s) {missing}; header is {columns}")
            rows = []
            for raw in reader:
                rows.append({(k or "").strip(): (v or "").strip() for k, v in raw.items() if k is not None})
            return rows
    except UnicodeDecodeError as error:
        raise DatasetError(path, f"is not UTF-8 text ({error.reason})") from None
    except csv.Error as error:
        raise DatasetError(path, f"is not a valid CSV file ({error})") from None


def read_text_lines(path: Path) -> list[tuple[int, str]]:
    """Non-empty lines with their 1-based line numbers."""
    try:
        text = path.read_text(encoding="utf-8-sig", errors="strict")
    except UnicodeDecodeError:
        text = path.read_text(encoding="latin-1")  # old lab files are sometimes Windows-1252
    return [(number, line.strip()) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]


def read_xlsx_table(path: Path, required: Sequence[str], preferred_sheet: str | None = None) -> list[dict[str, object]]:
    """Rows under the first header row (in any sheet) that has all ``required`` column names.

    Published workbooks carry title rows above the header and several sheets (CSIQ has
    ``all_by_image`` and ``all_by_distortion``), so the header is searched, not assumed at A1.
    Matching ignores case and surrounding spaces. Rows stop at the first fully empty row.
    """
    from openpyxl import load_workbook
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        workbook = load_workbook(path, read_only=True, data_only=True)
    except (InvalidFileException, zipfile.BadZipFile, OSError, KeyError, ValueError) as error:
        raise DatasetError(path, f"is not a readable .xlsx workbook ({error})") from None
    wanted = [name.strip().lower() for name in required]
    sheets = list(workbook.worksheets)
    if preferred_sheet is not None:
        sheets.sort(key=lambda sheet: sheet.title != preferred_sheet)
    try:
        for sheet in sheets:
            rows = list(sheet.iter_rows(values_only=True))
            for header_index, header in enumerate(rows[:50]):
                names = [str(cell).strip().lower() if cell is not None else "" for cell in header]
                if all(name in names for name in wanted):
                    return _rows_below(rows, header_index, names)
    finally:
        workbook.close()
    raise DatasetError(path, f"no sheet has a header row with the columns {list(required)}")


def _rows_below(rows: list[tuple], header_index: int, names: list[str]) -> list[dict[str, object]]:
    table = []
    for row in rows[header_index + 1:]:
        if all(cell is None or str(cell).strip() == "" for cell in row):
            break
        table.append({name: cell for name, cell in zip(names, row) if name})
    return table


def load_mat_variable(path: Path, variable: str) -> np.ndarray:
    """One variable of a MATLAB .mat file (v5, as the LIVE databases ship)."""
    import scipy.io
    from scipy.io.matlab import MatReadError

    try:
        contents = scipy.io.loadmat(str(path))
    except (MatReadError, ValueError, OSError, TypeError, NotImplementedError) as error:
        raise DatasetError(path, f"is not a readable MATLAB .mat file ({error})") from None
    if variable not in contents:
        present = sorted(k for k in contents if not k.startswith("__"))
        raise DatasetError(path, f"has no variable '{variable}' (it has {present})")
    return contents[variable]


def mat_strings(array: np.ndarray) -> list[str]:
    """A MATLAB cell array of strings (any shape) as a flat list of Python strings."""
    flat = np.asarray(array, dtype=object).reshape(-1, order="F") if array.dtype == object else array.reshape(-1)
    strings = []
    for item in flat:
        while isinstance(item, np.ndarray):
            item = item.reshape(-1)[0] if item.size else ""
        strings.append(str(item).strip())
    return strings


def mat_numbers(array: np.ndarray) -> list[float]:
    return [float(v) for v in np.asarray(array, dtype=np.float64).reshape(-1)]
