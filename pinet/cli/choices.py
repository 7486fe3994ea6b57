"""The CLI's fixed choices as Enums: typer lists them in --help and refuses anything else (exit 2).

Their values are the library's own names (tests/test_cli_choices.py checks they stay equal); they
are spelt out here because the command modules must import nothing heavy at start.
"""

from __future__ import annotations

from enum import Enum


class Device(str, Enum):
    """Where torch runs (training and evaluation)."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class DatasetName(str, Enum):
    """pinet_training.datasets.DATASET_NAMES."""

    koniq10k = "koniq10k"
    clive = "clive"
    spaq = "spaq"
    kadid10k = "kadid10k"
    live = "live"
    csiq = "csiq"
    tid2013 = "tid2013"
    synthetic = "synthetic"
    csv = "csv"


class EvalSplit(str, Enum):
    test = "test"
    all = "all"


class EvalEngine(str, Enum):
    torch = "torch"
    onnx = "onnx"


class Loss(str, Enum):
    """pinet_training.finetune_settings.LOSSES."""

    l1 = "l1"
    mse = "mse"


class BackboneInit(str, Enum):
    auto = "auto"
    imagenet = "imagenet"
    random = "random"


class CalibrationMethod(str, Enum):
    """pinet_export.config.CALIBRATION_METHODS."""

    minmax = "minmax"
    entropy = "entropy"
    percentile = "percentile"


class Int8Target(str, Enum):
    """pinet_export.config.INT8_TARGETS."""

    portable = "portable"
    this_cpu = "this-cpu"


class BenchProvider(str, Enum):
    """pinet_export.bench.PROVIDERS (onnxruntime's CPU or CUDA execution provider)."""

    cpu = "cpu"
    cuda = "cuda"
