"""Loaders for IQA datasets: human-rated ones in their published layouts, a generic CSV, the synth set.

``load_dataset(name, root)`` returns an :class:`IQADataset` whose samples carry a normalised
score (0..1, higher is better), the published raw score and a content group for splitting.

"Synthetic" has three meanings in IQA code; this project keeps them apart by name:

* **synth** is our distortion generator (`pinet data synth`, :mod:`pinet_training.synth`): it
  distorts pristine reference photos with the distortion bank and scores each copy against its
  reference with a full-reference pseudo-MOS.
* the **synth set** is the folder it writes: images plus ``manifest.csv``
  (:mod:`pinet_training.synth_manifest`), loaded by :func:`~pinet_training.datasets.generic.load_synth_set`
  under the dataset name ``synthetic`` (the name users type).
* the **lab-distorted databases** are the published, human-rated sets of lab-distorted reference
  photos: KADID-10k, LIVE, CSIQ, TID2013 (:mod:`pinet_training.datasets.lab_distorted`).

Both kinds of distorted sets have the content kind ``"synthetic"`` (the literature's word): every
image is a distorted copy of a reference, so splits keep a reference's images together, while
``"authentic"`` sets (camera photos: KonIQ-10k, CLIVE, SPAQ) give each image its own group.
"""

from pinet_training.datasets.common import ContentKind, DatasetError, IQADataset, IQASample, ScoreScale
from pinet_training.datasets.generic import CsvScale
from pinet_training.datasets.registry import DATASET_NAMES, UnknownDatasetError, load_dataset

__all__ = ["ContentKind", "CsvScale", "DATASET_NAMES", "DatasetError", "IQADataset", "IQASample",
           "ScoreScale", "UnknownDatasetError", "load_dataset"]
