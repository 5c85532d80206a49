"""The feature cache on disk: a Zarr v3 store (default) or an HDF5 file with the same layout.

Layout (see README "Cache format")::

    <cache>/                      group; attrs["medfm"] = metadata incl. fingerprint, "complete"
      <split>/                    train, val, test
        features  [N, D]          pooled feature (float16 by default)
        tokens    [N, T, Dt]      patch tokens, only with --tokens
        labels    [N] int64 | [N, C] uint8 (multilabel)
        ids       [N] str         sample ids (MedMNIST 'train/17', manifests the relative path)
        done      [n_chunks] u8   1 once that chunk of rows is written (resume bookkeeping)

Rows are written a chunk at a time and a chunk is flagged done only after its data is on disk
(zarr writes each chunk file atomically), so a killed extraction resumes at the first chunk not
flagged. HDF5 output is exported from a finished Zarr working store, so it is never half-written.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medfm.cache.fingerprint import describe_difference
from medfm.errors import MedfmError

FORMAT = "medfm-feature-cache"
FORMAT_VERSION = 1
H5_SUFFIXES = (".h5", ".hdf5")


@dataclass(frozen=True)
class SplitLayout:
    n: int
    feature_dim: int
    token_shape: tuple[int, int] | None  # (T, Dt) when tokens are stored
    label_shape: tuple[int, ...]  # () single-label, (C,) multilabel
    chunk_rows: int

    @property
    def n_chunks(self) -> int:
        return -(-self.n // self.chunk_rows)


def is_h5(path: Path) -> bool:
    return Path(path).suffix.lower() in H5_SUFFIXES


def working_path(path: Path) -> Path:
    """Where the resumable Zarr store lives: the cache itself, or beside an HDF5 target."""
    return path.with_name(path.name + ".partial.zarr") if is_h5(path) else path


def read_meta(path: Path) -> dict | None:
    """The medfm metadata of an existing cache (or working store), None if nothing is there."""
    path = Path(path)
    if is_h5(path) and path.is_file():
        import h5py

        with h5py.File(path, "r") as f:
            import json

            return json.loads(f.attrs["medfm"]) if "medfm" in f.attrs else {}
    if path.is_dir():
        import zarr

        try:
            return dict(zarr.open_group(str(path), mode="r").attrs).get("medfm", {})
        except Exception:
            return {}
    if path.exists():
        return {}
    return None


def read_finished_meta(path: Path, fmt: str, what: str, command: str) -> dict:
    """The metadata of a finished store of format ``fmt``, or the MedfmError saying why it cannot be read.

    ``what`` names the store in messages ("feature cache"), ``command`` is the one that makes it.
    """
    meta = read_meta(path)
    if meta is None:
        raise MedfmError(f"no {what} at {path}", f"run `{command}` first (it prints the path)")
    if meta.get("format") != fmt:
        raise MedfmError(f"{path} is not a medfm {what}", f"pass the path `{command}` printed")
    if not meta.get("complete"):
        raise MedfmError(f"{what} {path} is incomplete", f"rerun the same `{command}` to finish it")
    return meta


def check_matches(path: Path, meta: dict | None, fingerprint: str, inputs: dict, fmt: str = FORMAT,
                  option: str = "--cache") -> None:
    """Refuse to reuse or overwrite a cache made for a different request."""
    if meta is None:
        return
    if meta.get("format") != fmt:
        kind = fmt.removeprefix("medfm-").replace("-", " ")
        raise MedfmError(f"{path} exists and is not a medfm {kind}", f"choose another {option} path")
    if meta.get("fingerprint") != fingerprint:
        what = describe_difference(meta.get("fingerprint_inputs", {}), inputs)
        raise MedfmError(
            f"cache {path} was made for a different request ({what})",
            f"choose another {option} path, or delete that cache to rebuild it",
        )


class ZarrCacheWriter:
    """Creates or reopens the working Zarr store and writes it chunk by chunk.

    Subclasses (the pixel cache) override ``_create_data`` and ``write_chunk``; creation (atomic
    rename of a whole store), labels, ids and done flags are shared.
    """

    def __init__(self, path: Path, meta: dict, layouts: dict[str, SplitLayout], labels: dict, ids: dict, dtype: str):
        import zarr

        self.path = Path(path)
        self._arrays: dict[tuple[str, str], object] = {}
        if self.path.exists():
            self.root = zarr.open_group(str(self.path), mode="r+")
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".creating")
            shutil.rmtree(tmp, ignore_errors=True)
            root = zarr.open_group(str(tmp), mode="w-")
            root.attrs["medfm"] = {**meta, "complete": False}
            for split, lay in layouts.items():
                self._create_split(root, split, lay, labels[split], ids[split], dtype)
            os.replace(tmp, self.path)  # the store appears whole, with labels and ids, or not at all
            self.root = zarr.open_group(str(self.path), mode="r+")
        self.layouts = layouts

    def _create_split(self, root, split, lay: SplitLayout, labels, ids, dtype):
        g = root.create_group(split)
        self._create_data(g, lay, dtype)
        dims = ("sample",) + (("class",) if labels.ndim == 2 else ())
        g.create_array("labels", data=labels, chunks=tuple(max(s, 1) for s in labels.shape), dimension_names=dims)
        g.create_array("ids", shape=(lay.n,), chunks=(max(lay.n, 1),), dtype=str, dimension_names=("sample",))
        if lay.n:
            g["ids"][:] = np.asarray(ids, dtype=object)
        g.create_array("done", shape=(lay.n_chunks,), chunks=(1,), dtype="uint8", fill_value=0,
                       dimension_names=("chunk",))

    @staticmethod
    def _create_data(g, lay: SplitLayout, dtype):
        g.create_array("features", shape=(lay.n, lay.feature_dim), chunks=(lay.chunk_rows, lay.feature_dim),
                       dtype=dtype, fill_value=0, dimension_names=("sample", "feature"))
        if lay.token_shape:
            t, d = lay.token_shape
            g.create_array("tokens", shape=(lay.n, t, d), chunks=(lay.chunk_rows, t, d), dtype=dtype,
                           fill_value=0, dimension_names=("sample", "token", "channel"))

    def array(self, split: str, name: str):
        """An array of the store, opened once: a zarr group lookup re-reads its metadata from disk every time."""
        key = (split, name)
        if key not in self._arrays:
            self._arrays[key] = self.root[split][name]
        return self._arrays[key]

    def pending_chunks(self, split: str) -> list[int]:
        return [int(c) for c in np.flatnonzero(self.root[split]["done"][:] == 0)]

    def write_chunk(self, split: str, chunk: int, features: np.ndarray, tokens: np.ndarray | None) -> None:
        lay = self.layouts[split]
        lo = chunk * lay.chunk_rows
        hi = lo + len(features)
        if hi != min(lo + lay.chunk_rows, lay.n):
            raise RuntimeError(f"chunk {chunk} of {split} got {len(features)} rows")  # a medfm bug, not user error
        self.array(split, "features")[lo:hi] = features
        if tokens is not None:
            self.array(split, "tokens")[lo:hi] = tokens
        self.array(split, "done")[chunk] = 1  # only after the data: a kill in between just redoes this chunk

    def finish(self) -> None:
        meta = dict(self.root.attrs["medfm"])
        self.root.attrs["medfm"] = {**meta, "complete": True}


class BackgroundWriter:
    """``write_chunk`` on one background thread, so the next batches compute while a chunk goes to disk.

    At most ``depth`` chunks wait to be written (bounded memory). Chunks are written in the order
    given, each still flagged done only after its data, so resume works as before; a kill loses at
    most the queued chunks, which a rerun redoes. A write error is raised in the caller, at the
    next ``write_chunk`` or on leaving the ``with`` block. On leaving, queued writes are finished
    even when the caller failed (a corrupt image): chunks computed before it are kept.
    """

    def __init__(self, writer: ZarrCacheWriter, depth: int = 1):
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        self.writer, self.depth = writer, depth
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="medfm-cache-writer")
        self._queued = deque()

    def write_chunk(self, *args) -> None:
        while len(self._queued) >= self.depth:
            self._queued.popleft().result()  # re-raises the writer's error here
        self._queued.append(self._pool.submit(self.writer.write_chunk, *args))

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            while self._queued:
                future = self._queued.popleft()
                if exc_type is None:
                    future.result()
                else:
                    future.exception()  # wait; the caller's error is the one to report
        finally:
            self._pool.shutdown(wait=True)


def export_h5(zarr_path: Path, h5_path: Path) -> None:
    """Copy a finished Zarr cache to HDF5 (same layout; attrs as a JSON string), atomically."""
    import json

    import h5py
    import zarr

    src = zarr.open_group(str(zarr_path), mode="r")
    tmp = h5_path.with_name(h5_path.name + ".tmp")
    with h5py.File(tmp, "w") as f:
        f.attrs["medfm"] = json.dumps(dict(src.attrs)["medfm"])
        for split in src.group_keys():
            g = f.create_group(split)
            for name in src[split].array_keys():
                arr = src[split][name]
                data = arr[:]
                if data.dtype == object or data.dtype.kind in "UT":
                    g.create_dataset(name, data=data.astype(object), dtype=h5py.string_dtype())
                else:
                    g.create_dataset(name, data=data, chunks=tuple(min(c, s) for c, s in zip(arr.chunks, arr.shape)) or None)
    os.replace(tmp, h5_path)
    shutil.rmtree(zarr_path)


class FeatureCache:
    """Read access to a finished cache, Zarr or HDF5 alike."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.meta = read_finished_meta(self.path, FORMAT, "feature cache", "medfm extract")
        if is_h5(self.path):
            import h5py

            self._h5 = h5py.File(self.path, "r")
            self._root = self._h5
        else:
            import zarr

            self._root = zarr.open_group(str(self.path), mode="r")

    @property
    def splits(self) -> list[str]:
        keys = set(self._root.keys() if is_h5(self.path) else self._root.group_keys())
        return [s for s in ("train", "val", "test") if s in keys]

    def _array(self, split: str, name: str):
        if split not in self.splits:
            raise MedfmError(f"cache {self.path} has no {split!r} split", f"it has {', '.join(self.splits)}")
        return self._root[split][name]

    def features(self, split: str) -> np.ndarray:
        return np.asarray(self._array(split, "features")[:], dtype=np.float32)

    def labels(self, split: str) -> np.ndarray:
        return np.asarray(self._array(split, "labels")[:])

    def ids(self, split: str) -> list[str]:
        raw = self._array(split, "ids")[:]
        return [x.decode() if isinstance(x, bytes) else str(x) for x in raw]

    def tokens(self, split: str):
        """The token array itself (lazy: slice it), for heads that stream from disk."""
        return self._array(split, "tokens")

    def has_tokens(self) -> bool:
        return bool(self.meta.get("extract", {}).get("tokens"))
