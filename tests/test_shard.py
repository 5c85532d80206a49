"""Dealing the remaining chunks to torchrun ranks: every chunk to exactly one rank, balanced, ascending."""

import pytest

from medfm.extract.shard import assign_chunks


@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_every_pending_chunk_goes_to_exactly_one_rank(world):
    pending = {"train": [0, 1, 2, 5, 9, 10, 11], "val": [3], "test": []}
    shares = [assign_chunks(pending, r, world) for r in range(world)]
    for split, chunks in pending.items():
        dealt = [c for share in shares for c in share[split]]
        assert sorted(dealt) == chunks  # no chunk lost, none twice
        assert all(share[split] == sorted(share[split]) for share in shares)
    sizes = [sum(map(len, share.values())) for share in shares]
    assert max(sizes) - min(sizes) <= 1  # a rerun with only a killed rank's leftovers is still balanced


def test_rank_outside_the_world_is_refused():
    with pytest.raises(ValueError):
        assign_chunks({"train": [0]}, 2, 2)
