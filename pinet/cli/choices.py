"""The CLI's fixed choices as ``str`` Enums: typer lists them in --help and refuses anything else (exit 2).

Their values are the library's own names (tests/test_cli_choices.py checks they stay equal); they
are spelt out here because the command modules must import nothing heavy at start.
"""

from __future__ import annotations

from enum import Enum


def _choices(name: str, *values: str) -> type[Enum]:
    """A str Enum of ``values``; a '-' in a value is '_' in its member's name (``this-cpu`` -> ``this_cpu``)."""
    return Enum(name, [(value.replace("-", "_"), value) for value in values], type=str, module=__name__)


Device = _choices("Device", "auto", "cpu", "cuda")                      # where torch runs
# pinet_training.datasets.DATASET_NAMES
DatasetName = _choices("DatasetName", "koniq10k", "clive", "spaq", "kadid10k", "live", "csiq", "tid2013",
                       "synthetic", "csv")
EvalSplit = _choices("EvalSplit", "test", "all")
SynthSplit = _choices("SynthSplit", "train", "val")                     # pinet_training.synth_manifest.SPLITS
EvalEngine = _choices("EvalEngine", "torch", "onnx")
MixPairs = _choices("MixPairs", "any", "within-reference")               # pinet_training.finetune_settings.MIX_PAIRS
CacheLevel = _choices("CacheLevel", "features", "taps")                  # pinet_training.head_cache.LEVELS
Loss = _choices("Loss", "l1", "mse")                                    # pinet_training.finetune_settings.LOSSES
EpochChoice = _choices("EpochChoice", "validation", "last")             # pinet_training.finetune_settings.EPOCH_CHOICES
RankTargets = _choices("RankTargets", "hard", "thurstone")              # pinet_training.mixed.RANK_TARGETS
BackboneInit = _choices("BackboneInit", "auto", "imagenet", "random")
CalibrationMethod = _choices("CalibrationMethod", "minmax", "entropy", "percentile")  # pinet_export.config
Int8Target = _choices("Int8Target", "portable", "this-cpu")             # pinet_export.config.INT8_TARGETS
BenchProvider = _choices("BenchProvider", "cpu", "cuda")                # pinet_export.bench.PROVIDERS
