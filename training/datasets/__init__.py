"""Loaders for human-rated IQA datasets in their published layouts.

``load_dataset(name, root)`` returns an :class:`IQADataset` whose samples carry a normalised
score (0..1, higher is better), the published raw score and a content group for splitting.
"""

from pinet_training.datasets.common import ContentKind, DatasetError, IQADataset, IQASample, ScoreScale
from pinet_training.datasets.generic import CsvScale
from pinet_training.datasets.registry import DATASET_NAMES, UnknownDatasetError, load_dataset

__all__ = ["ContentKind", "CsvScale", "DATASET_NAMES", "DatasetError", "IQADataset", "IQASample",
           "ScoreScale", "UnknownDatasetError", "load_dataset"]
