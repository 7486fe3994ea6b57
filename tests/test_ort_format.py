"""`--ort`: the ORT format files load in onnxruntime and score as their .onnx files; the
required_operators.config lists their operators; and `pinet export --end-to-end --quantize --ort`
writes, validates and reports every file."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from pinet_export.e2e.parity import full_pixels  # noqa: E402
from pinet_export.ort_format import REQUIRED_OPERATORS, convert_to_ort, required_operators  # noqa: E402
from pinet_runtime.model_file import read_model_info  # noqa: E402
from pinet_runtime.preprocess import preprocess  # noqa: E402
from pinet_runtime.scorer import Scorer  # noqa: E402


@pytest.fixture(scope="module")
def converted(tiny_onnx, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ort")
    crops, e2e = tiny_onnx.build_tiny_e2e_pair(folder)
    return crops, e2e, convert_to_ort([crops, e2e], folder)


def test_ort_files_and_the_operator_config_are_written(converted):
    crops, e2e, written = converted
    assert written["model.onnx"] == crops.parent / "model.ort" and written["model.e2e.onnx"].name == "model.e2e.ort"
    assert all(path.is_file() and path.stat().st_size > 0 for path in written.values())
    assert sorted(p.name for p in crops.parent.iterdir()) == [
        "model.e2e.onnx", "model.e2e.ort", "model.onnx", "model.ort", REQUIRED_OPERATORS]   # no temp folder left
    ops = ",".join(required_operators(written[REQUIRED_OPERATORS]))
    for op in ("Resize", "Mul", "ReduceMean", "Slice", "Gather"):
        assert op in ops


def test_ort_files_score_as_their_onnx_files(converted, tiny_onnx, sample_photos):
    crops, e2e, written = converted
    prep = tiny_onnx.TINY_PREPROCESSING
    x = np.concatenate([preprocess(p, prep) for p in sample_photos[:3]])
    for source, feeds in ((crops, [{"crops": x}]),
                          (e2e, [{"image": full_pixels(p, prep, str(p))} for p in sample_photos[:3]])):
        reference = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
        mobile = ort.InferenceSession(str(written[source.name]), providers=["CPUExecutionProvider"])
        for feed in feeds:
            np.testing.assert_allclose(mobile.run(None, feed)[0], reference.run(None, feed)[0], atol=1e-5)
    # The ORT format keeps the metadata: the runtime reads it and scores with the .ort crops file.
    assert read_model_info(written["model.e2e.onnx"]).interface == "image"
    assert Scorer(written["model.onnx"]).score(sample_photos[0]) == pytest.approx(Scorer(crops).score(sample_photos[0]),
                                                                                 abs=1e-5)


def test_a_failed_check_publishes_nothing(tiny_onnx, tmp_path):
    crops = tiny_onnx.build_tiny_model(tmp_path / "model.onnx")
    assert convert_to_ort([crops], tmp_path, lambda converted: False) == {}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_export_cli_offers_the_options():
    from typer.testing import CliRunner

    from pinet.cli.app import app

    result = CliRunner().invoke(app, ["export", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "--end-to-end" in result.output and "--ort" in result.output


@pytest.mark.slow
def test_export_end_to_end_quantize_ort_writes_validates_and_reports(tmp_path, sample_photos):
    """A random pinet_r18 (64 px crops) through the whole pipeline. Its scores barely differ between
    photos, so ranking gates (INT8 vs FP32, e2e vs runtime SRCC) are relaxed here: they are the
    trained model's (docs/export.md); mean |diff|, structure and ORT parity keep their gates."""
    torch = pytest.importorskip("torch")
    from pinet.checkpoint import save_checkpoint
    from pinet.models import create_model
    from pinet_export.config import ExportSettings, Gates
    from pinet_export.pipeline import run_export
    from pinet_runtime.preprocess import Preprocessing

    torch.manual_seed(0)
    model = create_model("pinet_r18", stage=2)
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():   # spread the untrained scores so that INT8 does not round them all alike
        last.weight.mul_(200.0)
    checkpoint = save_checkpoint(tmp_path / "tiny.safetensors", model,
                                 Preprocessing(crop_size=64, resize_short_side=80), training={})
    gates = dataclasses.replace(Gates(), int8_min_srcc=-1.0, e2e_min_srcc=-1.0)
    out = tmp_path / "out"
    outcome = run_export(checkpoint, ExportSettings(out_dir=out, quantize=True, end_to_end=True, ort=True,
                                                    accuracy_search=False, calib_photos=8, calib_count=40,
                                                    gates=gates))
    assert outcome.report["passed"], outcome.failures
    names = sorted(p.name for p in out.iterdir())
    assert names == ["model.e2e.int8.onnx", "model.e2e.int8.ort", "model.e2e.onnx", "model.e2e.ort",
                     "model.int8.onnx", "model.int8.ort", "model.onnx", "model.ort", "report.json", "report.md",
                     REQUIRED_OPERATORS]
    report = json.loads((out / "report.json").read_text())
    steps = {step["step"]: step for step in report["steps"]}
    for precision in ("fp32", "int8"):
        figures = steps[f"e2e-{precision}"]["figures"]
        assert figures["images"] == 5 * len(sample_photos) and figures["portrait_images"] >= len(sample_photos)
        assert figures["mean_abs_diff"] <= figures["gate_mean_abs_diff"] == 0.005
        assert figures["latency_ms"] > 0
        assert steps["ort"]["figures"][f"e2e-{precision}_max_abs_diff"] <= (1e-4 if precision == "fp32" else 0.02)
        assert read_model_info(out / f"model.e2e.{'' if precision == 'fp32' else 'int8.'}onnx").precision == precision
    for key in ("fp32", "int8", "e2e-fp32", "e2e-int8", "ort-fp32", "ort-e2e-int8", "required-operators"):
        assert report["files"][key]["bytes"] == Path(report["files"][key]["path"]).stat().st_size > 0
    markdown = (out / "report.md").read_text()
    assert "| ort-e2e-int8 | model.e2e.int8.ort |" in markdown and "### e2e-int8: passed" in markdown
    assert "end-to-end files" in markdown and REQUIRED_OPERATORS in markdown


def test_pinet_info_reads_an_ort_file(converted):
    from typer.testing import CliRunner

    from pinet.cli.app import app

    _, _, written = converted
    result = CliRunner().invoke(app, ["info", str(written["model.e2e.onnx"]), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["interface"] == "image"
