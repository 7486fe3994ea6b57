"""--lr-cosine-epochs: both learning rates fall on a half cosine to 0 over a horizon set in epochs;
--backbone-warmup-epochs: the pretrained backbone's rate rises from 0 while the rest trains at full rate.
The schedule is a function of the step alone, so epoch snapshots of a longer run are the shorter runs."""

import math

import pytest
import torch

from pinet.checkpoint import load_checkpoint, read_header


def test_cosine_factor_is_a_half_cosine_that_ends_at_zero_and_stays_there():
    from pinet_training.lr_schedule import LrSchedule, cosine_factor

    cosine = LrSchedule(1e-3, 1e-2, cosine_epochs=2)
    # 4 steps per epoch, horizon 2 epochs = 8 steps: (1 + cos(pi * k / 8)) / 2
    expected = [1.0, 0.961940, 0.853553, 0.691342, 0.5, 0.308658, 0.146447, 0.038060, 0.0, 0.0, 0.0]
    assert [cosine_factor(cosine, step, 4) for step in range(11)] == pytest.approx(expected, abs=1e-6)
    assert {cosine_factor(LrSchedule(1e-3, 1e-2), step, 4) for step in range(11)} == {1.0}


def test_group_rates_warm_only_the_backbone_and_share_the_cosine():
    from pinet_training.lr_schedule import LrSchedule, group_lrs

    assert [group_lrs(LrSchedule(1e-3, 1e-2), step, 4) for step in (0, 9)] == [[1e-3, 1e-2]] * 2
    warm = LrSchedule(1e-3, 1e-2, backbone_warmup_epochs=2)        # 8 steps: 0, 1/8, ..., 1, then 1
    assert [group_lrs(warm, step, 4)[1] for step in range(10)] == pytest.approx(
        [1e-3 * min(k / 8, 1) for k in range(10)])
    assert {(rates[0], rates[2]) for rates in (group_lrs(warm, step, 4) for step in range(10))} == {(1e-3, 1e-2)}
    both = LrSchedule(1e-3, 1e-2, cosine_epochs=2, backbone_warmup_epochs=1)
    half = 0.5 * (1 + math.cos(math.pi * 2 / 8))                   # step 2: cosine 2/8, warm-up 2/4
    assert group_lrs(both, 2, 4) == pytest.approx([1e-3 * half, 1e-3 * half * 0.5, 1e-2 * half])


def test_a_warm_up_step_at_rate_zero_moves_everything_but_the_backbone(one_torch_thread):
    from pinet.models import create_model
    from pinet_training.lr_schedule import LrSchedule, group_lrs, parameter_groups

    torch.manual_seed(0)
    model = create_model("pinet_lite0")
    model.backbone.requires_grad_(False)
    model.backbone.blocks[-1].requires_grad_(True)                  # as if the last stage trains
    schedule = LrSchedule(1e-3, 1e-2, backbone_warmup_epochs=1)
    groups = parameter_groups(model, schedule)
    names = {id(p): n for n, p in model.named_parameters()}
    body, backbone, head = ({names[id(p)].split(".")[0] for p in group["params"]} for group in groups)
    assert (body, backbone, head) == ({"staircase", "quality_branch", "distortion_branch"}, {"backbone"}, {"regressor"})
    assert {names[id(p)] for p in groups[1]["params"]} == {
        n for n, p in model.named_parameters() if n.startswith("backbone.") and p.requires_grad}
    assert len(parameter_groups(model, LrSchedule(1e-3, 1e-2))) == 2      # no warm-up: the two groups of old runs

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.Adam(groups)
    for group, rate in zip(optimizer.param_groups, group_lrs(schedule, 0, 4), strict=True):
        group["lr"] = rate
    model.train()
    model(torch.rand(2, 3, 64, 64)).sum().backward()
    optimizer.step()
    moved = {n.split(".")[0] for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved == {"staircase", "quality_branch", "distortion_branch", "regressor"}


def _lrs(path) -> list[float]:
    return [group["lr"] for group in read_header(path).training["optimizer"]["param_groups"]]


@pytest.mark.slow
def test_training_follows_the_schedule_and_epoch_snapshots_are_the_shorter_runs(clive_like, synthetic,
                                                                              mixed_sets, tmp_path):
    from pinet_training.finetune import FinetuneError, run_finetune
    from pinet_training.finetune_settings import lr_schedule
    from pinet_training.lr_schedule import cosine_factor

    def train(name: str, epochs: int, horizon: int, warmup: int = 0):
        settings = mixed_sets.settings(clive_like, synthetic, tmp_path / name, epochs=epochs,
                                       lr_cosine_epochs=horizon, backbone_warmup_epochs=warmup,
                                       lr_backbone=1e-3, lr_head=2e-3, train_on_all=True)
        run_finetune(settings, lambda _: None)
        return settings, tmp_path / name

    settings, long_run = train("long", 2, 2)
    header = read_header(long_run / "last.safetensors").training
    steps, per_epoch = header["step"], header["info"]["steps_per_epoch"]
    assert header["settings"]["lr_cosine_epochs"] == 2 and steps == 2 * per_epoch >= 2
    # the lrs of the last step taken (step steps - 1): small, not zero, in the backbone : head ratio
    last_factor = (1 + math.cos(math.pi * (steps - 1) / steps)) / 2
    assert cosine_factor(lr_schedule(settings), steps - 1, per_epoch) == pytest.approx(last_factor)
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

    # a backbone warm-up over 2 epochs, 1 trained: three groups, the backbone's at (steps - 1) / horizon
    _, warm_run = train("warm", 1, 0, warmup=2)
    assert _lrs(warm_run / "last.safetensors") == pytest.approx([1e-3, 1e-3 * (per_epoch - 1) / steps, 2e-3])
    assert read_header(warm_run / "last.safetensors").training["settings"]["backbone_warmup_epochs"] == 2
    warm = load_checkpoint(warm_run / "best.safetensors", stage=2).model.state_dict()
    assert not all(torch.equal(warm[k], constant[k]) for k in warm if k.startswith("backbone."))
    for bad, message in ((dict(backbone_warmup_epochs=-1), "--backbone-warmup-epochs must be >= 0"),
                         (dict(backbone_warmup_epochs=1, train_head_only=True), "the backbone does not train")):
        with pytest.raises(FinetuneError, match=message):
            run_finetune(mixed_sets.settings(clive_like, synthetic, tmp_path / "bad", **bad), lambda _: None)
