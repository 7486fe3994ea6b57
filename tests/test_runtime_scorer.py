"""pinet_runtime.Scorer: scores, batching, per-item errors, thread safety and provider choice.

Uses the tiny weighted-mean ONNX model from test_runtime_model_file.py (loaded by path), whose
score tests can compute independently with numpy.
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pinet_runtime import ModelFileError, ProviderFallbackWarning, Scorer
from pinet_runtime import metadata as keys
from pinet_runtime.preprocess import preprocess


@pytest.fixture(scope="module")
def tiny_model(tiny_onnx, tmp_path_factory) -> Path:
    return tiny_onnx.build_tiny_model(tmp_path_factory.mktemp("model") / "tiny.onnx")


@pytest.fixture(scope="module")
def scorer(tiny_model) -> Scorer:
    return Scorer(tiny_model, providers="cpu")


def _gradient(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (height + width)], axis=-1)
    return np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8)


def test_uniform_colour_scores_as_computed_by_hand(tiny_onnx, scorer):
    colour = np.array([128, 64, 200], dtype=np.float64)
    image = np.broadcast_to(colour.astype(np.uint8), (50, 70, 3)).copy()
    prep = tiny_onnx.TINY_PREPROCESSING
    standardised = (colour / 255.0 - np.array(prep.mean)) / np.array(prep.std)
    crops = np.broadcast_to(standardised[None, :, None, None], (5, 3, 32, 32))
    expected = tiny_onnx.tiny_expected_score(crops)
    assert scorer.score(image) == pytest.approx(expected, abs=1e-5)


def test_score_is_the_mean_of_per_crop_outputs_on_real_photos(tiny_onnx, scorer, sample_photos):
    for photo in sample_photos[:4]:
        crops = preprocess(photo, scorer.preprocessing)
        assert len(crops) == 5
        assert scorer.score(photo) == pytest.approx(tiny_onnx.tiny_expected_score(crops), abs=1e-5)


def test_path_bytes_pil_and_array_inputs_agree(scorer, tmp_path):
    pixels = _gradient(45, 61)
    path = tmp_path / "g.png"
    Image.fromarray(pixels).save(path)
    scores = [scorer.score(path), scorer.score(str(path)), scorer.score(path.read_bytes()),
              scorer.score(Image.open(path)), scorer.score(pixels)]
    assert max(scores) - min(scores) < 1e-6


def test_score_many_keeps_order_reports_errors_and_goes_on(scorer, tmp_path):
    items = []
    for index in range(7):
        path = tmp_path / f"img{index}.png"
        Image.fromarray(_gradient(40 + index * 3, 50, seed=index)).save(path)
        items.append(path)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 5)
    items.insert(2, tmp_path / "broken.png")
    items.insert(5, tmp_path / "missing.jpg")
    singles = {str(p): scorer.score(p) for p in items if p.name.startswith("img")}
    for batch_size in (1, 3, 100):
        results = list(scorer.score_many(items, batch_size=batch_size))
        assert [r.source for r in results] == [str(p) for p in items]
        for result in results:
            if result.source in singles:
                assert result.ok and result.crops == 5 and result.seconds >= 0
                assert result.score == pytest.approx(singles[result.source], abs=1e-6)
            else:
                assert result.score is None and result.crops == 0 and result.source in result.error
        assert "no such file" in results[5].error
    with pytest.raises(ValueError, match="batch_size"):
        list(scorer.score_many(items, batch_size=0))


def test_eight_threads_sharing_one_scorer_match_a_single_thread(scorer):
    images = [_gradient(40, 48 + index, seed=index) for index in range(40)]  # 40 x 5 = 200 crops
    reference = [r.score for r in scorer.score_many(images, batch_size=4)]
    assert sum(r.crops for r in scorer.score_many(images[:1])) * len(images) == 200
    outcomes: dict[int, list] = {}

    def work(worker: int) -> None:
        outcomes[worker] = [r.score for r in scorer.score_many(images, batch_size=4)]

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(outcomes) == 8
    for scores in outcomes.values():
        assert scores == reference  # bit-identical


def test_provider_choice_and_fallback_warning(tiny_model):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ProviderFallbackWarning)
        assert Scorer(tiny_model, providers="cpu").providers == ["CPUExecutionProvider"]
        assert "CPUExecutionProvider" in Scorer(tiny_model, providers="auto").providers
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime build has CUDA; the fallback case needs the CPU-only build")
    for request in ("cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"]):
        with pytest.warns(ProviderFallbackWarning, match="CUDAExecutionProvider"):
            fallen_back = Scorer(tiny_model, providers=request)
        assert fallen_back.providers == ["CPUExecutionProvider"]
        assert fallen_back.score(np.zeros((40, 40, 3), np.uint8)) == pytest.approx(
            Scorer(tiny_model, providers="cpu").score(np.zeros((40, 40, 3), np.uint8)))
    with pytest.raises(ValueError, match="not one of"):
        Scorer(tiny_model, providers="tpu")


def test_threads_option(tiny_model):
    one = Scorer(tiny_model, providers="cpu", threads=1)
    two = Scorer(tiny_model, providers="cpu", threads=2)
    image = _gradient(40, 52)
    assert one.score(image) == pytest.approx(two.score(image), abs=1e-6)
    with pytest.raises(ValueError, match="threads"):
        Scorer(tiny_model, threads=0)


def test_fixed_batch_model_is_run_in_padded_chunks(tiny_onnx, tmp_path, scorer):
    fixed = Scorer(tiny_onnx.build_tiny_model(tmp_path / "fixed.onnx", batch=4), providers="cpu")
    images = [_gradient(40, 44, seed=seed) for seed in range(3)]  # 15 crops: chunks of 4, last padded
    got = [r.score for r in fixed.score_many(images, batch_size=3)]
    want = [r.score for r in scorer.score_many(images, batch_size=3)]
    assert got == pytest.approx(want, abs=1e-6)


def test_refuses_models_without_pinet_metadata(tiny_onnx, tmp_path):
    bare = tiny_onnx.build_tiny_model(tmp_path / "bare.onnx", metadata={keys.PREPROCESSING: None})
    with pytest.raises(ModelFileError, match="metadata keys missing: pinet.preprocessing"):
        Scorer(bare)


def test_default_model_is_the_bundled_one_or_a_clear_error():
    try:
        default = Scorer(providers="cpu")
    except ModelFileError as err:
        assert "no bundled default model in this install; pass --model FILE" in str(err)
    else:
        assert default.info.precision == "int8"  # INT8 on CPU
