"""IS, KID and FID estimators against closed forms."""

import numpy as np
import pytest
from scipy.linalg import hadamard

from edgefusion.eval.fid import fid_from_features
from edgefusion.eval.metrics import inception_score, kernel_inception_distance


def test_inception_score_of_identical_predictions_is_one():
    logits = np.tile(np.random.default_rng(0).normal(size=(1, 10)), (50, 1))
    mean, std = inception_score(logits)
    assert mean == pytest.approx(1.0, abs=1e-12)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_of_confident_uniform_predictions_is_the_class_count():
    logits = np.eye(10)[np.arange(100) % 10] * 100.0  # certain of one class each, classes balanced
    mean, _ = inception_score(logits, splits=1)
    assert mean == pytest.approx(10.0, rel=1e-9)


def test_fid_equals_the_closed_form_on_fixed_features():
    # Columns of a Hadamard matrix (without the constant one) are centred and orthogonal, so the
    # sample covariances are exactly diagonal and FID has the scalar closed form per dimension.
    design = hadamard(16)[:, 1:4].astype(np.float64)
    mu_a, mu_b = np.array([0.5, -1.0, 2.0]), np.array([1.5, 0.0, -1.0])
    s_a, s_b = np.array([1.0, 2.0, 0.5]), np.array([3.0, 0.2, 0.5])
    features_a, features_b = mu_a + design * s_a, mu_b + design * s_b
    var_a, var_b = s_a**2 * 16 / 15, s_b**2 * 16 / 15  # unbiased covariance of +-1 columns
    closed = np.sum((mu_a - mu_b) ** 2) + np.sum(var_a + var_b - 2 * np.sqrt(var_a * var_b))
    assert fid_from_features(features_a, features_b) == pytest.approx(closed, abs=1e-6)


def test_kid_is_larger_for_a_shifted_set():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 8)), rng.normal(size=(200, 8))
    same, _ = kernel_inception_distance(a, b, subsets=20, subset_size=100)
    shifted, _ = kernel_inception_distance(a, b + 1.0, subsets=20, subset_size=100)
    assert abs(same) < 0.05 < shifted
