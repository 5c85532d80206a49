import numpy as np
import pytest

from medfm.data.splits import stratified_partition

FR = {"train": 0.7, "val": 0.15, "test": 0.15}


def test_partition_is_disjoint_complete_and_stratified():
    labels = np.repeat(np.arange(3), [500, 200, 30])
    parts = stratified_partition(labels, FR, seed=0)
    allidx = np.concatenate(list(parts.values()))
    assert len(allidx) == len(labels) and len(np.unique(allidx)) == len(labels)
    for name, frac in FR.items():
        counts = np.bincount(labels[parts[name]], minlength=3)
        assert np.all(np.abs(counts - frac * np.array([500, 200, 30])) <= 1.5), (name, counts)


def test_same_seed_gives_byte_identical_parts_and_other_seed_differs():
    labels = np.random.default_rng(1).integers(0, 4, 1000)
    a = stratified_partition(labels, FR, seed=42)
    b = stratified_partition(labels, FR, seed=42)
    c = stratified_partition(labels, FR, seed=43)
    assert all(a[k].tobytes() == b[k].tobytes() for k in FR)
    assert any(a[k].tobytes() != c[k].tobytes() for k in FR)


def test_tiny_class_reaches_every_part():
    labels = np.array([0] * 50 + [1] * 3)
    parts = stratified_partition(labels, FR, seed=0)
    for name in FR:
        assert 1 in labels[parts[name]], name


def test_bad_fractions_rejected():
    with pytest.raises(ValueError):
        stratified_partition(np.zeros(10, int), {"a": 0.5, "b": 0.6}, seed=0)
