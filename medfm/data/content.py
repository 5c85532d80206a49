"""Content identity: a streamed sha256 of every image file a dataset reads.

A dataset's identity must change when any image's bytes change — a file replaced in place by one
of the same size included — so that no cache made from the old bytes is reused (git names objects
by their content for the same reason). Files are hashed in parallel threads (hashlib releases the
GIL while it hashes, and threads hide the latency of network file systems).

Hashing every file on every run would cost a full read of the dataset, so a **sidecar** remembers
each file's digest together with its path, size, inode, mtime and ctime (nanoseconds). A file whose
five stat fields are all unchanged is not read again; any write changes ctime, even one that puts
mtime back, so a stale digest is never used. ``rehash=True`` (``--rehash``) ignores the sidecar.

The sidecar lives under ``$MEDFM_CACHE/content-hashes/`` keyed by the dataset's resolved root, so
read-only data folders work; it is written atomically (temp file + rename), carries a checksum of
its own body, and is ignored and rebuilt when that checksum, its header or any line is wrong.
"""

from __future__ import annotations

import hashlib
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from medfm.errors import MedfmError
from medfm.paths import cache_root

ALGORITHM = "sha256"
SIDECAR_HEADER = "medfm-content-hashes 1 sha256"
SIDECAR_DIR = "content-hashes"
THREADS = min(32, (os.cpu_count() or 1) * 4)  # I/O-bound on network storage: more threads than cores


def file_digest(path: Path) -> str:
    """sha256 of one file's bytes, streamed (never the whole file in memory)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, ALGORITHM).hexdigest()


def _stat_key(st: os.stat_result) -> str:
    return f"{st.st_size}\t{st.st_ino}\t{st.st_mtime_ns}\t{st.st_ctime_ns}"


def sidecar_path(root: Path) -> Path:
    """Where the sidecar of the dataset rooted at ``root`` lives (outside the data folder)."""
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return cache_root() / SIDECAR_DIR / f"{root.resolve().name or 'root'}-{key}.tsv"


def read_sidecar(path: Path) -> dict[str, tuple[str, str]]:
    """``relpath -> (stat key, digest)``; empty when the sidecar is missing or damaged in any way (never trusted)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    head, _, body = text.partition("\n")
    if head != f"{SIDECAR_HEADER} {hashlib.sha256(body.encode()).hexdigest()}":
        return {}
    out = {}
    for line in body.splitlines():
        parts = line.split("\t")
        if len(parts) != 6 or len(parts[5]) != 64:
            return {}
        out[parts[0]] = ("\t".join(parts[1:5]), parts[5])
    return out


def write_sidecar(path: Path, entries: dict[str, tuple[str, str]]) -> None:
    """Write atomically; a cache folder that cannot be written only costs the next run a rehash."""
    body = "".join(f"{rel}\t{key}\t{digest}\n" for rel, (key, digest) in sorted(entries.items())
                   if not any(c in rel for c in "\t\n\r"))  # such names are simply hashed every run
    text = f"{SIDECAR_HEADER} {hashlib.sha256(body.encode()).hexdigest()}\n{body}"
    tmp = path.with_name(f"{path.name}.{socket.gethostname()}.{os.getpid()}.tmp")  # torchrun ranks on many nodes
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)


class HashStats:
    """What a ``hash_files`` call did: files read versus digests taken from the sidecar."""

    def __init__(self) -> None:
        self.hashed = 0
        self.reused = 0


def hash_files(root: Path, rels: list[str], rehash: bool = False, stats: HashStats | None = None) -> dict[str, str]:
    """``relpath -> sha256`` for the files ``root / rel`` (each listed once), reusing the sidecar where stat allows."""
    rels = list(dict.fromkeys(rels))
    side = sidecar_path(root)
    stored = read_sidecar(side)
    known = {} if rehash else stored
    keys, todo, out = {}, [], {}
    for rel in rels:
        keys[rel] = _stat_key(_stat(root / rel))  # taken before reading: a write during the read leaves it stale
        hit = known.get(rel)
        if hit is not None and hit[0] == keys[rel]:
            out[rel] = hit[1]
        else:
            todo.append(rel)
    if todo:
        with ThreadPoolExecutor(min(THREADS, len(todo))) as pool:
            for rel, digest in zip(todo, pool.map(_digest_or_error, [root / rel for rel in todo])):
                out[rel] = digest
        write_sidecar(side, {**stored, **{rel: (keys[rel], out[rel]) for rel in todo}})
    if stats is not None:
        stats.hashed += len(todo)
        stats.reused += len(rels) - len(todo)
    return out


def _stat(path: Path) -> os.stat_result:
    try:
        return os.stat(path)
    except OSError as exc:
        raise MedfmError(f"cannot read {path} ({exc.strerror})", "check the file and its permissions") from None


def _digest_or_error(path: Path) -> str:
    try:
        return file_digest(path)
    except OSError as exc:
        raise MedfmError(f"cannot read {path} ({exc.strerror})", "check the file and its permissions") from None
