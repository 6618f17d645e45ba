"""Clustered unit vectors that look like learned item embeddings, for index tests and benchmarks."""
from __future__ import annotations

import numpy as np


def clustered_unit_vectors(n: int, dim: int, clusters: int = 1000, spread: float = 0.35,
                           seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, dim)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    out = np.empty((n, dim), np.float32)
    step = 200_000
    for start in range(0, n, step):
        m = min(step, n - start)
        v = centers[rng.integers(clusters, size=m)] + spread * rng.normal(size=(m, dim)).astype(np.float32) / np.sqrt(dim)
        out[start:start + m] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out
