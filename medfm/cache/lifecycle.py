"""One owner of a store's lifecycle: open a path and get back a finished store, or the right to write it.

``open_store`` is the only door ``extract`` and ``prepare`` go through:

1. A finished store made for this request (same fingerprint, this ``format_version``) whose every
   chunk verifies is returned as ``Finished``: nothing is written, no lock is taken.
2. Otherwise the writer lock (``medfm.cache.lock``) is taken, refusing at once when another
   process holds it (or waiting for it with ``wait=True``, then looking again: its result is
   reused). Under the lock, leftovers of crashed writers are removed, then the state is read
   again and one of these is returned as ``Writing``:
   - a finished store with bad chunks: they are flagged not done (an HDF5 cache is first turned
     back into its Zarr working store), and the writer recomputes exactly those;
   - an unfinished store (``resume``): chunks flagged done are verified in ``Writing.pending``, a
     bad one is recomputed;
   - nothing: the writer creates it.
   A finished working store whose HDF5 export was interrupted is exported and returned ``Finished``.
3. ``Writing.finish`` marks the store complete and exports HDF5; leaving its ``with`` block
   releases the lock, whether the run finished or failed.

Under torchrun rank 0 does all of this and holds the lock for the whole job; the other ranks get
the same answer (or the same error) by broadcast and only write their own chunks.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medfm.cache.digest import ChunkProblem
from medfm.cache.export import export_h5, import_h5, unfinished
from medfm.cache.kinds import StoreKind
from medfm.cache.lock import WriterLock
from medfm.cache.store import (ZarrCacheWriter, check_matches, check_version, is_h5, read_finished_meta, read_meta,
                               reader_for, target_meta, working_path)
from medfm.errors import MedfmError


@dataclass
class Finished:
    path: Path
    meta: dict
    exported: bool = False  # True: this call only finished an interrupted HDF5 export


@dataclass
class Writing:
    path: Path  # the store asked for (.zarr, or the .h5 target)
    work: Path  # the Zarr store written (the path itself, or <path>.partial.zarr)
    kind: StoreKind
    resume_meta: dict | None  # the unfinished store's metadata (its chunking is fixed), None when new
    lock: WriterLock | None  # held by rank 0 only
    dist: object = None
    say: object = print
    repaired: list[ChunkProblem] = field(default_factory=list)

    def writer(self, make) -> ZarrCacheWriter:
        """``make()`` opens or creates the working store: rank 0 first, then every other rank."""
        d = self.dist
        w = make() if d is None or d.is_main else None
        if d is not None:
            d.barrier()
        return w or make()

    def pending(self, writer: ZarrCacheWriter) -> dict[str, list[int]]:
        """The chunks still to compute, per split, agreed by all ranks. Resuming, every chunk flagged
        done is verified first; a bad one is flagged not done and recomputed."""
        d = self.dist
        if d is None or d.is_main:
            if self.resume_meta is not None:
                self._unflag_bad(writer)
            todo = {s: writer.pending_chunks(s) for s in writer.layouts}
        else:
            todo = None
        return d.broadcast(todo) if d is not None else todo

    def _unflag_bad(self, writer: ZarrCacheWriter) -> None:
        reader = reader_for(self.work, read_meta(self.work))
        bad = []
        for split in writer.layouts:
            done = writer.done_flags(split)
            for name in reader.meta["digests"]["columns"]:
                arr = reader.data(split, name)
                bad += [p for c in np.flatnonzero(done) if (p := arr.check(int(c), arr.read_chunk(int(c))))]
        for p in bad:
            writer.unflag(p.split, [p.chunk])
        if bad:
            shown = "; ".join(p.line() for p in bad[:3]) + (f" (+{len(bad) - 3} more)" if len(bad) > 3 else "")
            self.say(f"{self.kind.what} {self.work}: {len(bad)} finished chunks failed verification ({shown}); "
                     "recomputing exactly those")

    def finish(self, writer: ZarrCacheWriter) -> None:
        """Mark the store complete (and export HDF5) once every rank's chunks are on disk."""
        d = self.dist
        if d is not None:
            d.barrier()
        if d is None or d.is_main:
            if any(writer.pending_chunks(s) for s in writer.layouts):  # a medfm bug, not user error
                raise RuntimeError(f"{self.work}: chunks left undone after every rank finished")
            writer.finish()
            if self.work != self.path:
                export_h5(self.work, self.path)
        if d is not None:
            d.barrier()

    def close(self) -> None:
        if self.lock is not None:
            self.lock.release()

    def __enter__(self) -> Writing:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_store(path: Path, kind: StoreKind, fingerprint: str, inputs: dict, *, resume: bool = True, wait: bool = False,
               dist=None, say=print) -> Finished | Writing:
    """A finished, verified store for this request, or the right to write it (see the module docstring)."""
    path = Path(path)
    if dist is None or not dist.active:
        return _open_main(path, kind, fingerprint, inputs, resume, wait, dist, say)
    outcome = None
    if dist.is_main:
        try:
            outcome = _open_main(path, kind, fingerprint, inputs, resume, wait, dist, say)
            answer = ("ok", outcome.meta if isinstance(outcome, Finished) else None,
                      outcome.resume_meta if isinstance(outcome, Writing) else None, isinstance(outcome, Finished))
        except MedfmError as exc:
            answer = ("error", exc.problem, exc.fix, None)
        dist.broadcast(answer)
        if answer[0] == "error":
            raise MedfmError(answer[1], answer[2])
        return outcome
    status, a, b, finished = dist.broadcast(None)
    if status == "error":
        raise MedfmError(a, b)
    if finished:
        return Finished(path, a)
    return Writing(path, working_path(path), kind, b, None, dist, say)


def _verify(path: Path, meta: dict) -> list[ChunkProblem]:
    reader = reader_for(path, meta)
    try:
        return reader.problems()
    finally:
        reader.close()


def _clean_leftovers(path: Path, work: Path) -> None:
    """Remove what crashed writers leave (only ever called under the lock): half-created stores,
    export temp files, and a working store whose HDF5 export did finish."""
    for p in path.parent.glob(f"{work.name}.creating*"):
        shutil.rmtree(p, ignore_errors=True)
    if is_h5(path):
        for p in path.parent.glob(f"{path.name}.*.tmp"):
            p.unlink(missing_ok=True)
        (path.parent / f"{path.name}.tmp").unlink(missing_ok=True)  # older medfm's export temp file


def _open_main(path, kind, fingerprint, inputs, resume, wait, dist, say) -> Finished | Writing:
    finished = _finished(path, kind, fingerprint, inputs)
    if finished is not None and not finished[1]:
        return Finished(path, finished[0])
    lock = WriterLock(path, kind.what)
    lock.acquire(wait, say)
    try:
        return _decide(path, kind, fingerprint, inputs, resume, dist, say, lock)
    except BaseException:
        lock.release()
        raise


def _finished(path, kind, fingerprint, inputs) -> tuple[dict, list[ChunkProblem]] | None:
    """(metadata, bad chunks) of a finished store for this request at ``path``, None if there is none."""
    meta = target_meta(path, kind)
    check_matches(path, meta, fingerprint, inputs, kind.fmt)
    if not (meta and meta.get("complete")):
        return None
    meta = read_finished_meta(path, kind)  # this format_version, every key readers use
    return meta, _verify(path, meta)


def _decide(path, kind, fingerprint, inputs, resume, dist, say, lock) -> Finished | Writing:
    work = working_path(path)
    _clean_leftovers(path, work)
    finished = _finished(path, kind, fingerprint, inputs)
    if finished is not None:
        meta, bad = finished
        if work != path and work.exists():
            shutil.rmtree(work)  # an export that finished but was killed before removing its source
        if not bad:
            lock.release()
            return Finished(path, meta)
        shown = "; ".join(p.line() for p in bad[:3]) + (f" (+{len(bad) - 3} more)" if len(bad) > 3 else "")
        say(f"{kind.what} {path}: {len(bad)} bad chunks ({shown}); recomputing exactly those")
        _reopen_for_repair(path, work, kind, meta, bad)
        return Writing(path, work, kind, read_meta(work), lock, dist, say, bad)
    work_meta = target_meta(work, kind) if work != path else read_meta(path)
    check_matches(work, work_meta, fingerprint, inputs, kind.fmt)
    if work_meta is not None and work_meta.get("complete"):  # finished; its HDF5 export was interrupted
        bad = _verify(work, work_meta)
        if not bad:
            export_h5(work, path)
            lock.release()
            return Finished(path, read_meta(path), exported=True)
        _reopen_for_repair(work, work, kind, work_meta, bad)
        return Writing(path, work, kind, read_meta(work), lock, dist, say, bad)
    if work_meta is not None and not resume:
        raise MedfmError(f"an unfinished {kind.what} exists at {work}", "rerun with --resume (default), or delete it")
    if work_meta is not None:
        check_version(work, work_meta, kind)
    return Writing(path, work, kind, work_meta, lock, dist, say)


def _reopen_for_repair(path: Path, work: Path, kind: StoreKind, meta: dict, bad: list[ChunkProblem]) -> None:
    """Make a finished store with bad chunks an unfinished one missing exactly those chunks."""
    import zarr

    from medfm.cache.store import write_meta

    chunks: dict[str, set[int]] = {}
    for p in bad:
        if p.chunk is None:  # labels or ids: written at creation, from the dataset; the store is remade whole
            raise MedfmError(f"{kind.what} {path}: {p.line()}",
                             f"delete {path} and rerun the same command to rebuild it")
        chunks.setdefault(p.split, set()).add(p.chunk)
    if is_h5(path):
        shutil.rmtree(work, ignore_errors=True)  # an earlier repair that did not finish: start it again
        import_h5(path, work, chunks)
        return
    root = zarr.open_group(str(path), mode="r+")
    for split, cs in chunks.items():
        for c in cs:
            root[split]["done"][c] = 0
    write_meta(path, unfinished(meta))
