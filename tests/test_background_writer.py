"""The background cache writer: chunks land in order with their done flags, errors reach the caller."""

from __future__ import annotations

import numpy as np
import pytest

from medfm.cache.store import BackgroundWriter, SplitLayout, ZarrCacheWriter


def _writer(tmp_path) -> ZarrCacheWriter:
    lay = SplitLayout(n=10, feature_dim=4, token_shape=None, label_shape=(), chunk_rows=4)
    return ZarrCacheWriter(tmp_path / "c.zarr", {"format": "medfm-feature-cache"}, {"train": lay},
                           labels={"train": np.zeros(10, dtype=np.int64)}, ids={"train": [str(i) for i in range(10)]},
                           dtype="float32")


def test_writes_every_chunk_in_order(tmp_path):
    writer = _writer(tmp_path)
    data = np.arange(40, dtype=np.float32).reshape(10, 4)
    with BackgroundWriter(writer) as bg:
        for chunk, (lo, hi) in enumerate([(0, 4), (4, 8), (8, 10)]):
            bg.write_chunk("train", chunk, data[lo:hi], None)
    assert (writer.root["train/features"][:] == data).all()
    assert writer.pending_chunks("train") == []


def test_write_error_reaches_the_caller(tmp_path):
    writer = _writer(tmp_path)
    with pytest.raises(RuntimeError, match="chunk 0 of train got 3 rows"):
        with BackgroundWriter(writer) as bg:
            bg.write_chunk("train", 0, np.ones((3, 4), np.float32), None)  # wrong size: a bug, raised here or on exit
            bg.write_chunk("train", 1, np.ones((4, 4), np.float32), None)
    assert 0 in writer.pending_chunks("train")


def test_caller_error_keeps_finished_chunks(tmp_path):
    writer = _writer(tmp_path)
    with pytest.raises(ValueError, match="corrupt image"):
        with BackgroundWriter(writer) as bg:
            bg.write_chunk("train", 0, np.full((4, 4), 7, np.float32), None)
            raise ValueError("corrupt image")
    assert writer.pending_chunks("train") == [1, 2]
    assert (writer.root["train/features"][:4] == 7).all()
