"""`pinet export`'s INT8 options reach the export settings (the pipeline itself is tested elsewhere)."""

from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from pinet.cli.app import app

pytest.importorskip("onnx")


def _captured_settings(monkeypatch, tmp_path, *options: str):
    import pinet_export.pipeline as pipeline

    seen = []

    def fake_run_export(checkpoint, settings, progress):
        seen.append(settings)
        return SimpleNamespace(files={}, failures=[], report={}, passed=True)

    monkeypatch.setattr(pipeline, "run_export", fake_run_export)
    checkpoint = tmp_path / "model.safetensors"
    checkpoint.write_bytes(b"not read by the fake pipeline")
    result = CliRunner().invoke(app, ["export", str(checkpoint), "--out", str(tmp_path / "out"), "--quantize", *options])
    assert len(seen) == 1, result.output
    return seen[0]


def test_int8_defaults_calibrate_on_varied_quality_and_search_to_0_995(monkeypatch, tmp_path):
    settings = _captured_settings(monkeypatch, tmp_path)
    assert settings.calib_degraded is True and settings.calib_count == 512
    assert settings.search_target_srcc == 0.995 and settings.max_fp32_nodes == 8


def test_int8_options_reach_the_settings(monkeypatch, tmp_path):
    settings = _captured_settings(monkeypatch, tmp_path, "--calib-clean-only", "--search-target-srcc", "0.99",
                                  "--max-fp32-nodes", "3", "--calib-count", "100")
    assert settings.calib_degraded is False and settings.calib_count == 100
    assert settings.search_target_srcc == 0.99 and settings.max_fp32_nodes == 3


def test_a_search_target_outside_its_range_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(app, ["export", str(tmp_path / "m.safetensors"), "--search-target-srcc", "1.5"])
    assert result.exit_code == 2 and "--search-target-srcc" in result.output
