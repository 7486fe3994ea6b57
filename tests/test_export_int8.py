"""INT8 export of a quickly trained tiny scorer: SRCC gate passes with real-photo calibration and fails
(leaving no model.int8.onnx) with a broken one; FP16 and the report files; CLI refusals."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from PIL import Image, ImageFilter  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from pinet.checkpoint import save_checkpoint  # noqa: E402
from pinet.cli.app import app  # noqa: E402
from pinet.models import create_model, default_preprocessing  # noqa: E402
from pinet_export.pipeline import run_export  # noqa: E402
from pinet_export.config import ExportSettings  # noqa: E402
from pinet_export.photos import CALIBRATION_DEGRADATIONS, bundled_samples_dir, list_photos  # noqa: E402
from pinet_runtime import metadata as keys  # noqa: E402
from pinet_runtime.preprocess import load_image, make_crops  # noqa: E402

VARIANT = "pinet_r18"  # measured: INT8 SRCC 0.995 (VNNI) / 0.996 (reduce_range); random Lite0 only 0.97-0.99
PREP = dataclasses.replace(default_preprocessing(VARIANT), crop_size=64, resize_short_side=80)


def _graded_crops() -> tuple[np.ndarray, np.ndarray]:
    """Crops of the bundled photos at graded blur / noise levels, target 1 (sharp) .. 0.1 (worst)."""
    crops, targets = [], []
    for path in list_photos(bundled_samples_dir()):
        image = load_image(path, PREP)
        variants = [(image, 1.0)]
        variants += [(image.filter(ImageFilter.GaussianBlur(r)), 1.0 - 0.3 * r) for r in (0.75, 1.5, 3.0)]
        pixels = np.asarray(image, dtype=np.float32)
        for level, sigma in enumerate((8.0, 16.0, 30.0), start=1):
            noise = np.random.default_rng(level).normal(0, sigma, pixels.shape)
            noisy = Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))
            variants.append((noisy, 1.0 - 0.3 * level))
        for variant, target in variants:
            piece = make_crops(variant, PREP)
            crops.append(piece)
            targets += [target] * len(piece)
    return np.concatenate(crops), np.asarray(targets, dtype=np.float32)


def _train_tiny_scorer() -> torch.nn.Module:
    """Random backbone with BatchNorm statistics measured on the photos, then a few dozen Adam steps
    on the branches + regressor over cached features (fast on a shared 2-core CPU)."""
    torch.manual_seed(0)
    model = create_model(VARIANT, stage=2)
    x, y = (torch.from_numpy(a) for a in _graded_crops())
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the passes below
    with torch.no_grad():
        for chunk in x.split(70):
            model.forward_features(chunk)
    model.eval()
    with torch.no_grad():
        features = model.forward_features(x)
    head = [p for name, p in model.named_parameters() if not name.startswith(("backbone.", "staircase."))]
    optimizer = torch.optim.Adam(head, lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(60):
        index = torch.randint(0, len(x), (32,), generator=generator)
        loss = torch.nn.functional.l1_loss(model.forward_head(features[index]), y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory) -> Path:
    model = _train_tiny_scorer()
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors", model, PREP, {"steps": 60})


@pytest.fixture(scope="module")
def good_export(trained_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    outcome = run_export(trained_checkpoint, ExportSettings(out_dir=out, quantize=True, fp16=True))
    return out, outcome


@pytest.mark.slow
def test_int8_passes_srcc_gate_on_real_photos(good_export):
    out, outcome = good_export
    int8 = next(v for v in outcome.validations if v.step == "int8")
    assert int8.passed, int8.failures
    assert int8.figures["srcc"] >= 0.99 and int8.figures["ranking_images"] == 32
    assert int8.figures["fp32_score_std"] > 0.05  # the trained scorer really spreads its scores
    assert (out / "model.int8.onnx").is_file() and (out / "model.onnx").is_file()
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(out / "model.int8.onnx")).metadata_props}
    assert set(keys.REQUIRED_KEYS) <= set(meta) and meta[keys.PRECISION] == "int8"
    calibration = json.loads(meta[keys.CALIBRATION])
    assert calibration["format"] == "QDQ" and calibration["per_channel"] and calibration["photos"] == 8
    assert calibration["crops"] == 8 * 4 * 5 and calibration["bundled_samples"] is True   # photos x qualities x crops
    assert calibration["degradations"] == list(CALIBRATION_DEGRADATIONS)   # ranges cover poor photos too
    assert calibration["portable"] is True and calibration["reduce_range"] is True   # the default target
    search = calibration["accuracy_search"]
    assert search["final"]["srcc"] >= search["all_int8"]["srcc"] and len(search["fp32_nodes"]) <= 8


def _int8_weights(path: Path) -> list[np.ndarray]:
    """The quantized weight tensors (int8 initializers feeding DequantizeLinear) of a QDQ file."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    initializers = {init.name: init for init in graph.initializer}
    return [numpy_helper.to_array(initializers[node.input[0]]) for node in graph.node
            if node.op_type == "DequantizeLinear" and node.input[0] in initializers
            and initializers[node.input[0]].data_type == onnx.TensorProto.INT8]


@pytest.mark.slow
def test_portable_int8_weights_are_7_bit_whatever_the_exporting_cpu(good_export):
    """7-bit weights (reduce_range) cannot saturate the U8S8 multiply-add of x86 CPUs without VNNI:
    the default file computes the same integers on every CPU."""
    out, _ = good_export
    weights = _int8_weights(out / "model.int8.onnx")
    assert len(weights) > 20
    # onnxruntime's reduce_range keeps symmetric weights within [-64, 64]: |u8 x s8| pair sums stay
    # below 2 x 255 x 64 = 32640 < 32767, so the int16 intermediate of AVX2 cannot saturate.
    assert max(int(np.abs(w).max()) for w in weights) == 64   # the 7-bit range is used, not collapsed


@pytest.mark.slow
def test_fp16_written_with_metadata_and_parity_marked_not_checked_without_cuda(good_export):
    import onnx
    import onnxruntime as ort

    out, outcome = good_export
    fp16 = next(v for v in outcome.validations if v.step == "fp16")
    assert fp16.passed, fp16.failures
    meta = {p.key: p.value for p in onnx.load(str(out / "model.fp16.onnx")).metadata_props}
    assert meta[keys.PRECISION] == "fp16" and meta[keys.CALIBRATION] == "none"
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert fp16.figures["parity"] == "not checked"
        assert any("no CUDA execution provider" in note for note in fp16.notes)


@pytest.mark.slow
def test_report_files_exist_and_parse(good_export):
    out, _ = good_export
    report = json.loads((out / "report.json").read_text())
    assert report["passed"] is True
    assert set(report["files"]) == {"fp32", "int8", "fp16"}
    assert report["conversion"]["nodes_exported"] >= report["conversion"]["nodes_simplified"] > 0
    assert report["latency_ms_per_image"]["batch"] == PREP.num_crops
    assert report["latency_ms_per_image"]["fp32"] > 0 and report["latency_ms_per_image"]["int8"] > 0
    assert "avx2" in report["environment"]["cpu_flags"]
    assert report["steps"][0]["figures"]["max_abs_diff"] <= 1e-4
    markdown = (out / "report.md").read_text()
    assert "PASSED" in markdown and "model.int8.onnx" in markdown and "mean over" in markdown
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


@pytest.mark.slow
def test_broken_calibration_fails_gate_and_leaves_no_int8_file(trained_checkpoint, tmp_path):
    calib = tmp_path / "calib"
    calib.mkdir()
    Image.new("RGB", (120, 90), (0, 0, 0)).save(calib / "black.png")
    out = tmp_path / "out"
    # The gate itself is under test: no accuracy search rescuing the broken calibration.
    outcome = run_export(trained_checkpoint, ExportSettings(out_dir=out, quantize=True, calib_dirs=(calib,),
                                                            accuracy_search=False))
    int8 = next(v for v in outcome.validations if v.step == "int8")
    assert not int8.passed
    assert any(failure.kind == "ranking" and "SRCC" in failure.problem and failure.file == "model.int8.onnx"
               for failure in int8.failures)
    assert not (out / "model.int8.onnx").exists()
    assert (out / "model.onnx").is_file()  # the FP32 step passed and stays
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert json.loads((out / "report.json").read_text())["passed"] is False


def _cli(*args: str):
    return CliRunner().invoke(app, ["export", *args])


def test_cli_refuses_corrupt_and_stage1_checkpoints_and_writes_nothing(tmp_path):
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    result = _cli(str(corrupt), "--out", str(tmp_path / "a"))
    assert result.exit_code == 1 and "corrupt.safetensors" in result.output
    assert not (tmp_path / "a").exists()

    stage1 = save_checkpoint(tmp_path / "stage1.safetensors", create_model(VARIANT, stage=1), PREP, {})
    result = _cli(str(stage1), "--out", str(tmp_path / "b"))
    assert result.exit_code == 1 and "stage-1" in result.output and "stage1.safetensors" in result.output
    assert not (tmp_path / "b").exists()


def test_cli_without_checkpoint_and_bad_options(tmp_path, monkeypatch):
    from pinet.cli import export as export_cli

    monkeypatch.setattr(export_cli, "bundled_default_model", lambda: None)
    result = _cli("--out", str(tmp_path / "c"))
    assert result.exit_code == 2 and "no bundled default model" in result.output
    result = _cli(str(tmp_path / "x.safetensors"), "--batch", "zero")
    assert result.exit_code == 2 and "--batch" in result.output
    result = _cli(str(tmp_path / "x.safetensors"), "--calib-method", "magic")
    assert result.exit_code == 2 and "magic" in result.output


@pytest.mark.slow
def test_cli_calibration_dir_without_readable_photo_fails_int8_only(trained_checkpoint, tmp_path):
    calib = tmp_path / "calib"
    calib.mkdir()
    (calib / "truncated.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    out = tmp_path / "out"
    result = _cli(str(trained_checkpoint), "--out", str(out), "--quantize", "--calib", str(calib))
    assert result.exit_code == 1
    assert "no readable photo for INT8 calibration" in result.output and "truncated.jpg" in result.output
    assert (out / "model.onnx").is_file() and not (out / "model.int8.onnx").exists()
    report = json.loads((out / "report.json").read_text())
    assert report["passed"] is False and set(report["files"]) == {"fp32"}
