"""The cache format: chunked writes, resume bookkeeping, fingerprint checks, HDF5 export."""

import h5py
import numpy as np
import pytest
import zarr

from medfm.cache import FeatureCache, SplitLayout, ZarrCacheWriter, export_h5, fingerprint
from medfm.cache.store import FORMAT, check_matches, read_meta
from medfm.errors import MedfmError

rng = np.random.default_rng(0)


def make_store(path, n=10, chunk_rows=4, tokens=True):
    inputs = {"backbone": {"name": "x", "weights": {"sha256": "aa"}}, "dataset": {"name": "d"}}
    meta = {"format": FORMAT, "fingerprint": fingerprint(inputs), "fingerprint_inputs": inputs,
            "extract": {"tokens": tokens, "chunk_rows": chunk_rows},
            "dataset": {"name": "d", "task": "multiclass", "classes": ["a", "b", "c"], "headline_metric": "auroc"},
            "backbone": {"name": "x", "feature": "cls", "weights": {"origin": "random", "sha256": "aa"},
                         "preprocessing": {"input_size": [3, 56, 56]}}}
    lay = SplitLayout(n, 6, (5, 6) if tokens else None, (), chunk_rows)
    labels = {"train": rng.integers(0, 3, n), "test": rng.integers(0, 3, n)}
    ids = {s: [f"{s}/{i}" for i in range(n)] for s in labels}
    w = ZarrCacheWriter(path, meta, {"train": lay, "test": lay}, labels, ids, "float16")
    return w, meta, inputs, labels


def test_chunked_write_resume_bookkeeping_and_read(tmp_path):
    path = tmp_path / "c.zarr"
    w, meta, _, labels = make_store(path)
    assert w.pending_chunks("train") == [0, 1, 2]
    feats = rng.normal(size=(10, 6)).astype(np.float16)
    toks = rng.normal(size=(10, 5, 6)).astype(np.float16)
    w.write_chunk("train", 1, feats[4:8], toks[4:8])
    # a reopened writer sees the same progress: this is what a resumed run relies on
    w2, *_ = make_store(path)
    assert w2.pending_chunks("train") == [0, 2]
    with pytest.raises(MedfmError, match="incomplete"):
        FeatureCache(path)
    for c, (lo, hi) in enumerate(((0, 4), (4, 8), (8, 10))):
        w2.write_chunk("train", c, feats[lo:hi], toks[lo:hi])
        w2.write_chunk("test", c, feats[lo:hi], toks[lo:hi])
    w2.finish()
    cache = FeatureCache(path)
    assert cache.splits == ["train", "test"]
    assert np.array_equal(cache.features("train"), feats.astype(np.float32))
    assert np.array_equal(cache.tokens("train")[2:5], toks[2:5])
    assert np.array_equal(cache.labels("test"), labels["test"])
    assert cache.ids("train")[3] == "train/3"
    # another tool reads it with plain zarr, dimension names included
    g = zarr.open_group(str(path), mode="r")
    assert g["train/features"].metadata.dimension_names == ("sample", "feature")


def test_write_chunk_rejects_misaligned_rows(tmp_path):
    w, *_ = make_store(tmp_path / "c.zarr")
    with pytest.raises(RuntimeError):
        w.write_chunk("train", 0, np.zeros((3, 6), np.float16), np.zeros((3, 5, 6), np.float16))


def test_h5_export_has_identical_content(tmp_path):
    path = tmp_path / "c.zarr"
    w, *_ = make_store(path, tokens=False)
    feats = rng.normal(size=(10, 6)).astype(np.float16)
    for s in ("train", "test"):
        for c, (lo, hi) in enumerate(((0, 4), (4, 8), (8, 10))):
            w.write_chunk(s, c, feats[lo:hi], None)
    w.finish()
    z = FeatureCache(path)
    expected = {s: (z.features(s), z.labels(s), z.ids(s)) for s in z.splits}
    export_h5(path, tmp_path / "c.h5")
    assert not path.exists()  # the working store is gone once the HDF5 file is whole
    h = FeatureCache(tmp_path / "c.h5")
    for s, (f, lab, ids) in expected.items():
        assert np.array_equal(h.features(s), f) and np.array_equal(h.labels(s), lab) and h.ids(s) == ids
    with h5py.File(tmp_path / "c.h5") as f:
        assert f["train/features"].dtype == np.float16


def test_mismatched_fingerprint_names_what_changed(tmp_path):
    path = tmp_path / "c.zarr"
    _, meta, inputs, _ = make_store(path)
    other = {**inputs, "backbone": {"name": "y", "weights": {"sha256": "bb"}}}
    with pytest.raises(MedfmError, match=r"different request \(backbone.name: x -> y; backbone.weights.sha256: aa -> bb\)"):
        check_matches(path, read_meta(path), fingerprint(other), other)
    check_matches(path, read_meta(path), fingerprint(inputs), inputs)  # the same request is fine


def test_not_a_cache(tmp_path):
    (tmp_path / "junk").mkdir()
    with pytest.raises(MedfmError, match="not a medfm feature cache"):
        FeatureCache(tmp_path / "junk")
    with pytest.raises(MedfmError, match="no feature cache"):
        FeatureCache(tmp_path / "missing.zarr")
