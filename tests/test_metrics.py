"""Metrics against hand-computed values and against scipy.stats (an independent implementation)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from pinet_training.metrics import (
    average_ranks, fit_logistic, krcc, logistic_4, plcc, quality_metrics, rmse, srcc,
)


def test_hand_computed_small_case():
    x = [1.0, 2.0, 3.0, 4.0]
    y = [1.0, 3.0, 2.0, 4.0]
    # ranks equal the values; d = (0, -1, 1, 0): SRCC = 1 - 6*2 / (4*15) = 0.8
    assert srcc(x, y) == pytest.approx(0.8)
    # 6 pairs, only (2,3) discordant: (5 - 1) / 6
    assert krcc(x, y) == pytest.approx(4 / 6)
    # Pearson: deviations (-1.5,-.5,.5,1.5) both; sum xy = 2.25+(-.5*.5)+(.5*-.5)+2.25 = 4, sum x^2 = 5
    assert plcc(x, y) == pytest.approx(0.8)
    assert rmse(x, y) == pytest.approx(math.sqrt(2 / 4))


def test_ties_use_average_ranks_and_tau_b():
    assert list(average_ranks(np.array([10.0, 20.0, 10.0, 30.0]))) == [1.5, 3.0, 1.5, 4.0]
    x = [1, 1, 2, 3]
    y = [1, 2, 2, 3]
    # pairs: (0,1) x-tie, (1,2) y-tie, the other 4 concordant; tau-b = 4 / sqrt(5*5)
    assert krcc(x, y) == pytest.approx(4 / 5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agree_with_scipy_on_random_data_with_ties(seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 20, size=300).astype(float)  # many ties
    y = x * 0.3 + rng.normal(size=300)
    assert srcc(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert krcc(x, y) == pytest.approx(stats.kendalltau(x, y, variant="b").statistic, abs=1e-12)
    assert plcc(x, y) == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-12)


def test_logistic_fit_recovers_known_parameters_from_noiseless_data():
    x = np.linspace(-2.0, 4.0, 60)
    truth = (4.5, 1.2, 1.0, 0.7)
    y = logistic_4(x, *truth)
    fit = fit_logistic(x, y)
    assert fit.kind == "logistic"
    b1, b2, b3, b4 = fit.params
    assert (b1, b2, b3, abs(b4)) == pytest.approx(truth, rel=1e-5)
    metrics = quality_metrics(x, y)
    assert metrics.plcc == pytest.approx(1.0) and metrics.rmse == pytest.approx(0.0, abs=1e-6)
    assert metrics.plcc_raw < 0.99  # the raw relation is not linear


def test_decreasing_relation_gets_a_decreasing_curve():
    x = np.linspace(0.0, 1.0, 30)
    y = logistic_4(x, 1.0, 9.0, 0.4, 0.1)  # high x -> low y
    metrics = quality_metrics(x, y)
    assert metrics.srcc == pytest.approx(-1.0) and metrics.krcc == pytest.approx(-1.0)
    assert metrics.fit == "logistic" and metrics.plcc == pytest.approx(1.0, abs=1e-6)


def test_fallbacks_for_tiny_and_constant_input():
    tiny = quality_metrics([1.0, 2.0, 4.0], [2.0, 4.0, 8.0])
    assert tiny.fit == "linear" and tiny.plcc == pytest.approx(1.0) and tiny.rmse == pytest.approx(0.0, abs=1e-9)
    constant = quality_metrics([3.0] * 6, [1, 2, 3, 4, 5, 6])
    assert constant.fit == "none" and math.isnan(constant.plcc) and math.isnan(constant.srcc)


def test_noisy_fit_is_at_least_as_good_as_the_raw_linear_relation():
    rng = np.random.default_rng(5)
    x = rng.uniform(0, 1, 400)
    y = 1 + 4 / (1 + np.exp(-(x - 0.5) / 0.1)) + rng.normal(scale=0.3, size=400)
    metrics = quality_metrics(x, y)
    assert metrics.fit == "logistic"
    assert metrics.plcc >= metrics.plcc_raw - 1e-9
    # the residual is close to the noise level we planted
    assert metrics.rmse == pytest.approx(0.3, abs=0.05)


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="3 values"):
        srcc([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="finite"):
        quality_metrics([1, 2, float("nan")], [1, 2, 3])
