"""pinet_runtime.model_file: reading and refusing exported model files, the bundled default, the card.

The tiny ONNX model the runtime tests share lives in tests/helpers/tiny_onnx.py (fixture `tiny_onnx`).
"""

from __future__ import annotations

import json

import pytest

from pinet_runtime import metadata as keys
from pinet_runtime.model_file import ModelFileError, default_model_path, onnx_card, read_model_info
from pinet_runtime.preprocess import Preprocessing


# ---------------------------------------------------------------------------------------------


def test_reads_every_field_of_a_good_model(tiny_onnx, tmp_path):
    path = tiny_onnx.build_tiny_model(tmp_path / "tiny.onnx", metadata={"pinet.parameters": "1234"})
    info = read_model_info(path)
    assert info.preprocessing == tiny_onnx.TINY_PREPROCESSING
    assert info.score_meaning == {"name": "tiny-weighted-mean", "range": [-3.0, 3.0], "higher_is_better": True}
    assert (info.variant, info.stage, info.precision, info.calibration) == ("tiny_test", 2, "fp32", None)
    assert info.source_sha256 == "0" * 64 and info.pinet_version == "0.1.0"
    assert info.export_date.startswith("2026-11-01") and info.format_version == keys.ONNX_FORMAT_VERSION
    assert info.model_config["variant"] == "tiny_test"
    assert info.input.name == "crops" and info.input.shape == ("batch", 3, 32, 32)
    assert info.output.name == "scores" and info.output.shape == ("batch",)
    assert info.parameters == 1234


def test_refuses_a_model_without_metadata_and_lists_missing_keys(tiny_onnx, tmp_path):
    dropped = {keys.PREPROCESSING: None, keys.SCORE_MEANING: None}
    path = tiny_onnx.build_tiny_model(tmp_path / "bare.onnx", metadata=dropped)
    with pytest.raises(ModelFileError) as caught:
        read_model_info(path)
    message = str(caught.value)
    assert str(path) in message and keys.PREPROCESSING in message and keys.SCORE_MEANING in message
    assert keys.VARIANT not in message  # only the missing ones are listed


@pytest.mark.parametrize("override, fragment", [
    ({keys.PREPROCESSING: "{not json"}, "not valid JSON"),
    ({keys.SCORE_MEANING: "[1, 2]"}, "should be a JSON object"),
    ({keys.CALIBRATION: "{oops"}, "not valid JSON"),
    ({keys.FORMAT_VERSION: str(keys.ONNX_FORMAT_VERSION + 1)}, "newer than this runtime"),
    ({keys.FORMAT_VERSION: "one"}, "should be an integer"),
    ({keys.PRECISION: "int4"}, "must be one of"),
    ({keys.PREPROCESSING: json.dumps({"crop_size": 32, "resize_short_side": 40, "future_field": 1})},
     "unknown fields"),
    ({keys.PREPROCESSING: Preprocessing(crop_size=48, resize_short_side=60, score_name="tiny-weighted-mean",
                                        score_range=(-3.0, 3.0)).to_json()}, "axis 2 is 32"),
])
def test_refuses_bad_metadata_naming_the_problem(tiny_onnx, tmp_path, override, fragment):
    path = tiny_onnx.build_tiny_model(tmp_path / "bad.onnx", metadata=override)
    with pytest.raises(ModelFileError, match=fragment) as caught:
        read_model_info(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("names, fragment", [
    ({"input_name": "images"}, "no input named 'crops'"),
    ({"output_name": "logits"}, "no output named 'scores'"),
])
def test_refuses_wrong_input_or_output_names(tiny_onnx, tmp_path, names, fragment):
    path = tiny_onnx.build_tiny_model(tmp_path / "renamed.onnx", **names)
    with pytest.raises(ModelFileError, match=fragment):
        read_model_info(path)


def test_refuses_missing_empty_and_non_onnx_files(tmp_path):
    with pytest.raises(ModelFileError, match="no such file"):
        read_model_info(tmp_path / "absent.onnx")
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(ModelFileError, match="empty file"):
        read_model_info(tmp_path / "empty.onnx")
    (tmp_path / "text.onnx").write_text("this is not a protobuf at all\n" * 10)
    with pytest.raises(ModelFileError, match="not an ONNX model onnxruntime can load"):
        read_model_info(tmp_path / "text.onnx")


def test_default_model_path_is_bundled_or_refused_clearly():
    for precision in ("int8", "fp32"):
        try:
            path = default_model_path(precision)
        except ModelFileError as err:
            assert "no bundled default model in this install; pass --model FILE" in str(err)
        else:  # once the lead bundles the defaults they must be valid PINet models of that precision
            assert read_model_info(path).precision == precision
    with pytest.raises(ValueError, match="no bundled default for precision"):
        default_model_path("fp64")


def test_onnx_card_and_pinet_info(tiny_onnx, tmp_path):
    path = tiny_onnx.build_tiny_model(tmp_path / "tiny.onnx")
    card = onnx_card(path)
    assert card["kind"] == "onnx" and card["variant"] == "tiny_test" and card["precision"] == "fp32"
    assert card["file_size_bytes"] == path.stat().st_size
    assert card["input"] == {"name": "crops", "shape": ["batch", 3, 32, 32], "type": "tensor(float)"}
    assert card["output"]["shape"] == ["batch"] and card["calibration"] == "none"
    assert card["preprocessing"]["crop_size"] == 32 and card["parameters"] is None

    from typer.testing import CliRunner

    from pinet.cli.app import app

    shown = CliRunner().invoke(app, ["info", str(path), "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["source_checkpoint_sha256"] == "0" * 64

    bad = tiny_onnx.build_tiny_model(tmp_path / "bad.onnx", metadata={keys.STAGE: None})
    refused = CliRunner().invoke(app, ["info", str(bad)])
    assert refused.exit_code == 1 and keys.STAGE in refused.stderr and "Traceback" not in refused.output
