"""HDF5 export of a finished Zarr store, and the way back (to repair an HDF5 cache's bad chunks).

Export checks the free space the file needs *before* writing (HDF5 can crash the process when the
disk fills mid-write, so the check is the protection, not an error handler), writes to a temp file
removed on any failure, verifies every chunk as it copies it, and renames the file into place
only when it is whole. The digests travel with the data (``digests``, ``done``, ``attrs["medfm"]``).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np

from medfm.cache.store import StoreReader, disk_full_error, is_disk_full, read_meta, reader_for, write_meta

SPACE_MARGIN = 1.05  # HDF5 chunk indexes and heaps on top of the raw bytes ...
SPACE_SLACK = 4 << 20  # ... plus a fixed allowance for metadata


def h5_bytes(src: StoreReader) -> int:
    """About the size of the HDF5 export (uncompressed data, strings in the global heap)."""
    total = 0
    for split in src.splits:
        for name in src._root[split].array_keys():
            arr = src._root[split][name]
            if name == "ids":
                total += sum(len(i.encode()) + 48 for i in src.ids(split))
            else:
                total += int(np.prod(arr.shape)) * arr.dtype.itemsize
    return int(total * SPACE_MARGIN) + SPACE_SLACK


def export_h5(zarr_path: Path, h5_path: Path) -> None:
    """Copy a finished Zarr store to HDF5 (same layout; attrs as a JSON string), verified and atomic."""
    import h5py

    zarr_path, h5_path = Path(zarr_path), Path(h5_path)
    src = reader_for(zarr_path, read_meta(zarr_path))
    need, free = h5_bytes(src), shutil.disk_usage(h5_path.parent).free
    if free < need:
        raise disk_full_error(h5_path, f": the export needs about {need / 1e6:.1f} MB") from None
    tmp = h5_path.with_name(f"{h5_path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["medfm"] = json.dumps(src.meta)
            for split in src.splits:
                g = f.create_group(split)
                for name in src._root[split].array_keys():
                    _copy_array(src, split, name, g)
        os.replace(tmp, h5_path)
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full_error(h5_path, " (HDF5 export)") from None
        raise
    finally:
        tmp.unlink(missing_ok=True)
    shutil.rmtree(zarr_path)


def _copy_array(src: StoreReader, split: str, name: str, g) -> None:
    import h5py

    arr = src._root[split][name]
    if name == "ids":
        g.create_dataset(name, data=np.asarray(src.ids(split), dtype=object), dtype=h5py.string_dtype())
        return
    if name not in src.meta["digests"]["columns"]:
        data = src.labels(split) if name == "labels" else np.asarray(arr[:])
        g.create_dataset(name, data=data, chunks=tuple(min(c, s) for c, s in zip(arr.chunks, arr.shape)) or None
                         if all(arr.shape) else None)
        return
    verified = src.data(split, name)  # chunk by chunk: bounded memory, and a bad chunk is never exported
    chunks = tuple(min(c, s) for c, s in zip(verified.chunks, verified.shape)) if all(verified.shape) else None
    out = g.create_dataset(name, shape=verified.shape, dtype=verified.dtype, chunks=chunks)
    for c in range(verified.n_chunks):
        lo, hi = verified.rows_of(c)
        out[lo:hi] = verified.read(lo, hi)


def unfinished(meta: dict) -> dict:
    """``meta`` of a store being written again: not complete, no digest table (``finish`` gathers a new one)."""
    return {**meta, "complete": False, "digests": {k: v for k, v in meta["digests"].items() if k != "chunks"}}


def import_h5(h5_path: Path, work: Path, bad: dict[str, set[int]]) -> None:
    """Rebuild the Zarr working store from an HDF5 cache, leaving the ``bad`` chunks ({split: chunks})
    unwritten and not done, so the writer recomputes exactly those; the store appears whole or not at all."""
    import h5py
    import zarr

    meta = read_meta(h5_path)
    columns, chunk_rows = meta["digests"]["columns"], meta["digests"]["chunk_rows"]
    tmp = work.with_name(f"{work.name}.creating-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        root = zarr.open_group(str(tmp), mode="w-")
        root.attrs["medfm"] = unfinished(meta)
        with h5py.File(h5_path, "r") as f:
            for split in f.keys():
                g, skip = root.create_group(split), bad.get(split, set())
                for name, ds in f[split].items():
                    if name == "ids":
                        a = g.create_array("ids", shape=ds.shape, chunks=(max(ds.shape[0], 1),), dtype=str)
                        if ds.shape[0]:
                            a[:] = np.asarray([x.decode() if isinstance(x, bytes) else str(x) for x in ds[:]], dtype=object)
                        continue
                    rows = chunk_rows if name in columns else (1 if name in ("done", "digests") else max(ds.shape[0], 1))
                    chunks = (max(rows, 1), *(max(s, 1) for s in ds.shape[1:]))
                    a = g.create_array(name, shape=ds.shape, chunks=chunks, dtype=ds.dtype, fill_value=0)
                    for c in range(-(-ds.shape[0] // chunks[0])):
                        if name in ("done", "digests") and c in skip:
                            continue  # not done, no digest: recomputed
                        if name in columns and c in skip:
                            continue
                        lo, hi = c * chunks[0], min((c + 1) * chunks[0], ds.shape[0])
                        a[lo:hi] = ds[lo:hi]
        os.replace(tmp, work)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(exc):
            raise disk_full_error(work, " (reopening the HDF5 cache for repair)") from None
        raise
    write_meta(work, unfinished(meta))
