"""``load_dataset(name, root)``: one entry point for every supported dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from pinet_runtime.errors import PinetError
from pinet_training.datasets.authentic import load_clive, load_koniq10k, load_spaq
from pinet_training.datasets.common import IQADataset
from pinet_training.datasets.generic import CsvScale, load_generic_csv, load_synth_set
from pinet_training.datasets.lab_distorted import load_csiq, load_kadid10k, load_live, load_tid2013

_LOADERS: dict[str, Callable[[Path | str], IQADataset]] = {
    "koniq10k": load_koniq10k,
    "clive": load_clive,
    "spaq": load_spaq,
    "kadid10k": load_kadid10k,
    "live": load_live,
    "csiq": load_csiq,
    "tid2013": load_tid2013,
    "synthetic": load_synth_set,       # the CLI name users type for the synth set
}
DATASET_NAMES: tuple[str, ...] = (*_LOADERS, "csv")


class UnknownDatasetError(PinetError):
    def __init__(self, name: str):
        self.name = name
        super().__init__(f"unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)}")


class DatasetOptionError(PinetError):
    """An option that does not apply to the named dataset (csv_scale, include_anchors)."""


ANCHOR_AWARE = ("csv", "clive")       # loaders with a role column whose anchor rows are optional


def load_dataset(name: str, root: Path | str, csv_scale: CsvScale | None = None,
                 include_anchors: bool = False) -> IQADataset:
    """Load dataset ``name`` from ``root`` in its published layout.

    ``csv_scale`` is required for ``name="csv"`` (the file cannot declare its own scale) and
    refused for the others (their scale is part of the published dataset). ``include_anchors``
    keeps a CSV's ``role=anchor`` rows (left out by default; csv and clive only).
    """
    key = name.strip().lower()
    if include_anchors and key not in ANCHOR_AWARE:
        raise DatasetOptionError(f"include_anchors only applies to {' and '.join(ANCHOR_AWARE)}, not {name!r}")
    if key == "csv":
        if csv_scale is None:
            raise DatasetOptionError("the 'csv' dataset needs its score range and direction declared (csv_scale)")
        return load_generic_csv(root, csv_scale, include_anchors=include_anchors)
    if key not in _LOADERS:
        raise UnknownDatasetError(name)
    if csv_scale is not None:
        raise DatasetOptionError(f"csv_scale only applies to the 'csv' dataset, not {name!r}")
    if key == "clive":
        return load_clive(root, include_anchors=include_anchors)
    return _LOADERS[key](root)
