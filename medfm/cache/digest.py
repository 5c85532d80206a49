"""Chunk digests: every chunk a reader gets is checked against the crc32c recorded when it was written.

A data array (features, tokens, images) is written a chunk of rows at a time; the writer records
the crc32c of the chunk's decoded bytes in ``<split>/digests[chunk, column]`` (one tiny Zarr chunk
per row of digests, so torchrun ranks writing different chunks never touch the same file), then
flags the chunk done. Labels and ids are written once, at creation, with their crc32c in the
metadata. The digest is of the *decoded* bytes, so it is the same in Zarr and in the HDF5 export.

``VerifiedArray`` is the only way medfm reads a data array: every read covers whole chunks and
checks each one, so a deleted chunk (read back as fill zeros), a truncated or corrupt one (a codec
error or wrong bytes) and another chunk's file copied over it (valid bytes, wrong place) all stop
the reader with one line naming the store, the array and the chunk. Nothing is trusted because it
was verified before: there is no "verified" marker.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import google_crc32c
import numpy as np

from medfm.errors import MedfmError

ALGORITHM = "crc32c"


def digest(block: np.ndarray) -> int:
    """crc32c of an array's bytes (C order), without copying a contiguous array."""
    view = np.ascontiguousarray(block).view()
    view.setflags(write=False)  # google_crc32c takes read-only buffers only
    return int(google_crc32c.value(view))


def ids_digest(ids) -> int:
    return int(google_crc32c.value("\0".join(str(i) for i in ids).encode()))


@dataclass(frozen=True)
class ChunkProblem:
    split: str
    array: str
    chunk: int | None  # None: the whole array (labels, ids)
    rows: tuple[int, int] | None
    problem: str  # "is missing", "cannot be decoded ...", ...

    def line(self) -> str:
        where = f"{self.split}/{self.array}" + (f" chunk {self.chunk}" if self.chunk is not None else "")
        rows = f" (rows {self.rows[0]}-{self.rows[1] - 1})" if self.rows else ""
        return f"{where}{rows} {self.problem}"


def repair_fix(path: Path, command: str) -> str:
    return f"rerun the same `{command}`, or `medfm cache verify {path} --repair`, to recompute it"


def bad_store_error(path: Path, what: str, command: str, problems: list[ChunkProblem]) -> MedfmError:
    more = f" (and {len(problems) - 1} more bad chunks)" if len(problems) > 1 else ""
    return MedfmError(f"{what} {path}: {problems[0].line()}{more}", repair_fix(path, command))


class VerifiedArray:
    """One data array of a store, read only in verified whole chunks. Looks enough like a zarr/h5py
    array for medfm's readers: ``shape``, ``dtype``, ``chunks``, ``len``, ``[lo:hi]``, ``[int array]``,
    ``np.asarray``."""

    def __init__(self, store: Path, what: str, command: str, split: str, name: str, array, digests: np.ndarray,
                 done: np.ndarray, chunk_rows: int, chunk_dir: Path | None):
        self.store, self.what, self.command, self.split, self.name = store, what, command, split, name
        self.array, self.digests, self.done = array, digests, done
        self.chunk_rows = int(chunk_rows)
        self.chunk_dir = chunk_dir  # Zarr: <store>/<split>/<name>/c (says "missing" rather than "corrupt")
        self.shape = tuple(int(s) for s in array.shape)
        self.dtype = array.dtype
        self.chunks = (self.chunk_rows, *self.shape[1:])
        self._last: tuple[int, int, np.ndarray] | None = None  # the last chunk span read (batches within a chunk)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def n_chunks(self) -> int:
        return -(-self.shape[0] // self.chunk_rows)

    def rows_of(self, chunk: int) -> tuple[int, int]:
        return chunk * self.chunk_rows, min((chunk + 1) * self.chunk_rows, self.shape[0])

    def check(self, chunk: int, block: np.ndarray | None) -> ChunkProblem | None:
        """The problem with one chunk's decoded ``block`` (None: it could not be decoded), or None."""
        rows = self.rows_of(chunk)
        if block is None:
            problem = "cannot be decoded (truncated or corrupt)"
        elif not self.done[chunk]:
            problem = "was never written (not flagged done)"
        elif digest(block) == int(self.digests[chunk]):
            return None
        elif self.chunk_dir is not None and not (self.chunk_dir / str(chunk)).exists():
            problem = "is missing"
        else:
            problem = "does not match its recorded digest (corrupt, or another chunk's data)"
        return ChunkProblem(self.split, self.name, chunk, rows, problem)

    def _raise(self, problem: ChunkProblem):
        raise bad_store_error(self.store, self.what, self.command, [problem])

    def read_chunk(self, chunk: int) -> np.ndarray | None:
        lo, hi = self.rows_of(chunk)
        try:
            return np.asarray(self.array[lo:hi])
        except Exception:  # any codec/IO error on this chunk's bytes
            return None

    def read(self, lo: int, hi: int) -> np.ndarray:
        """Rows ``lo:hi``, read as the whole chunks that hold them, each chunk checked."""
        n = self.shape[0]
        lo, hi = max(0, lo), min(hi, n)
        if hi <= lo:
            return np.asarray(self.array[0:0])
        c0, c1 = lo // self.chunk_rows, -(-hi // self.chunk_rows)
        if self._last is not None and self._last[0] <= c0 and c1 <= self._last[1]:
            base = self._last[0] * self.chunk_rows
            return self._last[2][lo - base:hi - base].copy()
        start, stop = c0 * self.chunk_rows, min(c1 * self.chunk_rows, n)
        try:
            data = np.asarray(self.array[start:stop])
        except Exception:
            for c in range(c0, c1):
                if self.read_chunk(c) is None:
                    self._raise(self.check(c, None))
            raise
        for c in range(c0, c1):
            a, b = (x - start for x in self.rows_of(c))
            problem = self.check(c, data[a:b])
            if problem:
                self._raise(problem)
        self._last = (c0, c1, data)
        return data[lo - start:hi - start]

    def __getitem__(self, key):
        if isinstance(key, slice) and key.step in (None, 1):
            lo, hi, _ = key.indices(self.shape[0])
            return self.read(lo, hi)
        if key is Ellipsis:
            return self.read(0, self.shape[0])
        if isinstance(key, (int, np.integer)):
            i = int(key) + (self.shape[0] if key < 0 else 0)
            return self.read(i, i + 1)[0]
        idx = np.asarray(key)
        if idx.dtype.kind in "iu" and idx.ndim == 1:
            out = np.empty((len(idx), *self.shape[1:]), dtype=self.dtype)
            chunk_of = idx // self.chunk_rows
            for c in np.unique(chunk_of):
                sel = np.flatnonzero(chunk_of == c)
                lo, hi = self.rows_of(int(c))
                out[sel] = self.read(lo, hi)[idx[sel] - lo]
            return out
        raise TypeError(f"VerifiedArray supports row slices and row index arrays, not {key!r}")

    def __array__(self, dtype=None, copy=None):
        data = self.read(0, self.shape[0])
        return data if dtype is None else data.astype(dtype)

    def problems(self) -> list[ChunkProblem]:
        """Every bad chunk, one chunk in memory at a time (``medfm cache verify``, resume, reuse)."""
        return [p for c in range(self.n_chunks) if (p := self.check(c, self.read_chunk(c)))]
