"""`pinet bench` end to end on a tiny pinet_lite0 (64 px crops): every row field present and consistent.

Numbers are never compared with targets here (benchmarks are not timed tests); the tests check
the types, positivity and arithmetic relations that must hold on any machine.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pinet_export.bench import BenchSettings, run_benchmark
from pinet_export.bench.report import ROW_FIELDS

TINY_PREP = dict(crop_size=64, resize_short_side=80)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One library run on a tiny checkpoint: torch, fp32 and int8, batch 2 (10 crops a run), 2 repetitions."""
    from pinet.checkpoint import save_checkpoint
    from pinet.models import create_model
    from pinet_runtime.preprocess import Preprocessing

    folder = tmp_path_factory.mktemp("bench")
    checkpoint = save_checkpoint(folder / "tiny.safetensors", create_model("pinet_lite0", stage=2),
                                 Preprocessing(**TINY_PREP), training={})
    settings = BenchSettings(precisions=("torch", "fp32", "int8"), batches=(2,), threads=(1,), repeats=2,
                             warmup=1, out_dir=folder / "out", matmul_size=256)
    report = run_benchmark([str(checkpoint)], [], settings)
    return folder, settings, report


@pytest.mark.slow
def test_json_is_parseable_and_every_row_has_every_field(tiny_run):
    folder, _, report = tiny_run
    on_disk = json.loads((folder / "out" / "bench.json").read_text())
    assert on_disk["rows"] == report["rows"]
    assert len(on_disk["rows"]) == 3  # precisions x batches x threads
    for row in on_disk["rows"]:
        assert set(row) == set(ROW_FIELDS)
        assert row["status"] == "ok", row["note"]
        for key in ("run_ms_p50", "run_ms_p90", "image_ms_p50", "image_ms_p90", "crop_ms_p50", "crop_ms_p90",
                    "images_per_s", "flops_per_crop", "achieved_gflops", "machine_peak_gflops",
                    "fraction_of_peak", "peak_rss_mib", "model_file_bytes", "cold_start_ms"):
            assert isinstance(row[key], (int, float)) and row[key] > 0, key
    markdown = (folder / "out" / "bench.md").read_text()
    assert markdown.count("| tiny |") == 3


@pytest.mark.slow
def test_latency_relations_hold(tiny_run):
    _, _, report = tiny_run
    for row in report["rows"]:
        assert row["crops_per_image"] == 5 and row["crop_size"] == 64
        assert row["crops_per_run"] == 5 * row["batch_images"]
        assert row["image_ms_p50"] == pytest.approx(row["crop_ms_p50"] * row["crops_per_image"], rel=1e-9)
        assert row["run_ms_p50"] == pytest.approx(row["image_ms_p50"] * row["batch_images"], rel=1e-9)
        assert row["images_per_s"] == pytest.approx(1000.0 / row["image_ms_p50"], rel=1e-9)
        assert row["run_ms_p90"] >= row["run_ms_p50"]
        achieved = row["flops_per_crop"] * row["crops_per_run"] / (row["run_ms_p50"] / 1000) / 1e9
        assert row["achieved_gflops"] == pytest.approx(achieved, rel=1e-9)
        assert row["fraction_of_peak"] == pytest.approx(achieved / row["machine_peak_gflops"], rel=1e-9)
        # The peak RSS covers the imported libraries measured earlier in the same child.
        assert row["peak_rss_mib"] >= row["rss_libraries_mib"]


@pytest.mark.slow
def test_files_flops_and_ratios_are_consistent(tiny_run):
    import dataclasses

    from pinet.models import get_config
    from pinet.model_cost import flops_per_crop

    folder, _, report = tiny_run
    rows = {(r["precision"], r["batch_images"]): r for r in report["rows"]}
    # Each precision's row names its own file: the checkpoint, model.onnx and model.int8.onnx.
    assert rows[("torch", 2)]["model_file"] == str(folder / "tiny.safetensors")
    assert Path(rows[("fp32", 2)]["model_file"]).name == "model.onnx"
    assert Path(rows[("int8", 2)]["model_file"]).name == "model.int8.onnx"
    for (precision, _), row in rows.items():
        assert row["model_file_bytes"] == Path(row["model_file"]).stat().st_size
    # INT8 weights are a quarter of FP32's: the file must be clearly smaller.
    assert rows[("int8", 2)]["model_file_bytes"] < 0.6 * rows[("fp32", 2)]["model_file_bytes"]
    # FLOPs are counted at the contract's 64 px crops, not the config's 224 px.
    expected = flops_per_crop(dataclasses.replace(get_config("pinet_lite0"), input_size=64))
    assert rows[("fp32", 2)]["flops_per_crop"] == expected < flops_per_crop(get_config("pinet_lite0"))
    speedups = {(r["faster"], r["batch_images"]): r["speedup"] for r in report["ratios"]}
    assert speedups[("fp32", 2)] == pytest.approx(rows[("torch", 2)]["image_ms_p50"] / rows[("fp32", 2)]["image_ms_p50"])
    assert speedups[("int8", 2)] == pytest.approx(rows[("fp32", 2)]["image_ms_p50"] / rows[("int8", 2)]["image_ms_p50"])
    names = {t["target"] for t in report["targets"]}
    assert "ONNX FP32 vs PyTorch eager speed-up" in names and "INT8 vs ONNX FP32 speed-up" in names
    assert all(t["met"] in (True, False) for t in report["targets"])


@pytest.mark.slow
def test_cli_without_torch_skips_torch_rows_with_a_note(tiny_run, tmp_path, blocked_imports):
    """An ONNX input with torch made unimportable: the torch row is skipped and says why."""
    folder, _, _ = tiny_run
    out = tmp_path / "cli-out"
    done = blocked_imports.run_cli(
        "bench", str(folder / "out" / "models" / "tiny" / "model.onnx"),
        "--precisions", "torch,fp32,int8,fp16", "--batch", "1", "--threads", "1", "--repeats", "2",
        "--warmup", "0", "--out", str(out), "--matmul-size", "256", blocked=("torch",))
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "bench.json").read_text())
    assert report["machine_start"]["torch"] is None
    rows = {r["precision"]: r for r in report["rows"]}
    assert rows["fp32"]["status"] == "ok" and rows["fp32"]["flops_per_crop"] is None
    assert rows["fp32"]["achieved_gflops"] is None and rows["fp32"]["image_ms_p50"] > 0
    assert rows["torch"]["status"] == "skipped" and "pinet-iqa[export]" in rows["torch"]["note"]
    assert rows["int8"]["status"] == "skipped" and "ONNX fp32 file" in rows["int8"]["note"]
    assert rows["fp16"]["status"] == "skipped" and "--provider cuda" in rows["fp16"]["note"]
    for row in report["rows"]:
        assert set(row) == set(ROW_FIELDS)
    assert "torch is blocked" in rows["torch"]["note"]   # the ImportError message is passed on


@pytest.mark.slow
def test_cli_refuses_bad_input_without_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "pinet.cli", "bench", "--precisions", "fp32",
                           str(tmp_path / "missing.onnx")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "missing.onnx" in done.stderr and "Traceback" not in done.stderr
    usage = subprocess.run([sys.executable, "-m", "pinet.cli", "bench"], capture_output=True, text=True, timeout=120)
    assert usage.returncode == 2 and "name at least one model" in usage.stderr
