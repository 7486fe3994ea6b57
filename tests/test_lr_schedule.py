"""--lr-cosine-epochs: both learning rates fall on a half cosine to 0 over a horizon set in epochs; the
schedule is a function of the step alone, so epoch snapshots of a longer run are the shorter runs."""

import math

import pytest
import torch

from pinet.checkpoint import load_checkpoint, read_header


def test_lr_factor_is_a_half_cosine_that_ends_at_zero_and_stays_there(tmp_path):
    from pinet_training.finetune_settings import FinetuneSettings, lr_factor

    cosine = FinetuneSettings(dataset="csv", root=tmp_path, out_dir=tmp_path, lr_cosine_epochs=2)
    # 4 steps per epoch, horizon 2 epochs = 8 steps: (1 + cos(pi * k / 8)) / 2
    expected = [1.0, 0.961940, 0.853553, 0.691342, 0.5, 0.308658, 0.146447, 0.038060, 0.0, 0.0, 0.0]
    assert [lr_factor(cosine, step, 4) for step in range(11)] == pytest.approx(expected, abs=1e-6)
    constant = FinetuneSettings(dataset="csv", root=tmp_path, out_dir=tmp_path)
    assert {lr_factor(constant, step, 4) for step in range(11)} == {1.0}


def _lrs(path) -> list[float]:
    return [group["lr"] for group in read_header(path).training["optimizer"]["param_groups"]]


@pytest.mark.slow
def test_training_follows_the_schedule_and_epoch_snapshots_are_the_shorter_runs(clive_like, synthetic,
                                                                              mixed_sets, tmp_path):
    from pinet_training.finetune import FinetuneError, run_finetune
    from pinet_training.finetune_settings import lr_factor

    def train(name: str, epochs: int, horizon: int):
        settings = mixed_sets.settings(clive_like, synthetic, tmp_path / name, epochs=epochs,
                                       lr_cosine_epochs=horizon, lr_backbone=1e-3, lr_head=2e-3, train_on_all=True)
        run_finetune(settings, lambda _: None)
        return settings, tmp_path / name

    settings, long_run = train("long", 2, 2)
    header = read_header(long_run / "last.safetensors").training
    steps, per_epoch = header["step"], header["info"]["steps_per_epoch"]
    assert header["settings"]["lr_cosine_epochs"] == 2 and steps == 2 * per_epoch >= 2
    # the lrs of the last step taken (step steps - 1): small, not zero, in the backbone : head ratio
    last_factor = (1 + math.cos(math.pi * (steps - 1) / steps)) / 2
    assert lr_factor(settings, steps - 1, per_epoch) == pytest.approx(last_factor)
    assert _lrs(long_run / "last.safetensors") == pytest.approx([1e-3 * last_factor, 2e-3 * last_factor])

    _, short_run = train("short", 1, 2)            # one epoch of the same 2-epoch schedule
    _, constant_run = train("constant", 1, 0)
    assert _lrs(short_run / "last.safetensors") == pytest.approx(
        [lr * (1 + math.cos(math.pi * (per_epoch - 1) / steps)) / 2 for lr in (1e-3, 2e-3)])
    assert _lrs(constant_run / "last.safetensors") == [1e-3, 2e-3]
    snapshot = load_checkpoint(long_run / "epoch_01.safetensors", stage=2).model.state_dict()
    short = load_checkpoint(short_run / "best.safetensors", stage=2).model.state_dict()
    constant = load_checkpoint(constant_run / "best.safetensors", stage=2).model.state_dict()
    assert all(torch.equal(snapshot[k], short[k]) for k in snapshot)
    assert not all(torch.equal(short[k], constant[k]) for k in short)    # the schedule changed the training

    # another schedule cannot resume the run (its weights came from the first one)
    changed = mixed_sets.settings(clive_like, synthetic, tmp_path / "short", epochs=2, lr_cosine_epochs=3,
                                  lr_backbone=1e-3, lr_head=2e-3, train_on_all=True, resume=True)
    with pytest.raises(Exception, match=r"lr_cosine_epochs=2 \(this run: 3\)"):
        run_finetune(changed, lambda _: None)
    with pytest.raises(FinetuneError, match="--lr-cosine-epochs must be >= 0"):
        run_finetune(mixed_sets.settings(clive_like, synthetic, tmp_path / "bad", lr_cosine_epochs=-1),
                     lambda _: None)
