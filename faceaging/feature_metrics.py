"""Distances between two sets of image features: FID and KID (numpy, float64)."""

from __future__ import annotations

import numpy as np
import scipy.linalg


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FID: the Fréchet distance between Gaussians fitted to feature sets ``a`` and ``b`` (N, D)."""
    if min(len(a), len(b)) < 2:
        raise ValueError(f"FID needs at least 2 features per set, got {len(a)} and {len(b)}")
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(covmean).all():  # singular product: regularise, as the reference FID does
        offset = np.eye(len(mu_a)) * 1e-6
        covmean = scipy.linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(covmean.real))


def kernel_inception_distance(a: np.ndarray, b: np.ndarray, num_subsets: int = 100,
                              subset_size: int = 1000, seed: int = 0) -> float:
    """KID: unbiased MMD² with the cubic polynomial kernel, averaged over random subsets."""
    m = min(len(a), len(b), subset_size)
    if m < 2:
        raise ValueError(f"KID needs at least 2 features per set, got {len(a)} and {len(b)}")
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    dim = a.shape[1]
    rng = np.random.default_rng(seed)
    total = 0.0
    for _ in range(num_subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        kxx, kyy, kxy = ((p @ q.T / dim + 1.0) ** 3 for p, q in ((x, x), (y, y), (x, y)))
        within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m - 1)
        total += (within - 2.0 * kxy.sum() / m) / m
    return float(total / num_subsets)
