"""FP32 export: parity with PyTorch on real photo crops, metadata, and rejection of a tampered file."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from pinet.checkpoint import file_sha256, save_checkpoint  # noqa: E402
from pinet.models import create_model, default_preprocessing  # noqa: E402
from pinet_export import export_fp32  # noqa: E402
from pinet_runtime import metadata as keys  # noqa: E402
from pinet_runtime.preprocess import Preprocessing, preprocess  # noqa: E402


def _small_prep() -> Preprocessing:
    return dataclasses.replace(default_preprocessing("pinet_lite0"), crop_size=64, resize_short_side=80)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(3)
    model = create_model("pinet_lite0", stage=2).eval()
    work = tmp_path_factory.mktemp("fp32")
    checkpoint = save_checkpoint(work / "tiny.safetensors", model, _small_prep(), {"note": "test"})
    path = export_fp32(checkpoint, work / "out" / "model.onnx")
    return model, checkpoint, path


@pytest.mark.slow
def test_fp32_matches_torch_at_batch_1_and_5_on_real_photo_crops(exported, sample_photos):
    model, _, path = exported
    prep = _small_prep()
    crops = np.concatenate([preprocess(photo, prep) for photo in sample_photos])
    assert crops.shape[1:] == (3, 64, 64) and len(crops) >= 16
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [keys.INPUT_NAME]
    assert [o.name for o in session.get_outputs()] == [keys.OUTPUT_NAME]
    for batch in (1, 5):
        x = crops[:batch]
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).numpy()
        got = session.run(None, {keys.INPUT_NAME: x})[0]
        assert got.shape == (batch,)
        assert np.abs(got - expected).max() <= 1e-4


@pytest.mark.slow
def test_fp32_file_is_single_file_and_carries_every_metadata_key(exported):
    model, checkpoint, path = exported
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.onnx"]  # no temp or external data left
    proto = onnx.load(str(path))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert set(keys.REQUIRED_KEYS) <= set(meta)
    assert Preprocessing.from_json(meta[keys.PREPROCESSING]) == _small_prep()
    assert json.loads(meta[keys.SCORE_MEANING]) == {"name": "pseudo-MOS", "range": [0.0, 1.0],
                                                    "higher_is_better": True}
    assert json.loads(meta[keys.MODEL_CONFIG]) == model.config.to_dict() | {
        k: list(v) for k, v in model.config.to_dict().items() if isinstance(v, tuple)}
    assert meta[keys.SOURCE_SHA256] == file_sha256(checkpoint)
    assert (meta[keys.PRECISION], meta[keys.STAGE], meta[keys.CALIBRATION]) == ("fp32", "2", "none")
    assert not any(key.startswith("onnxsim.") for key in meta)


@pytest.mark.slow
def test_tampered_file_without_metadata_is_rejected(exported, tmp_path):
    _, _, path = exported
    proto = onnx.load(str(path))
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key != keys.PREPROCESSING]
    del proto.metadata_props[:]
    for key, value in kept:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    tampered = tmp_path / "tampered.onnx"
    onnx.save(proto, str(tampered))
    from pinet_runtime.model_file import ModelFileError, read_model_info

    with pytest.raises(ModelFileError) as info:
        read_model_info(tampered)
    assert "tampered.onnx" in str(info.value) and keys.PREPROCESSING in str(info.value)


@pytest.mark.slow
def test_fixed_batch_export_declares_that_batch_and_keeps_parity(exported, tmp_path, sample_photos):
    model, checkpoint, _ = exported
    path = export_fp32(checkpoint, tmp_path / "fixed.onnx", batch="5")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [5, 3, 64, 64]
    crops = preprocess(sample_photos[0], _small_prep())
    with torch.no_grad():
        expected = model(torch.from_numpy(crops)).numpy()
    assert np.abs(session.run(None, {keys.INPUT_NAME: crops})[0] - expected).max() <= 1e-4
