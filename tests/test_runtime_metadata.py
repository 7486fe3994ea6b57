"""The typed model-file contract: ModelMetadata <-> ONNX metadata_props,
its schema, export's use of it (parameter count included) and the quantizer's dict rewrites."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime

import pytest

from pinet_runtime import metadata as keys
from pinet_runtime.errors import MetadataError, ModelFileError
from pinet_runtime.metadata import ModelMetadata
from pinet_runtime.preprocess import Preprocessing


def _metadata(**changes) -> ModelMetadata:
    values = dict(preprocessing=Preprocessing(crop_size=32, resize_short_side=40), variant="tiny_test",
                  model_config={"variant": "tiny_test", "tap_channels": (1, 2)}, precision="int8",
                  source_sha256="ab" * 32, pinet_version="0.1.0", export_date="2026-11-28T10:00:00+00:00",
                  calibration={"reduce_range": False, "portable": True, "method": "minmax", "photos": [1, 2]},
                  parameters=4227473)
    values.update(changes)
    return ModelMetadata(**values)


def test_round_trip_through_props_keeps_every_field():
    meta = _metadata(extra={"onnx.infer": "onnxruntime.quant"})
    props = meta.to_props()
    assert all(isinstance(v, str) for v in props.values())
    assert set(keys.REQUIRED_KEYS) | {keys.PARAMETERS, "onnx.infer"} == set(props)
    assert props[keys.PARAMETERS] == "4227473" and props[keys.STAGE] == "2"
    back = ModelMetadata.from_props(props, "x.onnx")
    assert back == meta and back.to_props() == props
    assert [f.name for f in dataclasses.fields(back) if getattr(back, f.name) != getattr(meta, f.name)] == []
    assert back.model_config["tap_channels"] == [1, 2]  # JSON form, whatever was passed in
    assert json.loads(props[keys.SCORE_MEANING]) == back.score_meaning == {
        "name": "pseudo-MOS", "range": [0.0, 1.0], "higher_is_better": True}
    no_calibration = _metadata(precision="fp32", calibration=None, parameters=None)
    assert no_calibration.to_props()[keys.CALIBRATION] == "none" and keys.PARAMETERS not in no_calibration.to_props()
    assert ModelMetadata.from_props(no_calibration.to_props(), "y.onnx") == no_calibration


@pytest.mark.parametrize("changes, key, fragment", [
    ({"precision": "int4"}, keys.PRECISION, "precision must be one of"),
    ({"parameters": True}, keys.PARAMETERS, "parameters must be an integer"),
    ({"parameters": 0}, keys.PARAMETERS, "in [1,"),
    ({"calibration": {"reduce_range": "false"}}, keys.CALIBRATION, "reduce_range must be a boolean"),
    ({"stage": 1}, keys.STAGE, "must be 2"),
    ({"variant": ""}, keys.VARIANT, "variant must be a non-empty printable string"),
    ({"model_config": {"variant": "other"}}, keys.MODEL_CONFIG, "disagrees"),
    ({"export_date": "28/11/2026"}, keys.EXPORT_DATE, "ISO 8601"),
    ({"source_sha256": "AB" * 32}, keys.SOURCE_SHA256, "64 lowercase hex"),
    ({"format_version": 99}, keys.FORMAT_VERSION, "format version must be an integer in [1, 1]"),
])
def test_construction_refuses_bad_fields_naming_the_key(changes, key, fragment):
    with pytest.raises(MetadataError) as caught:
        _metadata(**changes)
    assert caught.value.field == key and key in str(caught.value) and fragment in str(caught.value)


def test_from_props_lists_every_missing_key_and_names_the_file():
    props = _metadata().to_props()
    del props[keys.VARIANT], props[keys.EXPORT_DATE]
    with pytest.raises(ModelFileError, match=f"missing: {keys.VARIANT}, {keys.EXPORT_DATE}") as caught:
        ModelMetadata.from_props(props, "some/model.onnx")
    assert caught.value.path == "some/model.onnx"
    partial = json.loads(_metadata().to_props()[keys.PREPROCESSING])
    del partial["std"]
    props = {**_metadata().to_props(), keys.PREPROCESSING: json.dumps(partial)}
    with pytest.raises(ModelFileError, match="fields missing: std"):
        ModelMetadata.from_props(props, "m.onnx")


def test_set_metadata_takes_the_typed_object_or_the_quantizers_dict(tiny_onnx, tmp_path):
    onnx = pytest.importorskip("onnx")
    from pinet_export.onnx_metadata import read_typed_metadata, set_metadata

    proto = onnx.load(str(tiny_onnx.build_tiny_model(tmp_path / "tiny.onnx")))
    proto.metadata_props.add().CopyFrom(onnx.StringStringEntryProto(key="onnx.infer", value="onnxruntime.quant"))
    typed = _metadata(preprocessing=tiny_onnx.TINY_PREPROCESSING, precision="fp32", calibration=None)
    set_metadata(proto, typed)
    assert read_typed_metadata(proto).extra == {"onnx.infer": "onnxruntime.quant"}
    calibration = {"reduce_range": True, "portable": True, "anything": {"free": "form"}}
    set_metadata(proto, {keys.PRECISION: "int8", keys.CALIBRATION: json.dumps(calibration)})
    read = read_typed_metadata(proto)
    assert (read.precision, read.calibration, read.parameters) == ("int8", calibration, 4227473)
    with pytest.raises(ValueError, match="portable must be a boolean"):
        set_metadata(proto, {keys.CALIBRATION: json.dumps({"portable": "yes"})})
    with pytest.raises(TypeError, match="must be strings"):
        set_metadata(proto, {keys.STAGE: 2})
    assert read_typed_metadata(proto) == read  # a refused rewrite leaves the file's metadata as it was


def test_bundled_models_still_load_through_the_typed_contract():
    from pinet_runtime.model_file import default_model_path, read_model_info

    for precision in ("fp32", "int8"):
        try:
            info = read_model_info(default_model_path(precision))
        except ModelFileError as err:
            assert "no bundled default model" in str(err)
            continue
        assert info.metadata.precision == precision and info.metadata.variant == "pinet_lite0"
        assert ModelMetadata.from_props(info.metadata.to_props(), "again") == info.metadata


@pytest.mark.slow
def test_pinet_export_writes_metadata_that_round_trips_with_the_parameter_count(tmp_path, one_torch_thread):
    pytest.importorskip("onnxsim")
    torch = pytest.importorskip("torch")
    import onnx
    from typer.testing import CliRunner

    from pinet import __version__
    from pinet.checkpoint import file_sha256, save_checkpoint
    from pinet.cli.app import app
    from pinet.models import create_model, default_preprocessing
    from pinet.model_cost import count_parameters
    from pinet_runtime.model_file import read_model_info

    torch.manual_seed(0)
    model = create_model("pinet_lite0", stage=2).eval()
    prep = dataclasses.replace(default_preprocessing("pinet_lite0"), crop_size=64, resize_short_side=80)
    checkpoint = save_checkpoint(tmp_path / "s2.safetensors", model, prep, {"note": "test"})
    done = CliRunner().invoke(app, ["export", str(checkpoint), "--out", str(tmp_path / "out"), "--no-validate"])
    assert done.exit_code == 0, done.output
    path = tmp_path / "out" / "model.onnx"
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    meta = read_model_info(path).metadata
    assert meta.to_props() == props  # every key, byte for byte
    assert meta.parameters == count_parameters(model) == int(props[keys.PARAMETERS])
    assert meta.preprocessing == prep and meta.model_config == json.loads(model.config.to_json())
    assert (meta.variant, meta.stage, meta.precision, meta.calibration) == ("pinet_lite0", 2, "fp32", None)
    assert meta.source_sha256 == file_sha256(checkpoint) and meta.pinet_version == __version__
    assert datetime.fromisoformat(meta.export_date).tzinfo is not None and not meta.extra
    card = CliRunner().invoke(app, ["info", str(path), "--json"])
    assert card.exit_code == 0 and json.loads(card.stdout)["parameters"] == count_parameters(model)
