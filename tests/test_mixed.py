"""Stage 2 on two datasets at once (a CLIVE-like MOS set + a synthetic pseudo-MOS set): batches
mix both, the synthetic part only ranks within itself, the checkpoint states both datasets and the
output's meaning, a SIGKILLed run resumes to the same weights. Tiny Lite0, 64 px crops; the data
comes from the clive_like/synthetic fixtures (tests/helpers/mixed_sets.py)."""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from pinet.checkpoint import load_checkpoint, read_header
from pinet_training.datasets import load_dataset


def test_fidelity_ranking_loss_rewards_the_right_order_and_skips_near_ties():
    from pinet_training.mixed import fidelity_ranking_loss

    targets = torch.tensor([0.9, 0.5, 0.1])
    right = fidelity_ranking_loss(torch.tensor([0.8, 0.5, 0.2]), targets)
    wrong = fidelity_ranking_loss(torch.tensor([0.2, 0.5, 0.8]), targets)
    assert 0 <= right < 0.2 < 0.8 < wrong <= 1
    assert fidelity_ranking_loss(torch.tensor([0.1, 0.9]), torch.tensor([0.50, 0.52]), margin=0.05) is None
    assert fidelity_ranking_loss(torch.tensor([0.3]), torch.tensor([0.5])) is None


def test_mixed_loss_regresses_the_primary_set_only():
    from pinet_training.mixed import LossWeights, mixed_loss

    predictions = torch.tensor([0.5, 0.5, 0.9, 0.1], requires_grad=True)
    targets = torch.tensor([0.4, 0.6, 0.2, 0.8])           # the mix items are ranked, not regressed
    source = torch.tensor([0, 0, 1, 1])
    total, parts = mixed_loss(predictions, targets, source, LossWeights("l1", 0.0, 1.0))
    assert parts["loss_primary"] == pytest.approx(0.1)
    assert parts["loss_rank_mix"] > 0.9                    # 0.9 vs 0.1 is the wrong order
    total.backward()
    assert predictions.grad[2] > 0 > predictions.grad[3]   # the descent step swaps the mix pair's order


def test_score_meaning_names_the_primary_scale(clive_like):
    from pinet_training.mixed import score_meaning_name

    assert score_meaning_name(load_dataset("clive", clive_like)) == "MOS/100 (CLIVE)"


def test_batches_mix_both_sets_in_every_step(clive_like, synthetic, mixed_sets):
    from pinet_training.finetune import load_data, load_mix, prepare_round

    settings = mixed_sets.settings(clive_like, synthetic, Path("/nonexistent/run"))
    prepared = prepare_round(settings, load_data(settings), 0, load_mix(settings))
    train = {s.path for s in prepared.dataset.subset(prepared.split.split.train)}
    mix_train = {s.path for s in prepared.mix.subset(prepared.mix_split.split.train)}
    assert len(mix_train) == 6 and all("ref2" not in str(p) and "ref3" not in str(p) for p in mix_train)  # val refs out
    steps = prepared.batches.steps_per_epoch
    for step in range(steps):
        batch = prepared.batches(step)
        primary = min(4, len(train) - 4 * step)                # the epoch's last batch may be short
        assert batch["crops"].shape == (primary + 2, 3, 64, 64)
        assert batch["source"].tolist() == [0] * primary + [1, 1]
    assert not any("training_t1" in str(path) for path in train)                       # anchors left out


@pytest.mark.slow
def test_mixed_run_records_both_datasets_and_the_output_meaning(clive_like, synthetic, mixed_sets, tmp_path):
    from pinet_training.finetune import run_finetune

    results, results_json = run_finetune(mixed_sets.settings(clive_like, synthetic, tmp_path / "run"), lambda _: None)
    header = read_header(tmp_path / "run" / "best.safetensors")
    prep = header.preprocessing
    assert (prep.score_name, tuple(prep.score_range), prep.higher_is_better) == ("MOS/100 (CLIVE)", (0.0, 1.0), True)
    primary, mix = header.training["info"]["datasets"]
    assert (primary["role"], primary["name"], primary["scale"]["low"], primary["scale"]["high"]) == \
        ("primary", "clive", 0.0, 100.0)
    assert primary["normalised_as"] == "MOS/100 (CLIVE)" and primary["include_anchors"] is False
    assert (mix["role"], mix["name"], mix["scale"]["label"], mix["per_batch"]) == \
        ("mix", "synthetic", "pseudo-MOS (0-1)", 2)
    assert "ranking" in mix["loss"] and mix["train_images"] == 6
    assert header.training["mix_test"]["dataset"] == "synthetic" and header.training["mix_test"]["n"] == 4
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    train = [r for r in log if r["kind"] == "train"]
    assert train and all("loss_primary" in r for r in train) and any("loss_rank_mix" in r for r in train)
    summary = json.loads(results_json.read_text())
    assert summary["mix_test"]["rounds"][0]["srcc"] == results[0]["mix_test"]["srcc"]
    assert "Held-out synthetic" in (tmp_path / "run" / "results.md").read_text()


@pytest.mark.slow
def test_frozen_backbone_stages_do_not_move(clive_like, synthetic, tmp_path, mixed_sets):
    from pinet_training.engine import make_deterministic
    from pinet_training.finetune import build_model, run_finetune

    settings = mixed_sets.settings(clive_like, synthetic, tmp_path / "run", epochs=1, freeze_backbone_stages=3,
                                   train_on_all=True)
    run_finetune(settings, lambda _: None)
    trained = load_checkpoint(tmp_path / "run" / "last.safetensors", stage=2).model.state_dict()
    make_deterministic(settings.seed)                  # the run's own starting weights
    start = build_model(settings)[0].state_dict()
    frozen = [k for k in trained if k.startswith(("backbone.conv_stem", "backbone.bn0", "backbone.blocks.0.",
                                                    "backbone.blocks.1.", "backbone.blocks.2."))]
    moving = [k for k in trained if k.startswith("backbone.blocks.3.") and trained[k].dtype.is_floating_point]
    assert frozen and all(torch.equal(trained[k], start[k]) for k in frozen)       # BN statistics included
    assert any(not torch.equal(trained[k], start[k]) for k in moving)
    header = read_header(tmp_path / "run" / "best.safetensors").training
    assert header["info"]["frozen_backbone_stages"] == 3 and header["settings"]["train_on_all"] is True
    assert "test" not in header and header["mix_test"]["n"] == 4
    assert header["epoch_choice"] == "last" and header["chosen_epoch"] == 1    # no validation: the last epoch
    summary = json.loads((tmp_path / "run" / "results.json").read_text())
    assert summary["mode"] == "train-on-all" and summary["n_train"] == 18


@pytest.mark.slow
@pytest.mark.parametrize("average", [[], ["--ema-decay", "0.9", "--swa-start-epoch", "2", "--lr-cosine-epochs", "2"]],
                         ids=["raw", "ema+swa+cosine"])
def test_killed_mixed_run_resumes_to_the_same_weights(interrupted_runs, clive_like, synthetic, mixed_sets,
                                                       tmp_path, average):
    common = ["--dataset", "clive", "--root", str(clive_like), "--mix-dataset", "synthetic", "--mix-root",
              str(synthetic), "--mix-per-batch", "2", "--mix-eval-max-images", "4", "--epochs", "2",
              "--checkpoint-every", "1", "--seed", "3", "--freeze-backbone-stages", "1", "--channels-last",
              "--eval-engine", "onnx", *average, *mixed_sets.TINY]
    interrupted = tmp_path / "interrupted"
    interrupted_runs.run_straight_then_kill(lambda out: mixed_sets.finetune_cli(*common, "--out", str(out)),
                                            tmp_path / "straight", interrupted)
    total = read_header(tmp_path / "straight" / "last.safetensors").training["step"]
    assert 0 < read_header(interrupted / "last.safetensors").training["step"] < total
    resumed = subprocess.run(mixed_sets.finetune_cli(*common, "--out", str(interrupted), "--resume"),
                             env={**os.environ, "PYTHONHASHSEED": "0"}, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stderr
    for name in ("last.safetensors", "best.safetensors"):
        a = load_checkpoint(tmp_path / "straight" / name, stage=2)
        b = load_checkpoint(interrupted / name, stage=2)
        a_weights, b_weights = a.model.state_dict(), b.model.state_dict()
        assert all(torch.equal(a_weights[k], b_weights[k]) for k in a_weights), name
        assert a.extra_tensors.keys() == b.extra_tensors.keys()        # optimizer state (+ the average)
        assert all(torch.equal(a.extra_tensors[k], b.extra_tensors[k]) for k in a.extra_tensors), name
    if average:
        assert any(k.startswith("ema/") for k in load_checkpoint(interrupted / "last.safetensors", stage=2).extra_tensors)
    a_results = json.loads((tmp_path / "straight" / "results.json").read_text())
    b_results = json.loads((interrupted / "results.json").read_text())
    assert a_results["rounds"] == b_results["rounds"] and a_results["mix_test"] == b_results["mix_test"]
    assert np.isfinite(a_results["mix_test"]["median_srcc"])


@pytest.mark.slow
def test_cli_mix_options_are_checked(clive_like, synthetic, tmp_path, mixed_sets):
    command = mixed_sets.finetune_cli("--dataset", "clive", "--root", str(clive_like), "--out", str(tmp_path / "r"),
                                      "--mix-dataset", "synthetic", "--mix-root", str(synthetic), *mixed_sets.TINY)
    bad = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "--mix-dataset and --mix-per-batch" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_onnx_eval_engine_scores_like_torch(clive_like):
    from pinet.models import create_model
    from pinet_training.checkpoint_evaluation import score_images
    from pinet_training.onnx_eval import scoring_model

    torch.manual_seed(0)
    model = create_model("pinet_lite0", stage=2, init="random").eval()
    dataset = load_dataset("clive", clive_like)
    from pinet.models import default_preprocessing
    from dataclasses import replace

    prep = replace(default_preprocessing("pinet_lite0"), crop_size=64, resize_short_side=72)
    paths = [s.path for s in dataset.samples[:5]]
    eager, _ = score_images(model, paths, prep, 2, torch.device("cpu"))
    onnx, _ = score_images(scoring_model(model, "onnx", 1), paths, prep, 2, torch.device("cpu"))
    assert np.abs(eager - onnx).max() < 1e-4 and np.ptp(eager) > 0
    with pytest.raises(ValueError, match="torch, onnx"):
        scoring_model(model, "tensorrt")


@pytest.mark.slow
@pytest.mark.parametrize("level,stages", [("features", 0), ("taps", 0), ("taps", 1), ("taps", 2), ("taps", 3)])
def test_head_only_training_on_cached_representations(clive_like, synthetic, mixed_sets, tmp_path, level, stages):
    from dataclasses import replace

    from pinet_training.checkpoint_evaluation import evaluate_checkpoint, sample_id
    from pinet_training.finetune import run_finetune
    from pinet_training.head_cache import CacheLayout, head_scores, open_cache

    # Init: a tiny stage-2 model after one epoch (so its BatchNorm statistics are real ones).
    init_settings = mixed_sets.settings(clive_like, synthetic, tmp_path / "init", epochs=1, train_on_all=True)
    run_finetune(init_settings, lambda _: None)
    init = tmp_path / "init" / "best.safetensors"
    snapshot = load_checkpoint(tmp_path / "init" / "epoch_01.safetensors", stage=2).model.state_dict()
    assert all(torch.equal(v, load_checkpoint(init, stage=2).model.state_dict()[k]) for k, v in snapshot.items())
    settings = mixed_sets.settings(clive_like, synthetic, tmp_path / "run", init=str(init), variant=None,
                                   backbone_init="auto", resize_short_side="72", train_head_only=True,
                                   mix_train_images=4, feature_cache=tmp_path / "cache", epochs=3,
                                   cache_level=level, train_last_stages=stages)
    results, _ = run_finetune(settings, lambda _: None)
    descriptors = sorted((tmp_path / "cache").glob("*.json"))
    assert len(descriptors) == 3                               # primary, mix held-out, mix train subset
    files = sorted((tmp_path / "cache").glob("*.npy"))
    assert len(files) == 3 * (1 if level == "features" else 5)
    stamps = [f.stat().st_mtime_ns for f in files]
    start = load_checkpoint(init, stage=2).model.state_dict()
    best = load_checkpoint(tmp_path / "run" / "best.safetensors", stage=2)
    trained = best.model.state_dict()
    fixed = ("backbone.", "staircase.") if level == "features" else ("backbone.",)
    # Lite0's blocks: f2 -> f3 = 3-4, f3 -> f4 = 5-10, f4 -> f5 = 11-15
    first_trained = {0: 16, 1: 11, 2: 5, 3: 3}[stages]
    last = tuple(f"backbone.blocks.{i}." for i in range(first_trained, 16)) or ("-",)
    assert all(torch.equal(trained[k], start[k]) for k in trained if k.startswith(fixed) and not k.startswith(last))
    if stages >= 2:    # the earlier stage's first block trains as well as the last stage; the block before stays
        block = f"backbone.blocks.{first_trained}."
        assert any(not torch.equal(trained[k], start[k]) for k in trained if k.startswith(block))
        before = f"backbone.blocks.{first_trained - 1}."
        assert all(torch.equal(trained[k], start[k]) for k in trained if k.startswith(before))
    if stages:
        changed = [k for k in trained if k.startswith(last) and not torch.equal(trained[k], start[k])]
        assert changed and not any(k.endswith(("running_mean", "running_var")) for k in changed)   # BN stays eval
    assert any(not torch.equal(trained[k], start[k]) for k in trained if k.startswith("quality_branch."))
    if level == "taps":
        assert any(not torch.equal(trained[k], start[k]) for k in trained if k.startswith("staircase."))
    # The cached scores are the full model's on the contract crops (taps are float16: a looser bound).
    dataset = load_dataset("clive", clive_like)
    full = evaluate_checkpoint(tmp_path / "run" / "best.safetensors", dataset, "test", 4, "cpu")
    primary = next(parts for parts in map(open_cache, descriptors) if len(parts[0]) == len(dataset))
    assert primary[0].shape[:3] == (len(dataset), 2, 5)       # mirrored view (--flip), 5 contract crops
    ids = [sample_id(s, dataset) for s in dataset.samples]
    layout = CacheLayout(level, train_last_stages=stages)
    cached = head_scores(best.model.eval(), primary, layout, [ids.index(i) for i in full.ids])
    tolerance = 1e-5 if level == "features" else 2e-3
    assert np.abs(cached - np.array(full.predictions)).max() < tolerance
    assert np.isfinite(results[0]["test"]["rmse"])
    header = read_header(tmp_path / "run" / "best.safetensors").training
    assert header["info"]["train_head_only"] is True and len(header["info"]["feature_cache"]) == 3
    assert header["info"]["cache_level"] == level and header["settings"]["cache_level"] == level
    assert header["info"]["datasets"][1]["train_images"] == 4 and header["mix_test"]["n"] == 4
    run_finetune(replace(settings, out_dir=tmp_path / "again"), lambda _: None)          # reuses the cache
    assert [f.stat().st_mtime_ns for f in files] == stamps


def test_fresh_head_takes_only_the_backbone_from_the_init(tmp_path):
    from dataclasses import replace

    from pinet.checkpoint import save_checkpoint
    from pinet.models import create_model, default_preprocessing
    from pinet_training.finetune import FinetuneSettings
    from pinet_training.finetune_model import build_model
    from pinet_training.finetune_settings import FinetuneError, check_settings

    torch.manual_seed(1)
    source = create_model("pinet_lite0", stage=2)
    init = tmp_path / "init.safetensors"
    save_checkpoint(init, source, default_preprocessing("pinet_lite0"))
    settings = FinetuneSettings(dataset="clive", root=tmp_path, out_dir=tmp_path / "run", init=str(init),
                                fresh_head=True)
    torch.manual_seed(2)
    model, _, info = build_model(settings)
    assert info["fresh_head"] is True and "backbone of the init only" in info["note"]
    built, original = model.state_dict(), source.state_dict()
    assert all(torch.equal(built[k], original[k]) for k in built if k.startswith("backbone."))
    above = [k for k in built if not k.startswith("backbone.")]
    assert above and not any(torch.equal(built[k], original[k]) for k in above)
    with pytest.raises(FinetuneError, match="--fresh-head"):
        check_settings(replace(settings, init="none", variant="pinet_lite0"))


def test_within_group_ranking_ignores_pairs_across_groups():
    from pinet_training.mixed import RANK_TEMPERATURE, fidelity_ranking_loss

    predictions = torch.tensor([0.9, 0.1, 0.2, 0.8])
    targets = torch.tensor([0.9, 0.2, 0.3, 0.7])      # group 0 ordered right, group 1 ordered wrong
    groups = torch.tensor([0, 0, 1, 1])

    def fidelity(p_hat):   # target order says "first is better": p = 1 (the loss adds 1e-8 under each root)
        return 1 - np.sqrt(p_hat + 1e-8) - np.sqrt(1e-8)

    right = fidelity(1 / (1 + np.exp(-(0.9 - 0.1) / RANK_TEMPERATURE)))
    wrong = fidelity(1 / (1 + np.exp(-(0.8 - 0.2) / RANK_TEMPERATURE)))
    # pair (2, 3): target 0.3 < 0.7 so p = 0 and the loss is 1 - sqrt(1 - p_hat(0.2 - 0.8)) = fidelity of 0.8 over 0.2
    expected = (right + wrong) / 2
    got = float(fidelity_ranking_loss(predictions, targets, 0.0, groups))
    assert abs(got - expected) < 1e-5
    assert float(fidelity_ranking_loss(predictions, targets)) != pytest.approx(expected)   # 6 pairs without groups
    assert fidelity_ranking_loss(predictions, targets, 0.0, torch.tensor([0, 1, 2, 3])) is None


def test_cached_mix_draws_come_in_groups_of_one_reference():
    from pinet_training.head_cache import MIX_GROUP, CachedBatches

    rng = np.random.default_rng(0)
    primary = (rng.normal(size=(10, 2, 5, 1)).astype(np.float16),)
    mix = (np.arange(12 * 2 * 5, dtype=np.float16).reshape(12, 2, 5, 1),)   # value encodes (image, view, crop)
    references = [f"ref{i // 4}" for i in range(12)]                           # 3 references x 4 images
    batches = CachedBatches(primary, range(10), np.linspace(0, 1, 10), 10, 3, None, mix, range(12),
                            np.linspace(0, 1, 12), 6, references)
    for step in range(5):
        batch = batches(step)
        assert torch.equal(batch["features"][0], batches(step)["features"][0])             # pure function of step
        group, mixed = batch["group"].numpy(), batch["source"].numpy() == 1
        assert mixed.sum() == 6 and (group[~mixed] == -1).all()
        values = batch["features"][0][mixed, 0].numpy().astype(int)
        image, view, crop = values // 10, values % 10 // 5, values % 5
        for g in set(group[mixed]):
            members = group[mixed] == g
            assert members.sum() <= MIX_GROUP and len(set(image[members] // 4)) == 1      # one reference
            assert len(set(view[members])) == 1 and len(set(crop[members])) == 1        # same window
            assert len(set(image[members])) == members.sum()                            # distinct images


def test_random_crop_mix_draws_come_in_groups_of_one_reference(synthetic):
    """--mix-pairs within-reference without the cache: groups of <= MIX_GROUP distinct images of one
    reference, cut at one shared window, a pure function of the step; the crops are those windows."""
    from pinet_runtime.preprocess import Preprocessing, normalize
    from pinet_training.finetune_data import croppable_pixels, cut_window
    from pinet_training.mixed import MIX_GROUP, ReferenceGroupBatches

    dataset = load_dataset("synthetic", synthetic)
    train = tuple(i for i, s in enumerate(dataset.samples) if s.group in ("ref0", "ref1"))
    prep = Preprocessing(resize_short_side=72, crop_size=64)
    batches = ReferenceGroupBatches(dataset, train, prep, per_batch=5, flip=True, seed=3)
    for step in range(4):
        draws = batches.draws(step)
        assert draws == batches.draws(step) and len(draws) == 5
        for group in {d[1] for d in draws}:
            members = [d for d in draws if d[1] == group]
            assert len(members) <= MIX_GROUP and len({d[0] for d in members}) == len(members)      # distinct
            assert len({dataset.samples[d[0]].group for d in members}) == 1                      # one reference
            assert len({d[2:] for d in members}) == 1                                            # one window
        batch = batches(step)
        assert batch["group"].tolist() == [d[1] for d in draws]
        assert batch["targets"].tolist() == pytest.approx([dataset.samples[d[0]].score for d in draws])
        expected = [cut_window(croppable_pixels(dataset.samples[d[0]].path, prep), 64, *d[2:]) for d in draws]
        assert np.allclose(batch["crops"].numpy(), normalize(np.stack(expected), prep))
    with pytest.raises(ValueError, match=">= 2 training images"):
        ReferenceGroupBatches(dataset, train[:1], prep, per_batch=2, flip=False, seed=0)


@pytest.mark.slow
def test_random_crop_run_ranks_mix_pairs_within_references_only(clive_like, synthetic, mixed_sets, tmp_path):
    from pinet_training.finetune import load_data, load_mix, prepare_round, run_finetune

    settings = mixed_sets.settings(clive_like, synthetic, tmp_path / "run", mix_per_batch=3,
                                   mix_pairs="within-reference")
    prepared = prepare_round(settings, load_data(settings), 0, load_mix(settings))
    batch = prepared.batches(0)
    assert batch["group"].tolist()[:3] == [-1, -1, -1] and (batch["group"][3:] >= 0).all()
    run_finetune(settings, lambda _: None)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert any("loss_rank_mix" in r for r in log if r["kind"] == "train")
    assert read_header(tmp_path / "run" / "best.safetensors").training["settings"]["mix_pairs"] == "within-reference"
