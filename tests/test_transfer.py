"""LaggedCopies: batches come back in order, one batch late, all of them after drain."""

import torch

from medfm.extract.transfer import LaggedCopies


def test_batches_come_back_in_order_one_late_and_drain_returns_the_rest():
    copies = LaggedCopies(torch.device("cpu"))
    out = []
    for k in range(4):
        ready = copies.push((torch.full((2, 3), float(k)), None if k % 2 else torch.full((2, 5, 3), -float(k))), k)
        assert len(ready) == (0 if k == 0 else 1)  # batch k-1 is handed back once batch k is queued
        out += ready
    out += copies.drain()
    assert [tag for _, tag in out] == [0, 1, 2, 3] and copies.drain() == []
    for (pooled, patch), tag in out:
        assert pooled.dtype.name == "float32" and (pooled == tag).all()
        assert (patch is None) == bool(tag % 2) and (patch is None or (patch == -tag).all())
