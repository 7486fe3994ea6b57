"""--mix-val-refs: synthetic training references moved out of training so the epoch can be chosen on
people's scores AND the synthetic ranking at once, never on either test part. Tiny data from the
clive_like/synthetic fixtures (tests/helpers/mixed_sets.py: synthetic refs 0-1 train, 2-3 held out)."""

from pathlib import Path

import pytest

from pinet.checkpoint import read_header
from pinet_training.datasets import load_dataset


def test_carved_references_leave_training_whole_and_never_touch_the_held_out_ones(synthetic):
    from pinet_training.finetune_data import carve_mix_validation, groups_of, round_split

    mix = load_dataset("synthetic", synthetic)
    base = round_split(mix, 0, 0, 0.15)
    assert carve_mix_validation(mix, base, 0) == base
    carved = carve_mix_validation(mix, base, 1)
    train, val, test = (groups_of(mix, part) for part in (carved.split.train, carved.split.val, carved.split.test))
    assert len(val) == 1 and len(train) == 1 and not (train & val)
    assert train | val == groups_of(mix, base.split.train) and test == {"ref2", "ref3"}
    assert carved.split.test == base.split.test
    # Whole references move: each of the validation reference's 3 images, none of its images left to train.
    assert len(carved.split.val) == 3 and len(carved.split.train) == 3
    assert carve_mix_validation(mix, base, 1) == carved                  # a fixed draw, the same every round
    assert "moved to validation" in carved.rule


def test_carving_every_training_reference_is_refused(synthetic):
    from pinet_training.datasets import DatasetError
    from pinet_training.finetune_data import carve_mix_validation, round_split

    mix = load_dataset("synthetic", synthetic)
    with pytest.raises(DatasetError, match="--mix-val-refs 2 would leave no training references"):
        carve_mix_validation(mix, round_split(mix, 0, 0, 0.15), 2)


@pytest.mark.parametrize("changes,message", [
    (dict(mix_val_refs=-1), "--mix-val-refs must be >= 0"),
    (dict(mix_val_refs=1, mix_dataset=None, mix_per_batch=0), "needs one"),
    (dict(mix_val_refs=1, train_on_all=True), "--train-on-all has no validation"),
    (dict(mix_val_refs=1, val_fraction=0.0, epoch_choice="last"), "--val-fraction 0 leaves no validation$"),
])
def test_mix_val_refs_options_are_checked(clive_like, synthetic, mixed_sets, tmp_path, changes, message):
    from pinet_training.finetune import FinetuneError, check_settings

    with pytest.raises(FinetuneError, match=message):
        check_settings(mixed_sets.settings(clive_like, synthetic, tmp_path / "run", **changes))


def _planted(monkeypatch, primary: list[float], mix: list[float]) -> list[str]:
    """Validation curves planted per dataset; returns which dataset each call scored."""
    import pinet_training.finetune as finetune

    curves, calls = {"clive": iter(primary), "synthetic": iter(mix)}, []

    def planted_validation(model, dataset, indices, prep, batch_size, device):
        calls.append(dataset.name)
        return {"val_srcc": next(curves[dataset.name])}

    monkeypatch.setattr(finetune, "validation_metrics", planted_validation)
    return calls


def test_the_epoch_is_chosen_on_the_mean_of_both_validation_parts(clive_like, synthetic, mixed_sets, tmp_path,
                                                                 monkeypatch):
    from pinet_training.finetune import run_finetune

    primary, mix = [0.50, 0.60, 0.55], [0.20, 0.30, 0.80]     # people alone: epoch 2; the mean: epoch 3
    calls = _planted(monkeypatch, primary, mix)
    settings = mixed_sets.settings(clive_like, synthetic, tmp_path / "joint", epochs=3, mix_val_refs=1)
    results, results_json = run_finetune(settings, lambda _: None)
    assert calls == ["clive", "synthetic"] * 3
    result = results[0]
    assert result["chosen_epoch"] == 3 and result["selected_on"] == "val_joint_srcc"
    assert result["val_srcc"] == pytest.approx(0.55) and result["val_mix_srcc"] == pytest.approx(0.80)
    assert result["val_joint_srcc"] == pytest.approx((0.55 + 0.80) / 2)
    best = read_header(tmp_path / "joint" / "best.safetensors").training
    assert best["best_step"] == 3 * best["info"]["steps_per_epoch"] and best["chosen_epoch"] == 3
    record = best["info"]["datasets"][1]
    assert (record["validation_references"], record["validation_images"], record["train_images"]) == (1, 3, 3)
    assert best["settings"]["mix_val_refs"] == 1
    assert "mean of the validation SRCC" in Path(results_json).with_suffix(".md").read_text()
    # The held-out references are still the reported ones, scored once on the chosen weights.
    assert result["mix_test"]["n"] == 4 and "moved to validation" in result["mix_test"]["rule"]


def test_without_mix_val_refs_people_alone_choose(clive_like, synthetic, mixed_sets, tmp_path, monkeypatch):
    from pinet_training.finetune import run_finetune

    calls = _planted(monkeypatch, [0.50, 0.60, 0.55], [])
    results, _ = run_finetune(mixed_sets.settings(clive_like, synthetic, tmp_path / "alone", epochs=3),
                              lambda _: None)
    assert calls == ["clive"] * 3
    assert results[0]["chosen_epoch"] == 2 and "selected_on" not in results[0]
    assert "mix_val_refs" not in read_header(tmp_path / "alone" / "best.safetensors").training["settings"]


@pytest.mark.slow
def test_cached_head_training_scores_the_validation_references_from_their_own_cache(clive_like, synthetic,
                                                                                    mixed_sets, tmp_path):
    import json

    from scipy.stats import spearmanr

    from pinet_training.checkpoint_evaluation import evaluate_checkpoint
    from pinet_training.finetune import run_finetune
    from pinet_training.finetune_data import carve_mix_validation, round_split

    run_finetune(mixed_sets.settings(clive_like, synthetic, tmp_path / "init", epochs=1, train_on_all=True),
                 lambda _: None)
    settings = mixed_sets.settings(clive_like, synthetic, tmp_path / "run", init=str(tmp_path / "init" / "best.safetensors"),
                                   variant=None, backbone_init="auto", train_head_only=True, epochs=2,
                                   feature_cache=tmp_path / "cache", mix_val_refs=1, lr_head=1e-4)
    results, _ = run_finetune(settings, lambda _: None)
    assert len(list((tmp_path / "cache").glob("*.json"))) == 4      # primary, mix held-out, mix train, mix val
    logged = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    validations = [r for r in logged if r.get("kind") == "val"]
    assert len(validations) == 2
    for record in validations:
        assert record["val_joint_srcc"] == pytest.approx((record["val_srcc"] + record["val_mix_srcc"]) / 2)
    # The chosen epoch's cached score of the validation references is the full model's on their images.
    chosen = next(r for r in validations if r["epoch"] == results[0]["chosen_epoch"])
    mix = load_dataset("synthetic", synthetic)
    header = read_header(tmp_path / "run" / "best.safetensors").training
    assert header["info"]["datasets"][1]["validation_images"] == 3
    val_paths = {str(mix.samples[i].path) for i in carve_mix_validation(mix, round_split(mix, 0, 0, 0.15), 1).split.val}
    full = evaluate_checkpoint(tmp_path / "run" / "best.safetensors", mix, "all", 4, "cpu")
    pairs = [(p, t) for s, p, t in zip(mix.samples, full.predictions, full.targets) if str(s.path) in val_paths]
    assert len(pairs) == 3
    expected = spearmanr([p for p, _ in pairs], [t for _, t in pairs]).statistic
    assert chosen["val_mix_srcc"] == pytest.approx(expected)
