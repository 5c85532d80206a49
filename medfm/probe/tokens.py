"""Token rows streamed from disk: a subset of a cache's ``tokens [N, T, D]`` array, read chunk by chunk.

A token cache can be far larger than RAM, so heads never load it whole. ``TokenRows.batches``
visits the on-disk chunks in (seeded) random order, reads each chunk once as one contiguous
slice, keeps the selected rows, and yields shuffled mini-batches from a small buffer of chunks.
Memory stays at a few chunks whatever the cache size.
"""

from __future__ import annotations

import numpy as np


class TokenRows:
    def __init__(self, array, rows: np.ndarray | None = None, buffer_chunks: int = 4):
        self.array = array  # a zarr / h5py / numpy array [N, T, D]
        self.rows = np.arange(array.shape[0]) if rows is None else np.asarray(rows, dtype=np.int64)
        chunks = getattr(array, "chunks", None)
        self.chunk_rows = int(chunks[0]) if chunks else max(1, min(len(self.rows), 1024))
        self.buffer_chunks = buffer_chunks

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def token_shape(self) -> tuple[int, int]:
        return int(self.array.shape[1]), int(self.array.shape[2])

    def subset(self, positions: np.ndarray) -> TokenRows:
        return TokenRows(self.array, self.rows[np.asarray(positions)], self.buffer_chunks)

    def batches(self, batch_size: int, rng: np.random.Generator | None = None):
        """Yield ``(tokens [b, T, D] float32, positions)``; positions index into this TokenRows.

        With ``rng`` the order is shuffled (chunk order, then rows within a buffer of chunks);
        without, rows come in order, so predictions line up with labels.
        """
        order = np.argsort(self.rows, kind="stable")  # positions sorted by on-disk row
        chunk_of = self.rows[order] // self.chunk_rows
        groups = np.split(order, np.flatnonzero(np.diff(chunk_of)) + 1) if len(order) else []
        if rng is not None:
            groups = [groups[i] for i in rng.permutation(len(groups))]
        buf_x, buf_p = [], []
        for i, pos in enumerate(groups):
            rows = self.rows[pos]
            lo, hi = int(rows.min()), int(rows.max()) + 1
            block = np.asarray(self.array[lo:hi])  # one contiguous read per chunk
            buf_x.append(block[rows - lo])
            buf_p.append(pos)
            if len(buf_x) == self.buffer_chunks or i == len(groups) - 1:
                x, p = np.concatenate(buf_x), np.concatenate(buf_p)
                buf_x, buf_p = [], []
                if rng is not None:
                    perm = rng.permutation(len(p))
                    x, p = x[perm], p[perm]
                for s in range(0, len(p), batch_size):
                    yield x[s : s + batch_size].astype(np.float32), p[s : s + batch_size]


def as_token_rows(X) -> TokenRows:
    return X if isinstance(X, TokenRows) else TokenRows(np.asarray(X))
