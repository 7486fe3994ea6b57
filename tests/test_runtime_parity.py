"""Parity: for the same checkpoint, the torch-free Scorer gives the PyTorch model's scores (mean of
per-crop outputs on the crops of pinet_runtime.preprocess) within 1e-4 on real photos.

The model is a tiny random-init pinet_lite0 (stage 2, 64 px crops). Random init alone makes its
output nearly constant across images (about 4e-5 spread, measured), which would let any exporter
pass, so before saving the checkpoint we (1) set BatchNorm running statistics from the sample
crops and (2) centre and scale the regressor's layers on those crops, so the scores spread by
about 0.3 across photos.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="parity needs torch (the train/export extras)")
pinet_export = pytest.importorskip("pinet_export", reason="parity needs the exporter")

from pinet.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from pinet.models import create_model  # noqa: E402
from pinet_runtime import Scorer  # noqa: E402
from pinet_runtime.preprocess import Preprocessing, preprocess  # noqa: E402

PARITY_PREPROCESSING = Preprocessing(crop_size=64, resize_short_side=80, crop_layout="center_corners")
PRISTINE_SUBSET = 16  # evenly spread over the shared set; all 267 would cost ~1 min of shared CPU


def _informative_random_model(calibration_crops: np.ndarray):
    torch.manual_seed(0)
    model = create_model("pinet_lite0", stage=2, init="random")
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average: one pass sets the statistics exactly
    batch = torch.from_numpy(calibration_crops)
    with torch.no_grad():
        model(batch)
        model.eval()
        # Data-dependent init of the regressor: centre and scale every layer's pre-activation on
        # the calibration crops, so the score's spread comes from the image, not from the biases
        # (otherwise float32 rounding of large constant activations dominates the comparison).
        hidden = model.interact(model.forward_features(batch))
        linears = [layer for layer in model.regressor if isinstance(layer, torch.nn.Linear)]
        for index, layer in enumerate(linears):
            pre = hidden @ layer.weight.T
            last = index == len(linears) - 1
            layer.weight.mul_((0.3 if last else 1.0) / pre.std(0).clamp_min(1e-12)[:, None])
            pre = hidden @ layer.weight.T
            layer.bias.copy_((0.5 if last else 0.0) - pre.mean(0))
            hidden = torch.relu(layer(hidden))
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory, sample_photos):
    folder = tmp_path_factory.mktemp("parity")
    calibration = np.concatenate([preprocess(p, PARITY_PREPROCESSING) for p in sample_photos])
    model = _informative_random_model(calibration)
    checkpoint = folder / "tiny.safetensors"
    save_checkpoint(checkpoint, model, PARITY_PREPROCESSING, training={"purpose": "runtime parity test"})
    onnx_path = pinet_export.export_fp32(checkpoint, folder / "tiny.onnx")
    return checkpoint, onnx_path


def _assert_parity(checkpoint, onnx_path, photos) -> np.ndarray:
    torch_model = load_checkpoint(checkpoint, stage=2).model  # eval mode, from the same file
    scorer = Scorer(onnx_path, providers="cpu")
    assert scorer.preprocessing == PARITY_PREPROCESSING  # read from the ONNX metadata
    crops = [preprocess(photo, scorer.preprocessing) for photo in photos]
    with torch.no_grad():
        per_crop = torch_model(torch.from_numpy(np.concatenate(crops))).double().numpy()
    torch_scores = np.array([chunk.mean() for chunk in np.split(per_crop, np.cumsum([len(c) for c in crops])[:-1])])
    runtime = list(scorer.score_many(photos, batch_size=4))
    assert all(result.ok and result.crops == 5 for result in runtime)
    runtime_scores = np.array([result.score for result in runtime])
    np.testing.assert_allclose(runtime_scores, torch_scores, rtol=0, atol=1e-4)
    assert runtime_scores.std() > 0.05  # scores really depend on the image
    return runtime_scores


@pytest.mark.slow
def test_scorer_matches_pytorch_on_bundled_samples(exported, sample_photos):
    assert len(sample_photos) == 8
    _assert_parity(*exported, sample_photos)


@pytest.mark.slow
def test_scorer_matches_pytorch_on_shared_pristine_photos(exported, pristine_dir):
    photos = sorted(pristine_dir.glob("*.png"))
    step = max(1, len(photos) // PRISTINE_SUBSET)
    _assert_parity(*exported, photos[::step][:PRISTINE_SUBSET])
