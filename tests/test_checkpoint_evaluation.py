"""`pinet eval`: reproduces fine-tuning's test SRCC exactly, cross-dataset report, refusals, fixed crops."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from pinet.checkpoint import load_checkpoint, read_header, save_checkpoint
from pinet.cli.app import app
from pinet.models import create_model
from pinet_runtime.preprocess import Preprocessing, preprocess
from pinet_training.datasets import CsvScale

SCALE = CsvScale(low=0.0, high=11.0, higher_is_better=True)


@pytest.fixture(scope="module")
def trained(replicas, tmp_path_factory, sample_photos):
    """A 2-epoch fine-tune on replica A (synthetic-style groups), plus replica B (authentic)."""
    from pinet_training.finetune import FinetuneSettings, run_finetune

    base = tmp_path_factory.mktemp("eval")
    set_a = replicas.make_blur_replica(base / "A", sample_photos[:6], "setA", with_reference=True)
    set_b = replicas.make_blur_replica(base / "B", sample_photos[6:8], "setB", with_reference=False)
    settings = FinetuneSettings(dataset="csv", root=set_a, out_dir=base / "run", variant="pinet_lite0",
                                backbone_init="random", csv_scale=SCALE, epochs=2, batch_size=8, crops_per_image=2,
                                lr_backbone=1e-3, lr_head=1e-3, crop_size=64, resize_short_side="native",
                                val_fraction=0.25, workers=0, threads=1, eval_batch_size=3, show_progress=False)
    results, results_json = run_finetune(settings, lambda _: None)
    return {"a": set_a, "b": set_b, "run": base / "run", "results": results, "results_json": results_json}


def _eval(*args: str):
    return CliRunner().invoke(app, ["eval", *args, "--csv-range", "0,11", "--threads", "1"])


@pytest.mark.slow
def test_eval_reproduces_the_reported_test_srcc_exactly(trained, tmp_path):
    best = trained["run"] / "best.safetensors"
    outcome = _eval(str(best), "--dataset", "csv", "--root", str(trained["a"]), "--out", str(tmp_path / "e"))
    assert outcome.exit_code == 0, outcome.output
    reported = json.loads(trained["results_json"].read_text())["rounds"][0]["metrics"]
    stored = read_header(best).training["test"]
    evaluated = json.loads((tmp_path / "e" / "eval.json").read_text())
    assert evaluated["metrics"]["srcc"] == reported["srcc"] == stored["srcc"]      # exact, not approx
    for key in ("krcc", "plcc", "rmse"):
        assert evaluated["metrics"][key] == reported[key]
    assert len(evaluated["images"]) == stored["n"] == len(read_header(best).training["split"]["test_ids"])
    assert evaluated["train_dataset"] == evaluated["test_dataset"] == "setA" and not evaluated["cross_dataset"]


@pytest.mark.slow
def test_scores_are_the_mean_over_the_contract_crops(trained, tmp_path):
    """Independent recomputation: preprocess() + the model, mean over the 5 fixed crops."""
    best = trained["run"] / "best.safetensors"
    outcome = _eval(str(best), "--dataset", "csv", "--root", str(trained["b"]), "--split", "all",
                    "--batch-size", "5", "--out", str(tmp_path / "e"))
    assert outcome.exit_code == 0, outcome.output
    evaluated = json.loads((tmp_path / "e" / "eval.json").read_text())
    loaded = load_checkpoint(best, stage=2)
    prep = loaded.header.preprocessing
    assert prep.crop_size == 64 and prep.num_crops == 5
    for image in evaluated["images"][:3]:
        crops = torch.from_numpy(preprocess(trained["b"].parent / image["id"], prep))
        with torch.no_grad():
            expected = float(loaded.model(crops).double().mean())
        assert image["prediction"] == pytest.approx(expected, rel=1e-5, abs=1e-6)


@pytest.mark.slow
def test_cross_dataset_eval_names_both_datasets(trained, tmp_path):
    best = trained["run"] / "best.safetensors"
    outcome = _eval(str(best), "--dataset", "csv", "--root", str(trained["b"]), "--split", "all",
                    "--out", str(tmp_path / "cross"))
    assert outcome.exit_code == 0, outcome.output
    evaluated = json.loads((tmp_path / "cross" / "eval.json").read_text())
    assert evaluated["cross_dataset"] and evaluated["train_dataset"] == "setA" and evaluated["test_dataset"] == "setB"
    assert evaluated["metrics"]["n"] == 8 and -1 <= evaluated["metrics"]["srcc"] <= 1
    report = json.loads((tmp_path / "cross" / "report.json").read_text())
    assert report["rounds"][0]["train_dataset"] == "setA" and report["rounds"][0]["test_dataset"] == "setB"
    markdown = (tmp_path / "cross" / "report.md").read_text()
    assert "train on setA" in markdown and "setB" in markdown


@pytest.mark.slow
def test_eval_refuses_a_test_split_it_cannot_reproduce(trained, tmp_path):
    best = trained["run"] / "best.safetensors"
    other = _eval(str(best), "--dataset", "csv", "--root", str(trained["b"]), "--out", str(tmp_path / "x"))
    assert other.exit_code == 1 and "not 'setB'" in other.output and "--split all" in other.output

    torch.manual_seed(0)
    bare = save_checkpoint(tmp_path / "bare.safetensors", create_model("pinet_lite0", stage=2),
                           Preprocessing(crop_size=64, resize_short_side=80), {})
    none = _eval(str(bare), "--dataset", "csv", "--root", str(trained["a"]), "--out", str(tmp_path / "y"))
    assert none.exit_code == 1 and "records no test split" in none.output
    stage1 = save_checkpoint(tmp_path / "s1.safetensors", create_model("pinet_lite0", stage=1),
                             Preprocessing(crop_size=64, resize_short_side=80), {})
    wrong = _eval(str(stage1), "--dataset", "csv", "--root", str(trained["a"]))
    assert wrong.exit_code == 1 and "stage-1" in wrong.output
    assert not any(isinstance(r.exception, Exception) and not isinstance(r.exception, SystemExit)
                   for r in (other, none, wrong))


@pytest.mark.slow
def test_unreadable_image_is_skipped_and_named(trained, tmp_path):
    from pinet_training.checkpoint_evaluation import score_images

    loaded = load_checkpoint(trained["run"] / "best.safetensors", stage=2)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    good = sorted(trained["b"].parent.glob("img_*.png"))[:2]
    scores, problems = score_images(loaded.model, [good[0], broken, good[1]], loaded.header.preprocessing, 2, "cpu")
    assert np.isfinite(scores[[0, 2]]).all() and np.isnan(scores[1])
    assert len(problems) == 1 and "broken.png" in problems[0]
