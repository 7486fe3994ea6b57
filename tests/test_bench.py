"""`pinet bench` end to end on a tiny pinet_lite0 (64 px crops): every row field present and consistent,
and the timed ONNX files are the ones the `pinet export` pipeline writes.

Numbers are never compared with targets here (benchmarks are not timed tests); the tests check
the types, positivity and arithmetic relations that must hold on any machine.
"""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pinet_export.bench import BenchSettings, run_benchmark
from pinet_export.bench.exports import RECIPE_FILE, earlier_export, export_recipe, exported_precisions
from pinet_export.bench.report import ROW_FIELDS
from pinet_export.config import ExportSettings

TINY_PREP = dict(crop_size=64, resize_short_side=80)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One library run on a tiny checkpoint: torch, fp32 and int8, batch 2 (10 crops a run), 2 repetitions;
    exported with the bench's default export settings (pinet export's, accuracy search included)."""
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
def test_the_timed_files_are_the_export_pipelines_and_a_rerun_reuses_them(tiny_run, sample_photos):
    from pinet_export.bench.models import prepare_models
    from pinet_runtime.model_file import read_model_info

    folder, settings, report = tiny_run
    model_dir = folder / "out" / "models" / "tiny"
    export_report = json.loads((model_dir / "report.json").read_text())   # written by pinet_export.pipeline
    assert export_report["validated"] is False and sorted(export_report["files"]) == ["fp32", "int8"]
    int8 = read_model_info(model_dir / "model.int8.onnx").calibration
    # pinet export's defaults: up to 512 crops, i.e. every bundled photo's 5 crops at 4 qualities
    # (as taken, blurred, JPEG, noisy); portable 7-bit weights; the accuracy search that keeps
    # score-sensitive nodes in FP32.
    assert int8["crops"] == 5 * 4 * len(sample_photos) and int8["photos"] == len(sample_photos)
    assert int8["method"] == "minmax" and int8["reduce_range"] is True
    assert int8["accuracy_search"]["max_fp32_nodes"] == 8
    written = {name: (model_dir / name).stat().st_mtime_ns for name in ("model.onnx", "model.int8.onnx")}
    (model,) = prepare_models([str(folder / "tiny.safetensors")], [], settings, lambda _: None)
    assert model.files == {"fp32": model_dir / "model.onnx", "int8": model_dir / "model.int8.onnx"}
    assert any("reused" in note for note in model.notes), model.notes
    assert {name: (model_dir / name).stat().st_mtime_ns for name in written} == written


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


def test_the_bench_exports_with_pinet_exports_defaults_without_validation(tmp_path):
    export = BenchSettings().export
    assert export.validate is False
    assert dataclasses.replace(export, validate=True, out_dir=tmp_path) == ExportSettings(out_dir=tmp_path)


@pytest.mark.parametrize("precisions, provider, expected", [
    (("torch",), "cpu", []),
    (("torch", "fp32", "int8", "fp16"), "cpu", ["fp32", "int8"]),     # no FP16 file for CPU rows
    (("int8", "fp16"), "cuda", ["int8", "fp16"]),
])
def test_exported_precisions(precisions, provider, expected):
    assert exported_precisions(BenchSettings(precisions=precisions, provider=provider)) == expected


def test_an_earlier_export_is_reused_only_for_the_same_recipe_and_files(tmp_path, tiny_onnx):
    fp32 = tiny_onnx.build_tiny_model(tmp_path / "model.onnx")       # made from checkpoint "0" * 64
    recipe = export_recipe(ExportSettings(out_dir=tmp_path, quantize=True), "0" * 64)
    assert recipe == export_recipe(ExportSettings(out_dir=tmp_path / "elsewhere", quantize=True), "0" * 64)
    stamp = tmp_path / RECIPE_FILE
    stamp.write_text(json.dumps({"recipe": recipe, "files": {"fp32": "model.onnx"}}))
    assert earlier_export(tmp_path, recipe, ["fp32"]) == {"fp32": fp32}
    assert earlier_export(tmp_path, recipe, ["fp32", "int8"]) is None          # not exported then
    other_settings = export_recipe(ExportSettings(out_dir=tmp_path, quantize=True, calib_count=16), "0" * 64)
    assert earlier_export(tmp_path, other_settings, ["fp32"]) is None
    other_checkpoint = export_recipe(ExportSettings(out_dir=tmp_path, quantize=True), "1" * 64)
    stamp.write_text(json.dumps({"recipe": other_checkpoint, "files": {"fp32": "model.onnx"}}))
    assert earlier_export(tmp_path, other_checkpoint, ["fp32"]) is None     # the file is another checkpoint's
    stamp.write_text('{"recipe": ')                                          # cut short
    assert earlier_export(tmp_path, recipe, ["fp32"]) is None


def test_a_failed_export_fails_its_rows_without_measuring(tmp_path):
    from pinet_export.bench.models import BenchModel
    from pinet_export.bench.run import bench_row
    from pinet_runtime.preprocess import Preprocessing

    model = BenchModel("tiny", "tiny.safetensors", "checkpoint", "pinet_lite0", Preprocessing(**TINY_PREP), {},
                       files={"fp32": tmp_path / "model.onnx"},
                       export_failures={"int8": "model.int8.onnx: ranking SRCC 0.2 < 0.99"})
    settings = BenchSettings(out_dir=tmp_path)
    row = bench_row(model, "int8", 1, 1, settings, str(tmp_path / "crops.npy"), "photo.jpg", {}, lambda _: None)
    assert row["status"] == "failed" and row["note"] == "failed: export: model.int8.onnx: ranking SRCC 0.2 < 0.99"
    assert set(row) == set(ROW_FIELDS) and row["run_ms_p50"] is None
