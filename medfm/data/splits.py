"""Seeded, stratified splits that are identical on every machine.

Uses numpy's PCG64 generator, whose stream is stable across numpy versions, so the same seed gives
byte-identical split files everywhere. Multilabel data is split randomly (not stratified).
"""

from __future__ import annotations

import numpy as np


def stratified_partition(labels: np.ndarray, fractions: dict[str, float], seed: int) -> dict[str, np.ndarray]:
    """Partition sample indices into named parts with the given fractions, per class.

    Every class with at least as many samples as parts gets at least one sample in each part, so
    small classes are never missing from val or test. Returns sorted index arrays.
    """
    names = list(fractions)
    fr = np.array([fractions[n] for n in names], dtype=np.float64)
    if not np.isclose(fr.sum(), 1.0) or (fr < 0).any():
        raise ValueError(f"split fractions must be non-negative and sum to 1, got {fractions}")
    rng = np.random.Generator(np.random.PCG64(seed))
    strata = labels if labels.ndim == 1 else np.zeros(len(labels), dtype=np.int64)
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for cls in np.unique(strata):
        idx = np.flatnonzero(strata == cls)
        idx = idx[rng.permutation(len(idx))]
        counts = _allocate(len(idx), fr)
        bounds = np.concatenate([[0], np.cumsum(counts)])
        for k, n in enumerate(names):
            parts[n].append(idx[bounds[k] : bounds[k + 1]])
    return {n: np.sort(np.concatenate(p)) for n, p in parts.items()}


def _allocate(n: int, fr: np.ndarray) -> np.ndarray:
    """Split n items by fractions (largest remainder), with one each first when n allows."""
    k = len(fr)
    base = np.zeros(k, dtype=np.int64)
    if n >= k:
        base += (fr > 0).astype(np.int64)
    rest = n - base.sum()
    exact = fr * rest
    counts = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: rest - counts.sum()]] += 1
    return base + counts
