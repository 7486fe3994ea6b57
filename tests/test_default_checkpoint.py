"""The default checkpoint rebuilt from the bundled FP32 ONNX file (what a wheel install's
`pinet export` uses, since the wheel leaves pinet/assets/default.safetensors out): it scores as the
ONNX file and as the shipped checkpoint, it is cached once, a tampered file is refused naming the
file and the problem, and exporting it gives the bundled model back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from onnx import numpy_helper  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from pinet.checkpoint import file_sha256, load_checkpoint, read_header  # noqa: E402
from pinet_export import default_checkpoint as rebuild  # noqa: E402
from pinet_runtime import Scorer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BUNDLED_ONNX = ROOT / "runtime" / "assets" / "default.onnx"
SHIPPED_CHECKPOINT = ROOT / "pinet" / "assets" / "default.safetensors"
# A convolution of the quality branch (no BatchNorm): its ONNX weight is the checkpoint's, exactly.
PLAIN_CONV = "quality_branch.convs.1.weight"


@pytest.fixture(scope="module")
def rebuilt(one_torch_thread):
    model, prep, metadata = rebuild.rebuild_model(BUNDLED_ONNX)
    return model, prep, metadata


@pytest.fixture(scope="module")
def check_crops(sample_photos):
    """Crops of photos the rebuild's own check does not use (it takes the first ones)."""
    scorer = Scorer(BUNDLED_ONNX, providers="cpu")
    return np.concatenate([scorer.crops(path) for path in sample_photos[-3:]])


def _torch_scores(model, crops: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(crops)).double().numpy().reshape(-1)


def _tampered(tmp_path: Path, change) -> Path:
    proto = onnx.load(str(BUNDLED_ONNX))
    change(proto)
    path = tmp_path / "tampered.onnx"
    onnx.save_model(proto, str(path))
    return path


def _initializer(proto, name: str):
    return next(tensor for tensor in proto.graph.initializer if tensor.name == name)


@pytest.mark.slow
def test_rebuilt_model_scores_like_the_onnx_file_and_the_shipped_checkpoint(rebuilt, check_crops):
    model, prep, metadata = rebuilt
    onnx_scores = Scorer(BUNDLED_ONNX, providers="cpu").score_crops(check_crops)
    assert np.abs(_torch_scores(model, check_crops) - onnx_scores).max() < 1e-5
    assert onnx_scores.std() > 0.01  # different photos score differently: the comparison means something

    shipped = load_checkpoint(SHIPPED_CHECKPOINT, stage=2)
    assert prep == shipped.header.preprocessing
    assert metadata.model_config == json.loads(shipped.model.config.to_json())
    # Layers without BatchNorm come back bit for bit; folded ones only change the scores by rounding.
    assert torch.equal(model.state_dict()[PLAIN_CONV], shipped.model.state_dict()[PLAIN_CONV])
    assert np.abs(_torch_scores(model, check_crops) - _torch_scores(shipped.model, check_crops)).max() < 1e-4
    # Every BatchNorm is the identity holding the folded shift.
    norm = model.backbone.bn0
    assert torch.equal(norm.weight, torch.ones_like(norm.weight)) and not torch.equal(norm.bias, shipped.model.backbone.bn0.bias)
    assert torch.allclose(torch.sqrt(norm.running_var + norm.eps), torch.ones_like(norm.running_var))


@pytest.mark.slow
def test_default_checkpoint_is_rebuilt_once_into_the_cache(tmp_path, monkeypatch, one_torch_thread):
    monkeypatch.setenv(rebuild.CACHE_ENV, str(tmp_path / "cache"))
    messages = []
    path = rebuild.default_checkpoint_from_onnx(messages.append)
    assert path.parent == tmp_path / "cache" and len(messages) == 1 and "default.onnx" in messages[0]
    header = read_header(path)
    assert header.stage == 2 and header.training["kind"] == "rebuilt_from_onnx"
    assert header.training["rebuilt_from_onnx_sha256"] == file_sha256(BUNDLED_ONNX)
    assert header.training["max_score_difference"] < rebuild.SCORE_TOLERANCE
    assert header.cost["parameters"] == 4227473  # the count the ONNX metadata states
    load_checkpoint(path, stage=2)

    def no_second_rebuild(onnx_path):
        raise AssertionError("rebuilt again although the cache holds it")

    monkeypatch.setattr(rebuild, "rebuild_model", no_second_rebuild)
    assert rebuild.default_checkpoint_from_onnx(messages.append) == path and len(messages) == 1
    # A damaged cache entry is rebuilt over, not trusted.
    monkeypatch.undo()
    monkeypatch.setenv(rebuild.CACHE_ENV, str(tmp_path / "cache"))
    path.write_bytes(b"truncated")
    assert rebuild.default_checkpoint_from_onnx(messages.append) == path and len(messages) == 2
    assert read_header(path).stage == 2


def test_initializer_with_a_changed_shape_is_refused_naming_file_and_tensor(tmp_path):
    def shrink(proto):
        tensor = _initializer(proto, PLAIN_CONV)
        tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor)[:, :, :1, :1].copy(), PLAIN_CONV))

    path = _tampered(tmp_path, shrink)
    with pytest.raises(rebuild.RebuildError) as raised:
        rebuild.rebuild_model(path)
    message = str(raised.value)
    assert str(path) in message and PLAIN_CONV in message and "(80, 160, 1, 1)" in message and "(80, 160, 3, 3)" in message


def test_weight_matching_no_layer_is_refused(tmp_path):
    def rename(proto):
        for node in proto.graph.node:
            node.input[:] = ["mystery.weight" if name == PLAIN_CONV else name for name in node.input]
        _initializer(proto, PLAIN_CONV).name = "mystery.weight"

    path = _tampered(tmp_path, rename)
    with pytest.raises(rebuild.RebuildError, match=r"match no layer .*mystery\.weight") as raised:
        rebuild.rebuild_model(path)
    assert str(path) in str(raised.value)


def test_wrong_weight_values_fail_the_score_check(tmp_path, monkeypatch, one_torch_thread):
    # Shapes fit and values are wrong: only the score comparison can tell. A tampered file would
    # mislead both sides alike, so the fault goes into the loading, where a bug would put it.
    original = rebuild.rebuild_model

    def faulty_rebuild(onnx_path):
        model, prep, metadata = original(onnx_path)
        with torch.no_grad():
            model.get_parameter(PLAIN_CONV).mul_(1.5)
        return model, prep, metadata

    monkeypatch.setattr(rebuild, "rebuild_model", faulty_rebuild)
    with pytest.raises(rebuild.RebuildError, match="scores differ") as raised:
        rebuild.default_checkpoint_from_onnx(cache=tmp_path)
    assert str(BUNDLED_ONNX) in str(raised.value)
    assert not list(tmp_path.iterdir())  # nothing cached


def test_non_fp32_or_non_pinet_files_are_refused(tmp_path, tiny_onnx):
    int8 = ROOT / "runtime" / "assets" / "default.int8.onnx"
    with pytest.raises(rebuild.RebuildError, match="int8 file"):
        rebuild.rebuild_model(int8)

    def strip_metadata(proto):
        del proto.metadata_props[:]

    with pytest.raises(rebuild.RebuildError, match="metadata keys missing"):
        rebuild.rebuild_model(_tampered(tmp_path, strip_metadata))
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a protobuf at all")
    with pytest.raises(rebuild.RebuildError, match="garbage.onnx"):
        rebuild.rebuild_model(garbage)


@pytest.mark.slow
def test_export_without_the_checkpoint_file_gives_the_bundled_model_back(tmp_path, monkeypatch, check_crops):
    """`pinet export` as in a wheel install: no pinet/assets/default.safetensors."""
    from pinet.cli import export as export_cli
    from pinet.cli.app import app

    monkeypatch.setattr(export_cli, "DEFAULT_MODEL_NAME", "not-in-this-install.safetensors")
    monkeypatch.setenv(rebuild.CACHE_ENV, str(tmp_path / "cache"))
    result = CliRunner().invoke(app, ["export", "--out", str(tmp_path / "out"), "--no-validate"])
    assert result.exit_code == 0, result.output
    assert "rebuilding the default checkpoint" in result.output
    (cached,) = (tmp_path / "cache").glob("default-*.safetensors")

    exported = tmp_path / "out" / "model.onnx"
    assert Scorer(exported).info.source_sha256 == file_sha256(cached)
    difference = Scorer(exported, providers="cpu").score_crops(check_crops) - \
        Scorer(BUNDLED_ONNX, providers="cpu").score_crops(check_crops)
    assert np.abs(difference).max() < 1e-5
    bundled = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(BUNDLED_ONNX)).graph.initializer}
    again = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(exported)).graph.initializer}
    assert np.array_equal(again[PLAIN_CONV], bundled[PLAIN_CONV])
    assert {name for name in bundled if "." in name} == {name for name in again if "." in name}
