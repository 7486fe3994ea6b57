"""Self-describing checkpoints: exact round trip, every refusal, stage-1 -> stage-2 transfer."""

import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from pinet.checkpoint import (
    CheckpointError,
    load_checkpoint,
    read_header,
    save_checkpoint,
    transfer_stage1_to_stage2,
)
from pinet.models import create_model, default_preprocessing

PREP = default_preprocessing("pinet_lite0")


@pytest.fixture(scope="module")
def stage2_file(tmp_path_factory):
    torch.manual_seed(3)
    model = create_model("pinet_lite0", stage=2)
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    save_checkpoint(path, model, PREP, training={"epoch": 7, "val_srcc": 0.5})
    return path, model


def _rewrite_metadata(source, target, change):
    """Copy a checkpoint with its header metadata edited by `change`."""
    data = source.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    change(header["__metadata__"])
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    target.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data[8 + length:])
    return target


def test_round_trip_is_exact(stage2_file):
    path, model = stage2_file
    loaded = load_checkpoint(path, stage=2)
    original = model.state_dict()
    restored = loaded.model.state_dict()
    assert set(original) == set(restored)
    for name, value in original.items():
        assert torch.equal(value, restored[name]), name
    header = loaded.header
    assert header.stage == 2 and header.model_config == model.config and header.preprocessing == PREP
    assert header.training == {"epoch": 7, "val_srcc": 0.5}
    assert header.cost["parameters"] == sum(p.numel() for p in model.parameters())
    assert not loaded.model.training
    assert [p.name for p in path.parent.iterdir()] == ["model.safetensors"]   # no temp files left
    assert path.stat().st_mode & 0o777 == 0o644


def test_extra_tensors_round_trip(tmp_path):
    model = create_model("pinet_lite0", stage=1)
    extra = {"optimizer/0/exp_avg": torch.arange(5.0)}
    path = save_checkpoint(tmp_path / "s1.safetensors", model, PREP, extra_tensors=extra)
    loaded = load_checkpoint(path, stage=1)
    assert torch.equal(loaded.extra_tensors["optimizer/0/exp_avg"], torch.arange(5.0))


def test_refuses_wrong_stage(stage2_file):
    path, _ = stage2_file
    with pytest.raises(CheckpointError, match="stage-2 checkpoint, a stage-1 one is needed") as info:
        load_checkpoint(path, stage=1)
    assert str(path) in str(info.value)


def test_refuses_newer_format(stage2_file, tmp_path):
    path, _ = stage2_file
    newer = _rewrite_metadata(path, tmp_path / "newer.safetensors",
                              lambda meta: meta.update(format_version="99"))
    with pytest.raises(CheckpointError, match="newer than this toolkit") as info:
        read_header(newer)
    assert "newer.safetensors" in str(info.value)


def test_refuses_missing_and_unexpected_tensors(stage2_file, tmp_path):
    path, model = stage2_file
    loaded = load_checkpoint(path)
    metadata = json.loads(json.dumps({k: v for k, v in _metadata(path).items()}))
    tensors = dict(model.state_dict())
    removed = tensors.pop("regressor.0.weight")
    save_file(tensors, tmp_path / "missing.safetensors", metadata=metadata)
    with pytest.raises(CheckpointError, match=r"1 missing tensors \(e.g. regressor.0.weight\)"):
        load_checkpoint(tmp_path / "missing.safetensors")
    tensors["regressor.0.weight"] = removed
    tensors["extra_head.weight"] = torch.zeros(2)
    save_file(tensors, tmp_path / "unexpected.safetensors", metadata=metadata)
    with pytest.raises(CheckpointError, match=r"1 unexpected tensors \(e.g. extra_head.weight\)"):
        load_checkpoint(tmp_path / "unexpected.safetensors")
    assert loaded.header.stage == 2


def _metadata(path):
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + length])["__metadata__"]


def test_refuses_corrupt_and_foreign_files(stage2_file, tmp_path):
    path, _ = stage2_file
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupt") as info:
        load_checkpoint(truncated)
    assert "truncated.safetensors" in str(info.value)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01 definitely not a checkpoint")
    with pytest.raises(CheckpointError, match="not a safetensors file or corrupt header"):
        load_checkpoint(garbage)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(1)}, foreign)
    with pytest.raises(CheckpointError, match="not a PINet checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "absent.safetensors")


def test_stage1_to_stage2_transfer_copies_every_shared_tensor():
    torch.manual_seed(1)
    stage1 = create_model("pinet_lite0", stage=1)
    torch.manual_seed(2)
    stage2 = create_model("pinet_lite0", stage=2)
    regressor_before = {k: v.clone() for k, v in stage2.state_dict().items() if k.startswith("regressor.")}
    copied = transfer_stage1_to_stage2(stage1, stage2)
    source, target = stage1.state_dict(), stage2.state_dict()
    shared = sorted(k for k in target if not k.startswith("regressor."))
    assert copied == shared
    for name in shared:
        assert torch.equal(source[name], target[name]), name
    for name, value in regressor_before.items():
        assert torch.equal(target[name], value)
    assert not any(k.startswith(("rank_head.", "distortion_head.")) for k in target)


def test_half_precision_storage_halves_the_file_and_loads_as_float32(stage2_file, tmp_path):
    path, model = stage2_file
    half = save_checkpoint(tmp_path / "half.safetensors", model, PREP, half_precision_storage=True)
    assert half.stat().st_size < 0.55 * path.stat().st_size
    restored = load_checkpoint(half, stage=2).model.state_dict()
    for name, value in model.state_dict().items():
        if value.is_floating_point():
            assert restored[name].dtype == torch.float32
            assert torch.equal(restored[name], value.half().float()), name
        else:
            assert torch.equal(restored[name], value), name
