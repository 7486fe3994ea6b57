"""--ema-decay: the moving average of the trained weights, what is validated and shipped with it, and
what a resume restores."""

import pytest
import torch

from pinet.checkpoint import load_checkpoint, read_header
from pinet_training.weight_average import TENSOR_PREFIX, WeightAverage


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
