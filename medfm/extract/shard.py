"""Dealing an extraction's remaining chunks to torchrun ranks.

The unit of work is one cache chunk (a whole number of batches, one Zarr chunk file per array),
so ranks never write the same file and need no locks. Chunks are dealt round-robin over the
remaining (split, chunk) list, which keeps ranks balanced on a fresh run and on a rerun that only
has a killed rank's leftovers to do.
"""

from __future__ import annotations


def assign_chunks(pending: dict[str, list[int]], rank: int, world: int) -> dict[str, list[int]]:
    """This rank's share of ``pending`` ({split: chunk indices}), each split's chunks ascending."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside a world of {world}")
    order = [(split, c) for split, chunks in pending.items() for c in sorted(chunks)]
    mine = {split: [] for split in pending}
    for split, c in order[rank::world]:
        mine[split].append(c)
    return mine
