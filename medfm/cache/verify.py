"""``medfm cache verify PATH [--repair]``: check every chunk of a store against its digest.

Without ``--repair`` a bad store is a one-line error naming its first bad chunk (every bad chunk is
listed on stdout first). With ``--repair`` the command that made the store is rerun with the
configuration stored in its metadata: the lifecycle finds the bad chunks, flags them not done and
the writer recomputes exactly those; the store is then verified again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from medfm.cache.digest import bad_store_error
from medfm.cache.store import UnreadableStore, check_version, kind_of, read_finished_meta, read_meta, reader_for
from medfm.errors import MedfmError

Repairer = Callable[[Path, dict], None]  # reruns the store's own command on ``path`` with its stored config


def _kind(path: Path):
    try:
        meta = read_meta(path)
    except UnreadableStore as exc:
        raise MedfmError(f"{path} is not a medfm cache ({exc})", "pass the path `medfm extract` or `medfm prepare` printed") from None
    if meta is None:
        raise MedfmError(f"nothing at {path}", "pass the path `medfm extract` or `medfm prepare` printed")
    kind = kind_of(meta)
    if kind is None:
        raise MedfmError(f"{path} is not a medfm cache", "pass the path `medfm extract` or `medfm prepare` printed")
    check_version(path, meta, kind)
    return kind, meta


def verify(path: str | Path, repairers: dict[str, Repairer] | None = None, say=print) -> dict:
    """Verify a store in full; with ``repairers`` ({format: rerun}) recompute its bad chunks first.
    Returns ``{path, format, arrays, chunks, repaired}``; raises MedfmError if it is still bad."""
    path = Path(path)
    kind, meta = _kind(path)
    repaired: list[str] = []
    if repairers is not None:
        problems = [] if not meta.get("complete") else _problems(path, read_finished_meta(path, kind))
        if problems or not meta.get("complete"):
            repaired = [p.line() for p in problems] or ["(unfinished store)"]
            for line in repaired:
                say(f"repairing {path}: {line}")
            repairers[kind.fmt](path, meta)
    meta = read_finished_meta(path, kind)
    reader = reader_for(path, meta)
    try:
        problems = reader.problems()
        splits = reader.splits
        arrays = [(s, n) for s in splits for n in meta["digests"]["columns"]]
        chunks = sum(reader.data(s, n).n_chunks for s, n in arrays)
    finally:
        reader.close()
    if problems:
        for p in problems:
            say(f"bad: {path}: {p.line()}")
        err = bad_store_error(path, kind.what, kind.command, problems)
        raise MedfmError(err.problem, f"`medfm cache verify {path} --repair` recomputes exactly those chunks")
    return {"path": str(path), "format": kind.fmt, "arrays": len(arrays) + 2 * len(splits), "chunks": chunks,
            "repaired": repaired}


def _problems(path: Path, meta: dict):
    reader = reader_for(path, meta)
    try:
        return reader.problems()
    finally:
        reader.close()
