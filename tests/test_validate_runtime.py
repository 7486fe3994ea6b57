"""Export validation goes through the runtime users run (pinet_runtime.Scorer): broken candidates
are rejected with typed failures, and every failure of a step is collected."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from pinet_export.config import Gates  # noqa: E402
from pinet_export.photos import PhotoCrops, parity_photos, ranking_photos  # noqa: E402
from pinet_export.quantize import AccuracySearch  # noqa: E402
from pinet_export.validate import (StepValidation, ValidationFailure, median_latency_ms,  # noqa: E402
                                   validate_fp32, validate_int8)
from pinet_runtime import metadata as keys  # noqa: E402

GATES = Gates()


@pytest.fixture(scope="module")
def prep(tiny_onnx):
    return tiny_onnx.TINY_PREPROCESSING


@pytest.fixture(scope="module")
def ranking(prep, sample_photos) -> list[PhotoCrops]:
    return ranking_photos(sample_photos, prep).photos


@pytest.fixture(scope="module")
def parity(prep, sample_photos) -> list[PhotoCrops]:
    return parity_photos(sample_photos, prep, GATES.min_parity_photos).photos


@pytest.fixture(scope="module")
def fp32(tmp_path_factory, tiny_onnx) -> Path:
    return tiny_onnx.build_tiny_model(tmp_path_factory.mktemp("ref") / "model.onnx")


def _rewrite(source: Path, target: Path, weights: np.ndarray | None = None, metadata: dict | None = None) -> Path:
    """A copy of ``source`` with other weights and/or metadata entries (None drops a key)."""
    from onnx import numpy_helper

    model = onnx.load(str(source))
    if weights is not None:
        model.graph.initializer[0].CopyFrom(numpy_helper.from_array(weights, name="weights"))
    props = {p.key: p.value for p in model.metadata_props} | (metadata or {})
    del model.metadata_props[:]
    for key, value in props.items():
        if value is not None:
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
    onnx.save(model, str(target))
    return target


def _two_scores_per_crop(path: Path, tiny_onnx, flattened: bool = False) -> Path:
    """The tiny model's contract and metadata, but output [batch, 2]: two values per crop.
    ``flattened`` gives them as one [2 * batch] vector, which looks like one score per crop."""
    from onnx import TensorProto, helper, numpy_helper

    size = tiny_onnx.TINY_PREPROCESSING.crop_size
    mix = numpy_helper.from_array(np.ones((3, 2), np.float32), name="mix")
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", [keys.INPUT_NAME], ["per_channel"], axes=[2, 3], keepdims=0),
         helper.make_node("MatMul", ["per_channel", "mix"], ["pairs" if flattened else keys.OUTPUT_NAME]),
         *([helper.make_node("Reshape", ["pairs", "flat"], [keys.OUTPUT_NAME])] if flattened else [])],
        "two_scores", [helper.make_tensor_value_info(keys.INPUT_NAME, TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info(keys.OUTPUT_NAME, TensorProto.FLOAT, ["values"] if flattened else ["batch", 2])],
        initializer=[mix, numpy_helper.from_array(np.array([-1], np.int64), name="flat")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    for key, value in tiny_onnx.tiny_metadata(tiny_onnx.TINY_PREPROCESSING, "int8").items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


def _torch_reference(weights: np.ndarray):
    """A PyTorch 'model' computing the tiny network's score: the FP32 parity reference."""
    torch = pytest.importorskip("torch")
    tensor = torch.from_numpy(weights)
    return lambda crops: (crops * tensor).mean(dim=(1, 2, 3))


def test_a_faithful_int8_candidate_passes_with_its_figures(tmp_path, tiny_onnx, prep, fp32, ranking):
    # The positive control: the same network labelled int8 passes every check.
    candidate = _rewrite(fp32, tmp_path / "model.int8.onnx", metadata={keys.PRECISION: "int8"})
    result = validate_int8(candidate, fp32, prep.crop_size, None, GATES, ranking)
    assert result.passed, [str(f) for f in result.failures]
    assert result.figures["srcc"] == pytest.approx(1.0)
    assert result.figures["ranking_images"] == len(ranking) and result.figures["shape_checked_batches"] == [1, 5]
    assert result.figures["nodes"] == 2


def test_wrong_output_shape_is_a_structure_failure_naming_the_file(tmp_path, tiny_onnx, prep, fp32, ranking):
    candidate = _two_scores_per_crop(tmp_path / "two.int8.onnx", tiny_onnx)
    result = validate_int8(candidate, fp32, prep.crop_size, None, GATES, ranking)
    assert not result.passed
    assert [(f.kind, f.file) for f in result.failures] == [("structure", "two.int8.onnx")]
    assert "[batch] (one score per crop)" in result.failures[0].problem
    assert str(result.failures[0]).startswith("two.int8.onnx: output 'scores' should be [batch]")


def test_the_runtime_itself_refuses_a_model_giving_two_values_per_crop(tmp_path, tiny_onnx, prep):
    # Declared as a vector, the output passes the file check; the scorer's check at run time names
    # the file and the shape instead of failing in a numpy reshape.
    from pinet_runtime import ModelFileError, Scorer

    model = _two_scores_per_crop(tmp_path / "two.onnx", tiny_onnx, flattened=True)
    scorer = Scorer(model)
    crops = np.zeros((3, 3, prep.crop_size, prep.crop_size), np.float32)
    with pytest.raises(ModelFileError) as info:
        scorer.score_crops(crops)
    assert "two.onnx" in str(info.value) and "shape [6] for 3 crops" in str(info.value)


def test_scores_in_reverse_order_fail_the_ranking_gate(tmp_path, tiny_onnx, prep, fp32, ranking):
    reversed_weights = -tiny_onnx.tiny_weights(prep.crop_size)
    candidate = _rewrite(fp32, tmp_path / "model.int8.onnx", reversed_weights, {keys.PRECISION: "int8"})
    result = validate_int8(candidate, fp32, prep.crop_size, None, GATES, ranking)
    assert [f.kind for f in result.failures] == ["ranking"]
    assert "SRCC -1.0000 is below 0.99" in result.failures[0].problem
    assert result.figures["srcc"] == pytest.approx(-1.0)


def test_constant_scores_fail_the_ranking_gate(tmp_path, tiny_onnx, prep, fp32, ranking):
    zero = np.zeros_like(tiny_onnx.tiny_weights(prep.crop_size))
    candidate = _rewrite(fp32, tmp_path / "model.int8.onnx", zero, {keys.PRECISION: "int8"})
    result = validate_int8(candidate, fp32, prep.crop_size, None, GATES, ranking)
    assert [f.kind for f in result.failures] == ["ranking"]
    assert "INT8 scores are identical" in result.failures[0].problem


@pytest.mark.parametrize("broken, field_named", [
    ({keys.PREPROCESSING: None}, keys.PREPROCESSING),
    ({keys.PARAMETERS: "many"}, keys.PARAMETERS),
    ({keys.SOURCE_SHA256: "xyz"}, keys.SOURCE_SHA256),
])
def test_missing_or_malformed_metadata_is_a_structure_failure_naming_the_field(
        tmp_path, prep, fp32, ranking, broken, field_named):
    candidate = _rewrite(fp32, tmp_path / "model.int8.onnx", metadata={keys.PRECISION: "int8", **broken})
    result = validate_int8(candidate, fp32, prep.crop_size, None, GATES, ranking)
    assert [(f.kind, f.file) for f in result.failures] == [("structure", "model.int8.onnx")]
    assert field_named in result.failures[0].problem


def test_every_failure_of_a_step_is_collected(tmp_path, tiny_onnx, prep, fp32, ranking):
    # Two independent problems: the metadata says fp32 and the scores are reversed.
    reversed_weights = -tiny_onnx.tiny_weights(prep.crop_size)
    candidate = _rewrite(fp32, tmp_path / "model.int8.onnx", reversed_weights)
    result = validate_int8(candidate, fp32, prep.crop_size, None, GATES, ranking)
    assert [f.kind for f in result.failures] == ["structure", "ranking"]
    assert "pinet.precision is 'fp32', expected 'int8'" in result.failures[0].problem


def test_a_reference_the_runtime_refuses_is_named_in_the_failure(tmp_path, prep, fp32, ranking):
    broken_reference = _rewrite(fp32, tmp_path / "ref.onnx", metadata={keys.VARIANT: None})
    candidate = _rewrite(fp32, tmp_path / "model.int8.onnx", metadata={keys.PRECISION: "int8"})
    result = validate_int8(candidate, broken_reference, prep.crop_size, None, GATES, ranking)
    assert [(f.kind, f.file) for f in result.failures] == [("structure", "ref.onnx")]
    assert keys.VARIANT in result.failures[0].problem


def test_fp32_parity_passes_against_the_right_reference_and_fails_against_a_wrong_one(tiny_onnx, prep, fp32, parity):
    weights = tiny_onnx.tiny_weights(prep.crop_size)
    good = validate_fp32(fp32, _torch_reference(weights), prep.crop_size, None, GATES, parity)
    assert good.passed, [str(f) for f in good.failures]
    assert good.figures["max_abs_diff"] <= 1e-5 and good.figures["parity_photos"] == len(parity) >= 16
    wrong = validate_fp32(fp32, _torch_reference(weights * 1.01), prep.crop_size, None, GATES, parity)
    assert [f.kind for f in wrong.failures] == ["parity"]
    assert "max abs difference" in wrong.failures[0].problem and wrong.failures[0].file == "model.onnx"


def test_fixed_batch_files_are_scored_with_the_runtimes_padding(tmp_path, tiny_onnx, prep, parity):
    weights = tiny_onnx.tiny_weights(prep.crop_size)
    fixed = tiny_onnx.build_tiny_model(tmp_path / "fixed.onnx", batch=3)
    # 5 crops per photo on a batch-3 model: the runtime pads the second chunk.
    result = validate_fp32(fixed, _torch_reference(weights), prep.crop_size, 3, GATES, parity)
    assert result.passed, [str(f) for f in result.failures]
    assert result.figures["shape_checked_batches"] == [1, 3, 5]
    dynamic_expected = validate_fp32(fixed, _torch_reference(weights), prep.crop_size, None, GATES, parity)
    assert [str(f) for f in dynamic_expected.failures] == [
        "fixed.onnx: input batch axis is fixed at 3, expected dynamic"]


def test_too_few_parity_photos_and_a_bad_file_are_both_reported(tmp_path, tiny_onnx, prep, parity):
    garbage = tmp_path / "model.onnx"
    garbage.write_bytes(b"not an onnx file")
    weights = tiny_onnx.tiny_weights(prep.crop_size)
    result = validate_fp32(garbage, _torch_reference(weights), prep.crop_size, None, GATES, parity[:2])
    kinds = [f.kind for f in result.failures]
    assert kinds == ["structure", "structure", "parity"]   # onnx checker, runtime, photo count
    assert "onnx checker" in result.failures[0].problem and "onnxruntime" in result.failures[1].problem
    assert "only 2 photos" in result.failures[2].problem


def test_renaming_a_step_rewrites_its_failures_and_they_render_as_before():
    result = StepValidation("int8", "/out/.model.int8.onnx.abc.tmp")
    result.fail("ranking", "SRCC 0.5 is below 0.99")
    result.fail("structure", "onnxruntime cannot open /out/.model.int8.onnx.abc.tmp", file="other.onnx")
    result.rename(Path("/out/model.int8.onnx"))
    assert result.path == "/out/model.int8.onnx"
    assert [str(f) for f in result.failures] == ["model.int8.onnx: SRCC 0.5 is below 0.99",
                                                 "other.onnx: onnxruntime cannot open /out/model.int8.onnx"]
    assert result.to_dict()["failures"][0] == {"kind": "ranking", "file": "model.int8.onnx",
                                               "problem": "SRCC 0.5 is below 0.99"}
    with pytest.raises(ValueError, match="failure kind"):
        ValidationFailure("speed", "x.onnx", "slow")


def test_accuracy_search_scores_files_and_bytes_through_the_runtime(tiny_onnx, prep, fp32, ranking):
    search = AccuracySearch(ranking[:6], None)
    from_file, from_bytes = search.score(fp32), search.score(fp32.read_bytes())
    expected = [[tiny_onnx.tiny_expected_score(crop[None]) for crop in photo.crops] for photo in ranking[:6]]
    assert from_file.shape == (6, prep.num_crops)
    np.testing.assert_allclose(from_file, expected, atol=1e-6)
    np.testing.assert_array_equal(from_bytes, from_file)


def test_latency_is_measured_through_the_runtime_and_absent_for_a_refused_file(tmp_path, fp32, ranking):
    assert median_latency_ms(fp32, ranking[0].crops) > 0
    refused = _rewrite(fp32, tmp_path / "refused.onnx", metadata={keys.STAGE: None})
    assert median_latency_ms(refused, ranking[0].crops) is None
