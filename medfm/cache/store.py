"""The stores on disk: a Zarr v3 store (default) or an HDF5 file with the same layout.

Layout (see README "Cache format")::

    <cache>/                      group; attrs["medfm"] = metadata incl. fingerprint, "complete", "digests"
      <split>/                    train, val, test
        features  [N, D]          pooled feature (float16 by default)   | a pixel cache: images [N, S, S, 3]
        tokens    [N, T, Dt]      patch tokens, only with --tokens
        labels    [N] int64 | [N, C] uint8 (multilabel)
        ids       [N] str         sample ids (MedMNIST 'train/17', manifests the relative path)
        digests   [n_chunks, k]   uint32 crc32c of each chunk of each data array (``medfm.cache.digest``)
        done      [n_chunks] u8   1 once that chunk of rows is written and digested (resume bookkeeping)

Rows are written a chunk at a time: data, then its digests, then the done flag (zarr writes each
chunk file whole), so a killed writer resumes at the first chunk not flagged. Metadata is replaced
atomically (temp file + rename). HDF5 output is exported from a finished Zarr working store
(``medfm.cache.export``), so it is never half-written. Who may write, and when, is
``medfm.cache.lifecycle``'s business; this module only reads and writes.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medfm.cache.digest import ALGORITHM, ChunkProblem, VerifiedArray, bad_store_error, digest, ids_digest
from medfm.cache.fingerprint import describe_difference
from medfm.cache.kinds import FEATURES, KINDS, PIXELS, StoreKind, missing_keys
from medfm.errors import MedfmError

FORMAT = FEATURES.fmt
FORMAT_VERSION = FEATURES.version
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


class UnreadableStore(Exception):
    """Something is at a store's path, and it is not a store medfm can read (the reason in words)."""


def disk_full_error(path: Path, doing: str = "") -> MedfmError:
    try:
        free = f"{shutil.disk_usage(Path(path).parent).free / 1e6:.1f} MB free"
    except OSError:
        free = "free space unknown"
    return MedfmError(f"disk full writing {path}{doing} ({free} on that file system)",
                      "free space (or choose a path on a bigger disk), then rerun the same command: "
                      "finished chunks are kept")


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def read_meta(path: Path) -> dict | None:
    """The medfm metadata at ``path``: None if nothing is there, {} if it is not a medfm store;
    ``UnreadableStore`` if something unreadable is there (a text file named .h5, bad JSON)."""
    path = Path(path)
    if is_h5(path) and path.is_file():
        import h5py

        try:
            with h5py.File(path, "r") as f:
                raw = f.attrs.get("medfm")
        except OSError as exc:
            raise UnreadableStore(f"not an HDF5 file: {str(exc).split('(')[-1].rstrip(')')}") from None
        if raw is None:
            return {}
        try:
            meta = json.loads(raw)
        except (TypeError, ValueError):
            raise UnreadableStore("its 'medfm' attribute is not JSON") from None
        return meta if isinstance(meta, dict) else {}
    if path.is_dir():
        doc = path / "zarr.json"
        if not doc.is_file():
            return {}
        try:
            meta = json.loads(doc.read_text()).get("attributes", {}).get("medfm", {})
        except (OSError, ValueError, AttributeError):
            raise UnreadableStore("its zarr.json is not readable JSON") from None
        return meta if isinstance(meta, dict) else {}
    if path.exists():
        return {}
    return None


def write_meta(store: Path, meta: dict) -> None:
    """Replace a Zarr store's ``attrs["medfm"]`` atomically: a crash or a full disk leaves the old one."""
    doc_path = Path(store) / "zarr.json"
    doc = json.loads(doc_path.read_text())
    doc.setdefault("attributes", {})["medfm"] = meta
    tmp = doc_path.with_name(f"zarr.json.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_text(json.dumps(doc, indent=2))
        os.replace(tmp, doc_path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if is_disk_full(exc):
            raise disk_full_error(store, " (metadata)") from None
        raise


def kind_of(meta: dict) -> StoreKind | None:
    return KINDS.get(meta.get("format"))


def check_version(path: Path, meta: dict, kind: StoreKind) -> None:
    version = meta.get("format_version")
    if version == kind.version:
        return
    if isinstance(version, int) and version > kind.version:
        raise MedfmError(f"{kind.what} {path} has format_version {version}, newer than this medfm reads ({kind.version})",
                         "upgrade medfm to read it")
    raise MedfmError(f"{kind.what} {path} has format_version {version}; this medfm reads only version {kind.version} "
                     "(with chunk digests)", f"re-create it with this medfm's `{kind.command}` (it gets a new fingerprint)")


def read_finished_meta(path: Path, kind: StoreKind) -> dict:
    """The metadata of a finished store of ``kind``, or the MedfmError saying why it cannot be read."""
    path = Path(path)
    try:
        meta = read_meta(path)
    except UnreadableStore as exc:
        raise MedfmError(f"{path} is not a medfm {kind.what} ({exc})", f"pass the path `{kind.command}` printed") from None
    if meta is None:
        raise MedfmError(f"no {kind.what} at {path}", f"run `{kind.command}` first (it prints the path)")
    if meta.get("format") != kind.fmt:
        raise MedfmError(f"{path} is not a medfm {kind.what}", f"pass the path `{kind.command}` printed")
    check_version(path, meta, kind)
    if not meta.get("complete"):
        raise MedfmError(f"{kind.what} {path} is incomplete", f"rerun the same `{kind.command}` to finish it")
    if lacking := missing_keys(meta, kind.required):
        raise MedfmError(f"{kind.what} {path} has incomplete metadata (no {', '.join(lacking[:3])})",
                         f"re-create it with `{kind.command}`")
    return meta


def target_meta(path: Path, kind: StoreKind) -> dict | None:
    """The metadata of what is at a path a writer was asked to use (None: nothing there)."""
    try:
        meta = read_meta(path)
    except UnreadableStore as exc:
        raise MedfmError(f"{path} exists and is not a medfm {kind.what} ({exc})", f"choose another {kind.option} path") from None
    if meta is not None and meta.get("format") != kind.fmt:
        raise MedfmError(f"{path} exists and is not a medfm {kind.what}", f"choose another {kind.option} path")
    return meta


def check_matches(path: Path, meta: dict | None, fingerprint: str, inputs: dict, fmt: str = FORMAT,
                  option: str | None = None) -> None:
    """Refuse to reuse or overwrite a store made for a different request."""
    if meta is None:
        return
    kind = KINDS[fmt]
    option = option or kind.option
    if meta.get("format") != fmt:
        raise MedfmError(f"{path} exists and is not a medfm {kind.what}", f"choose another {option} path")
    if meta.get("fingerprint") != fingerprint:
        what = describe_difference(meta.get("fingerprint_inputs", {}), inputs)
        raise MedfmError(
            f"cache {path} was made for a different request ({what})",
            f"choose another {option} path, or delete that cache to rebuild it",
        )


def _small_array(arr, n: int, fill) -> np.ndarray:
    """A bookkeeping array (done flags, digests) read element-chunk by element-chunk if a chunk is damaged."""
    try:
        return np.asarray(arr[:])
    except Exception:
        out = np.full(arr.shape, fill, dtype=arr.dtype)
        for i in range(n):
            try:
                out[i] = arr[i]
            except Exception:
                pass  # a damaged flag or digest reads as "not done" / no digest
        return out


class ZarrCacheWriter:
    """Creates or reopens a working Zarr store and writes it chunk by chunk, digest by digest.

    Subclasses (the pixel cache) override ``KIND``, ``_create_data`` and ``_blocks``; creation
    (atomic rename of a whole store), labels, ids, digests and done flags are shared. Only the
    holder of the store's writer lock (``medfm.cache.lifecycle``) should create one.
    """

    KIND: StoreKind = FEATURES

    def __init__(self, path: Path, meta: dict, layouts: dict[str, SplitLayout], labels: dict, ids: dict, dtype: str):
        import zarr

        self.path = Path(path)
        self.layouts = layouts
        self._arrays: dict[tuple[str, str], object] = {}
        if not self.path.exists():
            self._create(meta, labels, ids, dtype)
        self.root = zarr.open_group(str(self.path), mode="r+")

    def _create(self, meta, labels, ids, dtype) -> None:
        import zarr

        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{self.path.name}.creating-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        columns = [name for name in self.KIND.data if self._has(name, next(iter(self.layouts.values()), None))]
        stamp = {"format": self.KIND.fmt, "format_version": self.KIND.version, "complete": False,
                 "digests": {"algorithm": ALGORITHM, "columns": columns,
                             "chunk_rows": next(iter(self.layouts.values())).chunk_rows if self.layouts else 0,
                             "labels": {s: digest(np.asarray(labels[s])) for s in self.layouts},
                             "ids": {s: ids_digest(ids[s]) for s in self.layouts}}}
        try:
            root = zarr.open_group(str(tmp), mode="w-")
            root.attrs["medfm"] = {**meta, **stamp}
            for split, lay in self.layouts.items():
                self._create_split(root, split, lay, np.asarray(labels[split]), ids[split], dtype, len(columns))
            os.replace(tmp, self.path)  # the store appears whole, with labels and ids, or not at all
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if is_disk_full(exc):
                raise disk_full_error(self.path, " (creating the store)") from None
            raise

    @staticmethod
    def _has(name: str, lay: SplitLayout | None) -> bool:
        return name != "tokens" or bool(lay and lay.token_shape)

    def _create_split(self, root, split, lay: SplitLayout, labels, ids, dtype, n_columns: int):
        g = root.create_group(split)
        self._create_data(g, lay, dtype)
        dims = ("sample",) + (("class",) if labels.ndim == 2 else ())
        g.create_array("labels", data=labels, chunks=tuple(max(s, 1) for s in labels.shape), dimension_names=dims)
        g.create_array("ids", shape=(lay.n,), chunks=(max(lay.n, 1),), dtype=str, dimension_names=("sample",))
        if lay.n:
            g["ids"][:] = np.asarray(ids, dtype=object)
        g.create_array("digests", shape=(lay.n_chunks, n_columns), chunks=(1, n_columns), dtype="uint32", fill_value=0,
                       dimension_names=("chunk", "array"))
        g.create_array("done", shape=(lay.n_chunks,), chunks=(1,), dtype="uint8", fill_value=0,
                       dimension_names=("chunk",))

    @staticmethod
    def _create_data(g, lay: SplitLayout, dtype):
        g.create_array("features", shape=(lay.n, lay.feature_dim), chunks=(lay.chunk_rows, lay.feature_dim),
                       dtype=dtype, fill_value=0, dimension_names=("sample", "feature"))
        if lay.token_shape:
            t, d = lay.token_shape
            # uncompressed: zstd saves ~8% on float16 tokens and reads them 3x slower, the rate a GPU-trained
            # DeiT head streams at (benchmarks/bench_tokens.py, benchmarks/README.md)
            g.create_array("tokens", shape=(lay.n, t, d), chunks=(lay.chunk_rows, t, d), dtype=dtype,
                           fill_value=0, dimension_names=("sample", "token", "channel"), compressors=None)

    def _blocks(self, features: np.ndarray, tokens: np.ndarray | None) -> dict[str, np.ndarray]:
        return {"features": features} | ({"tokens": tokens} if tokens is not None else {})

    def array(self, split: str, name: str):
        """An array of the store, opened once: a zarr group lookup re-reads its metadata from disk every time."""
        key = (split, name)
        if key not in self._arrays:
            self._arrays[key] = self.root[split][name]
        return self._arrays[key]

    def done_flags(self, split: str) -> np.ndarray:
        return _small_array(self.array(split, "done"), self.layouts[split].n_chunks, 0)

    def pending_chunks(self, split: str) -> list[int]:
        return [int(c) for c in np.flatnonzero(self.done_flags(split) == 0)]

    def unflag(self, split: str, chunks) -> None:
        """Mark chunks not done (bad ones found by verification): the next writer recomputes exactly those."""
        for c in chunks:
            self.array(split, "done")[int(c)] = 0

    def write_chunk(self, split: str, chunk: int, features: np.ndarray, tokens: np.ndarray | None = None) -> None:
        lay = self.layouts[split]
        lo = chunk * lay.chunk_rows
        blocks = self._blocks(features, tokens)
        hi = lo + len(next(iter(blocks.values())))
        if hi != min(lo + lay.chunk_rows, lay.n):
            raise RuntimeError(f"chunk {chunk} of {split} got {hi - lo} rows")  # a medfm bug, not user error
        try:
            for name, block in blocks.items():
                self.array(split, name)[lo:hi] = block
            self.array(split, "digests")[chunk] = np.array([digest(b) for b in blocks.values()], dtype=np.uint32)
            self.array(split, "done")[chunk] = 1  # only after data and digest: a kill in between redoes this chunk
        except OSError as exc:
            if is_disk_full(exc):
                raise disk_full_error(self.path, f" ({split} chunk {chunk})") from None
            raise

    def finish(self) -> None:
        """Mark the store complete, with every chunk's digest gathered into the metadata (one JSON read
        for readers instead of a tiny file per chunk; the per-chunk files stay, for resume and repair)."""
        meta = read_meta(self.path)  # the on-disk metadata, not a cached copy
        table = {s: _small_array(self.array(s, "digests"), lay.n_chunks, 0).tolist() for s, lay in self.layouts.items()}
        write_meta(self.path, {**meta, "complete": True, "digests": {**meta["digests"], "chunks": table}})


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


def open_root(path: Path):
    """The root group of a store, Zarr or HDF5 (h5py keeps the file open)."""
    if is_h5(path):
        import h5py

        return h5py.File(path, "r")
    import zarr

    return zarr.open_group(str(path), mode="r")


class StoreReader:
    """Verified read access to a store of one kind, Zarr or HDF5 alike.

    Opening checks the metadata (format, ``format_version``, required keys, complete); every read of
    a data array, labels or ids checks the digests of what it read.
    """

    KIND: StoreKind = FEATURES

    def __init__(self, path: str | Path, meta: dict | None = None):
        self.path = Path(path)
        self.meta = meta if meta is not None else read_finished_meta(self.path, self.KIND)
        self._root = open_root(self.path)
        self._books: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def _digests(self) -> dict:
        return self.meta["digests"]

    @property
    def splits(self) -> list[str]:
        keys = set(self._root.keys() if is_h5(self.path) else self._root.group_keys())
        return [s for s in ("train", "val", "test") if s in keys]

    def _array(self, split: str, name: str):
        if split not in self.splits:
            raise MedfmError(f"cache {self.path} has no {split!r} split", f"it has {', '.join(self.splits)}")
        try:
            return self._root[split][name]
        except KeyError:
            raise MedfmError(f"{self.KIND.what} {self.path}: {split}/{name} is missing",
                             f"re-create it with `{self.KIND.command}`") from None

    def _stored_books(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """The per-chunk done flags and digests as written (one tiny file each in Zarr)."""
        done = self._array(split, "done")
        digests = self._array(split, "digests")
        return _small_array(done, done.shape[0], 0), _small_array(digests, digests.shape[0], 0)

    def _bookkeeping(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(done flags, digests [n_chunks, k]): a finished store's come from the table ``finish`` gathered."""
        if split not in self._books:
            table = self._digests.get("chunks", {}).get(split) if self.meta.get("complete") else None
            if table is None:
                self._books[split] = self._stored_books(split)
            else:
                digests = np.asarray(table, dtype=np.uint32).reshape(len(table), len(self._digests["columns"]))
                self._books[split] = (np.ones(len(table), dtype=np.uint8), digests)
        return self._books[split]

    def data(self, split: str, name: str) -> VerifiedArray:
        """A data array (features, tokens, images), read only in verified chunks."""
        columns = self._digests["columns"]
        if name not in columns:
            raise MedfmError(f"{self.KIND.what} {self.path} has no {name}", f"it has {', '.join(columns)}")
        arr = self._array(split, name)
        done, digests = self._bookkeeping(split)
        chunk_dir = None if is_h5(self.path) else self.path / split / name / "c"
        return VerifiedArray(self.path, self.KIND.what, self.KIND.command, split, name, arr,
                             digests[:, columns.index(name)] if digests.size else np.zeros(0, np.uint32), done,
                             self._digests["chunk_rows"] or 1, chunk_dir)

    def _whole(self, split: str, name: str) -> np.ndarray:
        try:
            return np.asarray(self._array(split, name)[:])
        except MedfmError:
            raise
        except Exception:
            raise bad_store_error(self.path, self.KIND.what, self.KIND.command,
                                  [ChunkProblem(split, name, None, None, "cannot be decoded (truncated or corrupt)")]) from None

    def _checked(self, split: str, name: str, value, got: int):
        if got != self._digests[name].get(split):
            raise bad_store_error(self.path, self.KIND.what, self.KIND.command,
                                  [ChunkProblem(split, name, None, None, "does not match its recorded digest")])
        return value

    def labels(self, split: str) -> np.ndarray:
        labels = self._whole(split, "labels")
        return self._checked(split, "labels", labels, digest(labels))

    def ids(self, split: str) -> list[str]:
        ids = [x.decode() if isinstance(x, bytes) else str(x) for x in self._whole(split, "ids")]
        return self._checked(split, "ids", ids, ids_digest(ids))

    def problems(self) -> list[ChunkProblem]:
        """Every bad chunk of every array (``medfm cache verify``), one chunk in memory at a time."""
        out = []
        for split in self.splits:
            for name in ("labels", "ids"):
                try:
                    getattr(self, name)(split)
                except MedfmError:
                    out.append(ChunkProblem(split, name, None, None, "does not match its recorded digest"))
            for name in self._digests["columns"]:
                out += self.data(split, name).problems()
            done, stored = self._stored_books(split)
            books = self._bookkeeping(split)
            if stored.shape != books[1].shape:
                continue  # the table names another chunk count: every chunk already failed above
            for c in np.flatnonzero((done != books[0]) | (stored != books[1]).any(axis=1)):
                out.append(ChunkProblem(split, "digests", int(c), None, "disagrees with the digest table in the metadata"))
        return out

    def close(self) -> None:
        if is_h5(self.path):
            self._root.close()


class FeatureCache(StoreReader):
    """A finished feature cache (``medfm extract``); every read verified."""

    KIND = FEATURES

    def features(self, split: str) -> np.ndarray:
        return np.asarray(self.data(split, "features")[:], dtype=np.float32)

    def tokens(self, split: str) -> VerifiedArray:
        """The token array itself (lazy: slice it, verified chunk by chunk), for heads that stream from disk."""
        return self.data(split, "tokens")

    def has_tokens(self) -> bool:
        return bool(self.meta.get("extract", {}).get("tokens"))


def reader_for(path: Path, meta: dict) -> StoreReader:
    """A reader of whichever kind ``meta`` names (for verification, where the kind is not known in advance)."""
    kind = kind_of(meta)
    cls = FeatureCache if kind is FEATURES else type("PixelStore", (StoreReader,), {"KIND": PIXELS})
    return cls(path, meta)
