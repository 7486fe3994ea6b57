"""The CLI's Enum choices stay equal to the library's names, and typer enforces them (exit 2)."""

import pytest
from typer.testing import CliRunner

from pinet.cli import choices
from pinet.cli.app import app


def _values(enum) -> list[str]:
    return [member.value for member in enum]


def test_choices_are_the_library_names():
    from pinet_export.bench import BenchSettings
    from pinet_export.config import CALIBRATION_METHODS, INT8_TARGETS
    from pinet_training.datasets import DATASET_NAMES
    from pinet_training.engine import select_device
    from pinet_training.finetune_settings import EPOCH_CHOICES, LOSSES
    from pinet_training.mixed import RANK_TARGETS
    from pinet_training.synth_manifest import SPLITS

    assert sorted(_values(choices.DatasetName)) == sorted(DATASET_NAMES)
    assert _values(choices.Loss) == list(LOSSES)
    assert _values(choices.EpochChoice) == list(EPOCH_CHOICES)
    assert _values(choices.RankTargets) == list(RANK_TARGETS)
    assert _values(choices.SynthSplit) == list(SPLITS)
    assert _values(choices.CalibrationMethod) == list(CALIBRATION_METHODS)
    assert _values(choices.Int8Target) == list(INT8_TARGETS)
    for provider in _values(choices.BenchProvider):
        assert BenchSettings(provider=provider).provider == provider     # refused values raise BenchError
    assert select_device(choices.Device.cpu.value).type == "cpu"
    assert {choices.Device.auto.value, choices.Device.cuda.value} == {"auto", "cuda"}   # select_device's others


@pytest.mark.parametrize("arguments, option", [
    (["eval", "x.safetensors", "--dataset", "imagenet", "--root", "."], "--dataset"),
    (["eval", "x.safetensors", "--dataset", "csv", "--root", ".", "--split", "train"], "--split"),
    (["eval", "x.safetensors", "--dataset", "csv", "--root", ".", "--device", "tpu"], "--device"),
    (["export", "x.safetensors", "--int8-target", "fastest"], "--int8-target"),
    (["train", "finetune", "--dataset", "csv", "--root", ".", "--out", "r", "--loss", "huber"], "--loss"),
    (["train", "finetune", "--dataset", "csv", "--root", ".", "--out", "r", "--rank-targets", "soft"], "--rank-targets"),
    (["train", "finetune", "--dataset", "csv", "--root", ".", "--out", "r", "--eval-engine", "tvm"], "--eval-engine"),
    (["train", "finetune", "--dataset", "csv", "--root", ".", "--out", "r", "--backbone-init", "zeros"],
     "--backbone-init"),
    (["train", "pretrain", "--data", ".", "--variant", "pinet_lite0", "--out", "r", "--device", "gpu"], "--device"),
    (["bench", "m.onnx", "--provider", "tensorrt"], "--provider"),
    (["data", "validate", "m.onnx", "--data", ".", "--out", "r", "--split", "test"], "--split"),
])
def test_a_value_outside_the_choices_is_a_usage_error_naming_the_option(arguments, option):
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 2 and option in result.output and "Traceback" not in result.output


def test_dataset_names_stay_case_insensitive(tmp_path):
    result = CliRunner().invoke(app, ["eval", str(tmp_path / "missing.safetensors"), "--dataset", "KonIQ10k",
                                      "--root", str(tmp_path)])
    assert result.exit_code == 1 and "missing.safetensors" in result.output   # got past the choice check
