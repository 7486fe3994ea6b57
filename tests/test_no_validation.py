"""`--val-fraction 0`: a split round with no validation part. The whole training part (what a
0.15 run splits into train + val) trains, the test part is the same as with validation, every
epoch's weights are kept, and the last epoch is the model. Tiny Lite0 on a blur replica."""

import json

import pytest
import torch

from pinet.checkpoint import load_checkpoint, read_header
from pinet_training.datasets import CsvScale, load_dataset

SCALE = CsvScale(low=0.0, high=11.0, higher_is_better=True)


@pytest.fixture(scope="module")
def replica(replicas, tmp_path_factory, sample_photos):
    return replicas.make_blur_replica(tmp_path_factory.mktemp("noval"), sample_photos[:6], "noval",
                                      with_reference=True)


def _settings(replica, out, **changes):
    from pinet_training.finetune import FinetuneSettings

    base = dict(dataset="csv", root=replica, out_dir=out, variant="pinet_lite0", backbone_init="random",
                csv_scale=SCALE, epochs=2, batch_size=8, crops_per_image=2, lr_backbone=1e-3, lr_head=1e-3,
                crop_size=64, resize_short_side="native", val_fraction=0.0, epoch_choice="last", split_seed=4,
                ema_decay=0.5, workers=0, threads=1, show_progress=False)
    base.update(changes)
    return FinetuneSettings(**base)


def test_no_validation_trains_on_train_and_val_and_tests_the_same_part(replica, tmp_path, monkeypatch):
    import pinet_training.finetune as finetune
    from pinet_training.checkpoint_evaluation import sample_id
    from pinet_training.finetune_data import round_split
    from pinet_training.weight_average import TENSOR_PREFIX

    def no_validation(*args):
        raise AssertionError("a run with --val-fraction 0 must never validate")

    monkeypatch.setattr(finetune, "validation_metrics", no_validation)
    run = tmp_path / "run"
    said = []
    results, results_json = finetune.run_finetune(_settings(replica, run), said.append)

    dataset = load_dataset("csv", replica, csv_scale=SCALE)
    with_validation = round_split(dataset, 0, split_seed=4, val_fraction=0.25).split
    assert with_validation.val                                      # the comparison split does carve one
    best = read_header(run / "best.safetensors").training
    ids = lambda part: sorted(sample_id(dataset.samples[i], dataset) for i in part)
    assert sorted(best["split"]["test_ids"]) == ids(with_validation.test)
    assert best["split"]["n_val"] == 0
    assert best["split"]["n_train"] == len(with_validation.train) + len(with_validation.val)
    assert results[0]["val_srcc"] is None and results[0]["chosen_epoch"] == 2
    assert results[0]["test"]["srcc"] == best["test"]["srcc"]

    # each epoch's (averaged) weights are kept; the last epoch's are the model
    snapshots = sorted(p.name for p in run.glob("epoch_*.safetensors"))
    assert snapshots == ["epoch_01.safetensors", "epoch_02.safetensors"]
    snapshot = load_checkpoint(run / "epoch_02.safetensors", stage=2).model.state_dict()
    shipped = load_checkpoint(run / "best.safetensors", stage=2).model.state_dict()
    last = load_checkpoint(run / "last.safetensors", stage=2)
    averaged = {k[len(TENSOR_PREFIX):]: v for k, v in last.extra_tensors.items() if k.startswith(TENSOR_PREFIX)}
    assert averaged and all(torch.equal(shipped[k], averaged[k]) and torch.equal(snapshot[k], averaged[k])
                            for k in averaged)
    assert any(not torch.equal(shipped[k], last.model.state_dict()[k]) for k in averaged)   # not the raw weights

    assert f"round 1: epoch 2 (the last: --epoch-choice last; no validation part); test SRCC " \
           f"{results[0]['test']['srcc']:.4f}" in said
    report = (run / "results.md").read_text()
    assert "no validation part" in report and "0/" + str(len(with_validation.test)) in report
    assert json.loads(results_json.read_text())["rounds"][0]["n_val"] == 0


def test_no_validation_needs_the_last_epoch_rule(replica, tmp_path):
    from pinet_training.finetune import FinetuneError, run_finetune

    with pytest.raises(FinetuneError, match="--val-fraction 0 leaves no validation part .* --epoch-choice last"):
        run_finetune(_settings(replica, tmp_path / "a", epoch_choice="validation"), lambda _: None)
    with pytest.raises(FinetuneError, match=r"--val-fraction must be in \[0, 1\), got 1.0"):
        run_finetune(_settings(replica, tmp_path / "b", val_fraction=1.0), lambda _: None)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
