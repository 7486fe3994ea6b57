"""--ema-decay and --swa-start-epoch: the averages of the trained weights, what is validated and shipped
with them, and what a resume restores."""

import pytest
import torch

from pinet.checkpoint import load_checkpoint, read_header
from pinet_training.weight_average import TENSOR_PREFIX, WeightAverage, weight_average_for


def _net() -> torch.nn.Module:
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(1.0)
    net[0].bias.requires_grad_(False)                  # a frozen parameter is never averaged
    return net


def test_the_average_follows_the_ramped_decay_and_skips_frozen_parameters():
    net, decay = _net(), 0.5
    average = WeightAverage(net, decay)
    assert "0.bias" not in average.shadow and set(average.shadow) == {"0.weight", "1.weight", "1.bias"}
    expected = 1.0
    for updates, value in enumerate([3.0, -1.0, 5.0], start=1):
        with torch.no_grad():
            for p in net.parameters():
                p.fill_(value)
        average.update(net, updates)
        keep = min(decay, (1 + updates) / (10 + updates))     # 0.18, 0.25, 0.31: the ramp, below 0.5
        expected = keep * expected + (1 - keep) * value
        assert torch.allclose(average.shadow["1.bias"], torch.tensor([expected]))
    assert average.decay_after(100) == decay


def test_batchnorm_statistics_are_averaged_and_integer_buffers_are_not():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(2))
    average = WeightAverage(net, 0.5)
    assert {"1.running_mean", "1.running_var", "0.weight"} <= set(average.shadow)
    assert "1.num_batches_tracked" not in average.shadow
    net.train()
    net(torch.full((4, 1, 2, 2), 3.0))                     # moves the running statistics
    average.update(net, 1)
    keep = average.decay_after(1)
    assert torch.allclose(average.shadow["1.running_mean"], (1 - keep) * net[1].running_mean)


def test_applied_swaps_the_average_in_and_the_raw_weights_back():
    net = _net()
    average = WeightAverage(net, 0.9)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(2.0)
    raw = {k: v.clone() for k, v in net.state_dict().items()}
    with average.applied(net):
        assert torch.equal(net[1].weight, torch.ones(1, 2))          # the average (initial weights)
        assert torch.equal(net[0].bias, raw["0.bias"])               # frozen: untouched
    assert all(torch.equal(net.state_dict()[k], v) for k, v in raw.items())
    with pytest.raises(RuntimeError, match="boom"), average.applied(net):
        raise RuntimeError("boom")
    assert all(torch.equal(net.state_dict()[k], v) for k, v in raw.items())   # restored on errors too


def test_state_tensors_round_trip_and_a_missing_one_is_named():
    net = _net()
    average = WeightAverage(net, 0.9)
    tensors = {k: v + 1 for k, v in average.state_tensors().items()}
    average.load_state_tensors(tensors)
    assert torch.equal(average.shadow["1.weight"], torch.full((1, 2), 2.0))
    del tensors[TENSOR_PREFIX + "1.bias"]
    with pytest.raises(ValueError, match="1.bias"):
        average.load_state_tensors(tensors)
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(net, 1.0)


def test_finetune_snapshots_and_ships_the_average(clive_like, synthetic, mixed_sets, tmp_path):
    from pinet_training.finetune import run_finetune

    settings = mixed_sets.settings(clive_like, synthetic, tmp_path / "run", epochs=2, ema_decay=0.9,
                                   freeze_backbone_stages=2, train_on_all=True)
    run_finetune(settings, lambda _: None)
    run_dir = tmp_path / "run"
    last = load_checkpoint(run_dir / "last.safetensors", stage=2)
    header = read_header(run_dir / "last.safetensors").training
    assert header["settings"]["ema_decay"] == 0.9 and header["step"] > 0
    shadow = {k[len(TENSOR_PREFIX):]: v for k, v in last.extra_tensors.items() if k.startswith(TENSOR_PREFIX)}
    raw = last.model.state_dict()
    assert not any(k.startswith("backbone.conv_stem") for k in shadow)          # frozen stem: not averaged
    assert any(k.endswith("running_mean") for k in shadow)                       # BatchNorm statistics are
    assert any(not torch.equal(shadow[k], raw[k]) for k in shadow)                  # the average lags the weights
    # what ships (best = the last epoch with --train-on-all) and the last epoch's snapshot: the average
    for name in ("best.safetensors", "epoch_02.safetensors"):
        shipped = load_checkpoint(run_dir / name, stage=2).model.state_dict()
        assert all(torch.equal(shipped[k], shadow[k]) for k in shadow), name
        assert all(torch.equal(shipped[k], raw[k]) for k in raw if k not in shadow), name   # frozen parameters
    with pytest.raises(Exception, match="ema-decay"):
        run_finetune(mixed_sets.settings(clive_like, synthetic, tmp_path / "bad", epochs=1, ema_decay=1.0),
                     lambda _: None)


def _set_all(net: torch.nn.Module, value: float) -> None:
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(value)


def test_the_uniform_phase_is_the_plain_mean_of_the_weights_since_its_start():
    net = _net()
    average = WeightAverage(net, 0.5, uniform_from_update=3)
    values = [3.0, -1.0, 5.0, 2.0, 10.0]
    for updates, value in enumerate(values, start=1):
        _set_all(net, value)
        average.update(net, updates)
        if updates >= 3:                                     # the EMA of updates 1-2 is dropped
            assert torch.allclose(average.shadow["1.weight"], torch.full((1, 2), sum(values[2:updates]) / (updates - 2)))
    assert average.decay_after(1) == min(0.5, 2 / 11)        # before the start: the EMA's ramp


def test_without_an_ema_the_average_follows_the_weights_until_the_uniform_phase():
    net = _net()
    average = weight_average_for(net, 0.0, swa_start_epoch=2, steps_per_epoch=3)
    assert average.uniform_from_update == 4                  # epoch 2 starts with the 4th update
    for updates, value in enumerate([3.0, -1.0, 5.0, 2.0, 10.0], start=1):
        _set_all(net, value)
        average.update(net, updates)
        expected = value if updates < 4 else (2.0 + 10.0) / 2 if updates == 5 else 2.0
        assert torch.allclose(average.shadow["1.bias"], torch.tensor([expected])), updates
    assert weight_average_for(net, 0.0, 0, 3) is None
    assert weight_average_for(net, 0.9, 0, 3).uniform_from_update is None
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(net, 0.0)                               # neither an EMA nor a uniform phase
    with pytest.raises(ValueError, match="update >= 1"):
        WeightAverage(net, 0.0, uniform_from_update=0)


def test_finetune_ships_the_mean_of_the_steps_since_the_swa_epoch(clive_like, synthetic, mixed_sets, tmp_path):
    """One step per epoch (4 CLIVE images an epoch, 4 per batch), so a plain run's epoch snapshots are the
    weights after each step: the averaged run's epoch 3 must be the mean of the plain run's epochs 2 and 3."""
    from pinet_training.finetune import run_finetune

    common = dict(epochs=3, images_per_epoch=4, freeze_backbone_stages=2, train_on_all=True)
    run_finetune(mixed_sets.settings(clive_like, synthetic, tmp_path / "plain", **common), lambda _: None)
    run_finetune(mixed_sets.settings(clive_like, synthetic, tmp_path / "swa", swa_start_epoch=2, **common),
                 lambda _: None)

    def weights(run: str, name: str) -> dict[str, torch.Tensor]:
        return load_checkpoint(tmp_path / run / name, stage=2).model.state_dict()

    assert read_header(tmp_path / "swa" / "last.safetensors").training["info"]["steps_per_epoch"] == 1
    assert read_header(tmp_path / "swa" / "last.safetensors").training["settings"]["swa_start_epoch"] == 2
    plain = [weights("plain", f"epoch_0{e}.safetensors") for e in (1, 2, 3)]
    swa = [weights("swa", f"epoch_0{e}.safetensors") for e in (1, 2, 3)]
    averaged = {k[len(TENSOR_PREFIX):] for k in load_checkpoint(tmp_path / "swa" / "last.safetensors",
                                                                 stage=2).extra_tensors if k.startswith(TENSOR_PREFIX)}
    assert averaged and any(k.endswith("running_var") for k in averaged)
    assert all(torch.equal(swa[0][k], plain[0][k]) for k in plain[0])          # before epoch 2: the weights
    assert all(torch.equal(swa[1][k], plain[1][k]) for k in plain[1])          # a mean of one step
    moved = [k for k in averaged if not torch.equal(plain[1][k], plain[2][k])]
    assert moved
    for k in averaged:
        assert torch.allclose(swa[2][k], (plain[1][k] + plain[2][k]) / 2, atol=1e-6), k
    assert all(torch.equal(swa[2][k], plain[2][k]) for k in plain[2] if k not in averaged)
    # the average never feeds back into training: the raw weights of both runs are the same
    raw = [load_checkpoint(tmp_path / run / "last.safetensors", stage=2).model.state_dict() for run in ("plain", "swa")]
    assert all(torch.equal(raw[0][k], raw[1][k]) for k in raw[0])


@pytest.mark.parametrize("start, message", [(-1, ">= 0"), (4, "after the last epoch")])
def test_an_impossible_swa_start_is_refused(clive_like, synthetic, mixed_sets, tmp_path, start, message):
    from pinet_training.finetune import run_finetune

    with pytest.raises(Exception, match=message):
        run_finetune(mixed_sets.settings(clive_like, synthetic, tmp_path / "bad", epochs=3, swa_start_epoch=start),
                     lambda _: None)
