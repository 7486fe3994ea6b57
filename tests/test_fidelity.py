"""`pinet fidelity`: the bundled INT8 file against the bundled FP32 file on the bundled photos,
through the runtime only (torch and the training stack blocked)."""

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FP32 = ROOT / "runtime" / "assets" / "default.onnx"
INT8 = ROOT / "runtime" / "assets" / "default.int8.onnx"
# Everything the runtime-side comparison must not need; scipy and pinet_export stay importable.
TORCH_SIDE = ("torch", "torchvision", "onnx", "onnxsim", "onnxscript", "safetensors", "piq", "pinet_training")


@pytest.mark.slow
def test_fidelity_of_the_bundled_int8_file_on_the_bundled_photos(samples_dir, sample_photos, blocked_imports):
    from pinet_runtime.cpu import read_cpu_info

    done = blocked_imports.run_cli("fidelity", str(FP32), str(INT8), "--photos", str(samples_dir), "--count", "100",
                                   blocked=TORCH_SIDE)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["photos"] == len(sample_photos) and result["skipped"] == []
    assert -1.0 <= result["srcc"] <= 1.0
    assert 0.0 <= result["mean_abs_diff"] <= result["max_abs_diff"]
    assert set(result["ms_per_image"]) == {"fp32", "int8"} and result["speedup"] > 0
    expected_flags = [name for name, present in read_cpu_info().flags_of_interest().items() if present]
    assert result["cpu_flags"] == expected_flags
    assert "SRCC int8 vs fp32" in done.stderr and f"{result['srcc']:.4f}" in done.stderr   # the table
    assert blocked_imports.leaked_modules(done) == []


def test_fidelity_refuses_missing_inputs_before_any_work(tmp_path, samples_dir):
    from typer.testing import CliRunner

    from pinet.cli.app import app

    runner = CliRunner()
    no_model = runner.invoke(app, ["fidelity", str(tmp_path / "a.onnx"), str(INT8), "--photos", str(samples_dir)])
    assert no_model.exit_code == 2 and "a.onnx" in no_model.output
    no_folder = runner.invoke(app, ["fidelity", str(FP32), str(INT8), "--photos", str(tmp_path / "none")])
    assert no_folder.exit_code == 2 and "--photos" in no_folder.output
    empty = runner.invoke(app, ["fidelity", str(FP32), str(INT8), "--photos", str(tmp_path)])
    assert empty.exit_code == 1 and "0 of 0 photos" in empty.output
