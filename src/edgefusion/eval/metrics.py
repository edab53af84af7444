"""Inception Score and Kernel Inception Distance, as torch-fidelity computes them, in numpy.

BK-SDM reports IS with torch-fidelity; we reproduce its estimator (10 splits of the samples after
a permutation seeded 2020, KL of p(y|x) to the split's marginal p(y), float64) so our numbers
compare with the paper's without pulling in torch-fidelity and its torchvision pin. KID is the
unbiased MMD^2 with the cubic polynomial kernel (Binkowski et al., 2018), averaged over random
subsets as torch-fidelity does. FID lives in :mod:`edgefusion.eval.fid`.
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax

_SEED = 2020


def inception_score(logits: np.ndarray, splits: int = 10, seed: int = _SEED) -> tuple[float, float]:
    """IS = exp(E_x KL(p(y|x) || p(y))) per split; returns (mean, std) over the splits."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[0] < splits:
        raise ValueError(f"need (N, classes) logits with N >= splits={splits}, got {logits.shape}")
    logits = logits[np.random.RandomState(seed).permutation(len(logits))]
    log_p = log_softmax(logits, axis=1)
    n = len(logits)
    scores = []
    for i in range(splits):
        chunk = log_p[i * n // splits : (i + 1) * n // splits]
        log_marginal = np.log(np.exp(chunk).mean(axis=0, keepdims=True))
        scores.append(np.exp((np.exp(chunk) * (chunk - log_marginal)).sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))


def _polynomial_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3."""
    d, m = x.shape[1], x.shape[0]
    k_xx, k_yy, k_xy = ((a @ b.T / d + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2 * k_xy.sum() / (m * m))


def kernel_inception_distance(
    features_a: np.ndarray,
    features_b: np.ndarray,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = _SEED,
) -> tuple[float, float]:
    """KID (mean, std) over ``subsets`` random subsets of ``min(subset_size, N_a, N_b)`` samples."""
    a, b = (np.asarray(f, dtype=np.float64) for f in (features_a, features_b))
    size = min(subset_size, len(a), len(b))
    if size < 2:
        raise ValueError("KID needs at least 2 samples per set")
    rng = np.random.RandomState(seed)
    values = [
        _polynomial_mmd2(
            a[rng.choice(len(a), size, replace=False)], b[rng.choice(len(b), size, replace=False)]
        )
        for _ in range(subsets)
    ]
    return float(np.mean(values)), float(np.std(values))
