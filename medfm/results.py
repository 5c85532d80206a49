"""The results store: every probe / fine-tune result as one row, appended, never lost.

A SQLite file (default ``$MEDFM_RUNS/results.sqlite``) with a few indexed columns for querying and
the whole result record as JSON. Each row has a ``run_key`` — a hash of everything that defines
the run (cache fingerprint or backbone/dataset, head, its settings, label fraction, seed) — which is
unique: appending a run that is already stored is a no-op, so an interrupted sweep can simply be
rerun. Writes are single transactions (WAL journal), so a kill never leaves half a row; a writer
waits for a busy store (SQLite's busy timeout, then retries) instead of failing.

A store is created whole (schema written into a temporary file, then linked into place), and marked
with medfm's SQLite ``application_id``; an empty (0-byte) file is made a store in place by a writer
(it holds nothing to lose). Any other file given as a store (random bytes, a truncated or foreign
SQLite file, a wrong schema) is refused with one line before a run trains. Readers (``medfm
report``) open a store read-only, refuse an empty file, and never create or change a file.

A run writes its ``results.json`` first, then its row (``finish_run``). A run killed between the two
leaves a finished folder without a row; rerunning it finds that folder (``finished_record``) and
stores the row from it instead of training again or refusing.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from contextlib import closing
from pathlib import Path

from medfm.cache.fingerprint import fingerprint
from medfm.errors import MedfmError
from medfm.paths import runs_root

APPLICATION_ID = 0x6D65_6466  # 'medf': marks a SQLite file as a medfm results store
SCHEMA_VERSION = 1
COLUMNS = ("id", "run_key", "created", "kind", "dataset", "backbone", "weights_sha256", "feature", "head", "fraction",
           "seed", "headline_name", "headline_value", "record")
SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_key TEXT NOT NULL UNIQUE,
    created TEXT NOT NULL,
    kind TEXT NOT NULL,              -- probe | finetune
    dataset TEXT NOT NULL,
    backbone TEXT NOT NULL,
    weights_sha256 TEXT,
    feature TEXT,
    head TEXT NOT NULL,
    fraction REAL NOT NULL,
    seed INTEGER NOT NULL,
    headline_name TEXT NOT NULL,
    headline_value REAL,
    record TEXT NOT NULL             -- the full result record (JSON)
);
CREATE INDEX IF NOT EXISTS results_lookup ON results (dataset, backbone, head, kind);
"""
SQLITE_HEADER = b"SQLite format 3\x00"
BUSY_TIMEOUT_S = 60  # SQLite waits this long for another writer's lock ...
BUSY_RETRIES = 5  # ... and medfm retries a still-locked write this many times more


def default_store_path() -> Path:
    return runs_root() / "results.sqlite"


def run_key(identity: dict) -> str:
    """A stable key for a run; ``identity`` holds what defines it (not timings or paths)."""
    return fingerprint(identity)


def _not_a_store(path: Path, why: str) -> MedfmError:
    return MedfmError(f"{path} is not a medfm results store ({why})",
                      "pass --results a new path (medfm creates the store) or an existing medfm results store")


_CHECKED: set[tuple[int, int]] = set()  # (device, inode) of stores this process has checked in full


def check_store_file(path: Path) -> None:
    """Refuse a file that is not a medfm results store, reading it only. Header, application id and schema are
    checked on every open; the page-by-page integrity check once per process and file (a sweep opens its store
    for every row)."""
    stat = path.stat()
    full = (stat.st_dev, stat.st_ino) not in _CHECKED
    with open(path, "rb") as f:
        header = f.read(100)
    if not header:
        raise _not_a_store(path, "an empty file, with no results in it")
    if not header.startswith(SQLITE_HEADER) or len(header) < 100:
        raise _not_a_store(path, "not an SQLite database")
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)) as con:
            app_id = con.execute("PRAGMA application_id").fetchone()[0]
            cols = tuple(r[1] for r in con.execute("PRAGMA table_info(results)"))
            damage = con.execute("PRAGMA quick_check(1)").fetchone()[0] if full else "ok"
            if full and cols:
                con.execute("SELECT COUNT(*) FROM results").fetchone()
    except sqlite3.DatabaseError as exc:
        raise _not_a_store(path, f"unreadable SQLite: {exc}") from None
    if damage != "ok":
        raise _not_a_store(path, f"a damaged SQLite file: {damage}")
    if app_id not in (0, APPLICATION_ID):
        raise _not_a_store(path, f"an SQLite file of another application (application_id {app_id:#x})")
    if not cols:
        raise _not_a_store(path, "an SQLite database without a results table")
    if cols != COLUMNS:
        raise _not_a_store(path, f"its results table has columns {', '.join(cols)}, not medfm's")
    _CHECKED.add((stat.st_dev, stat.st_ino))


def _init_empty(path: Path) -> None:
    """Make an empty (0-byte) file a store, in place: it holds nothing to lose (an SQLite client that only
    looked at a path leaves one). One transaction; a store another writer made meanwhile is left as it is."""
    with closing(sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)) as con:
        con.execute("BEGIN IMMEDIATE")
        if con.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0:
            con.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            for statement in filter(str.strip, SCHEMA.split(";")):
                con.execute(statement)
        con.execute("COMMIT")
        con.execute("PRAGMA journal_mode=WAL")


def _create(path: Path) -> None:
    """Write a new store beside ``path`` and link it into place: a store exists whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    try:
        with closing(sqlite3.connect(tmp)) as con:
            con.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            con.execute("PRAGMA journal_mode=WAL")
            with con:
                con.executescript(SCHEMA)
        try:
            os.link(tmp, path)  # fails if another process created it first: theirs is used
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links: a rename, unless a store appeared meanwhile
            if not path.exists():
                os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class ResultsStore:
    """A medfm results store. ``readonly`` opens an existing store only (``medfm report``)."""

    def __init__(self, path: str | Path | None = None, readonly: bool = False):
        self.path = Path(path) if path else default_store_path()
        self.readonly = readonly
        if self.path.is_dir():
            raise _not_a_store(self.path, "a folder")
        if not self.path.exists():
            if readonly:
                raise MedfmError(f"results store {self.path} not found",
                                 "pass --results FILE (the SQLite file probes and sweeps write)")
            _create(self.path)
        elif not readonly and self.path.stat().st_size == 0:
            _init_empty(self.path)
        check_store_file(self.path)

    def _connect(self) -> sqlite3.Connection:
        if self.readonly:
            return sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
        return sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S)

    def has(self, key: str) -> bool:
        with closing(self._connect()) as con:
            return con.execute("SELECT 1 FROM results WHERE run_key = ?", (key,)).fetchone() is not None

    def append(self, record: dict, key: str, kind: str) -> bool:
        """Store ``record`` under ``key``; False (and nothing written) if that run is already stored."""
        row = (
            key, time.strftime("%Y-%m-%dT%H:%M:%S%z"), kind, record["dataset"], record["backbone"],
            record.get("weights_sha256"), record.get("feature"), record["head"], float(record.get("fraction", 1.0)),
            int(record.get("seed", 0)), record["headline_metric"]["name"], record["headline_metric"]["value"],
            json.dumps(record),
        )
        for attempt in range(BUSY_RETRIES + 1):
            try:
                with closing(self._connect()) as con, con:
                    cur = con.execute(
                        "INSERT OR IGNORE INTO results (run_key, created, kind, dataset, backbone, weights_sha256, feature,"
                        " head, fraction, seed, headline_name, headline_value, record) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        row,
                    )
                    return cur.rowcount == 1
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if attempt == BUSY_RETRIES:
                    raise MedfmError(f"results store {self.path} stayed locked by another writer for "
                                     f"{(BUSY_RETRIES + 1) * BUSY_TIMEOUT_S} s",
                                     "rerun the same command once the other writer is done: the finished run "
                                     "folder is found and only its row is stored") from None
                time.sleep(1 + attempt)
        return False

    def annotate(self, key: str, extra: dict, results_json: Path | None = None) -> bool:
        """Merge ``extra`` into the stored record of ``key`` (and into ``results_json`` when it holds that run):
        facts about how a row was planned (``medfm sweep``'s fidelity and departures) that the stage itself does
        not know. The run key and headline are untouched. False when ``key`` is not stored."""
        with closing(self._connect()) as con, con:
            found = con.execute("SELECT record FROM results WHERE run_key = ?", (key,)).fetchone()
            if found is None:
                return False
            record = {**json.loads(found[0]), **extra}
            con.execute("UPDATE results SET record = ? WHERE run_key = ?", (json.dumps(record), key))
        if results_json is not None and finished_record(results_json.parent, key) is not None:
            write_json_atomic(results_json, {**json.loads(results_json.read_text()), **extra})
        return True

    def records(self, **where) -> list[dict]:
        """Full records, oldest first; ``where`` filters on the indexed columns (e.g. dataset='busi')."""
        allowed = {"kind", "dataset", "backbone", "head", "feature", "seed", "fraction", "run_key"}
        bad = set(where) - allowed
        if bad:
            raise ValueError(f"cannot filter on {bad}")
        clause = " AND ".join(f"{k} = ?" for k in where) or "1"
        with closing(self._connect()) as con:
            rows = con.execute(f"SELECT record FROM results WHERE {clause} ORDER BY id", tuple(where.values())).fetchall()
        return [json.loads(r[0]) for r in rows]

    def __len__(self) -> int:
        with closing(self._connect()) as con:
            return con.execute("SELECT COUNT(*) FROM results").fetchone()[0]


# ---- a run's two writes: results.json, then its row ----

def write_json_atomic(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    tmp.replace(path)


def finish_run(out: Path, record: dict, store: ResultsStore, kind: str) -> dict:
    """Write ``results.json``, then the row: a kill between the two leaves a finished folder whose rerun
    stores the row (``complete_run``); the reverse (a row without its folder's results) cannot happen."""
    record["results_store"] = str(store.path)  # in results.json too: a rerun completes the row in this store only
    write_json_atomic(out / "results.json", record)
    record["stored"] = store.append(record, record["run_key"], kind=kind)
    return record


def finished_record(out: Path, key: str) -> dict | None:
    """The record of the run ``key`` finished in ``out`` (its results.json), or None."""
    done = out / "results.json"
    if not done.is_file():
        return None
    try:
        record = json.loads(done.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return record if record.get("run_key") == key else None


def complete_run(out: Path, key: str, store: ResultsStore, kind: str, any_store: bool = False) -> dict | None:
    """A finished run whose row is missing from ``store``: store the row from its results.json and return the
    record (``completed``: True). None when ``out`` holds no finished run of ``key``, the row is stored, or
    (unless ``any_store``: a sweep gathering finished folders into its store) the run wrote to another store."""
    record = finished_record(out, key)
    if record is None or store.has(key):
        return None
    meant = record.get("results_store")
    if not any_store and (meant is None or Path(meant).resolve() != store.path.resolve()):
        return None
    record["stored"] = store.append(record, key, kind=kind)
    record["results_store"] = str(store.path)
    record["completed"] = True
    return record


def default_run_dir(kind: str, name: str, key: str) -> Path:
    """A new folder under ``$MEDFM_RUNS/<kind>/``, unique per run: the run's name and key, a microsecond time
    stamp, created with ``exist_ok=False`` (so parallel runs never share one; a clash takes the next suffix)."""
    base = runs_root() / kind
    base.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S") + f".{time.time_ns() // 1000 % 1_000_000:06d}"
    for k in range(1000):
        out = base / (f"{_safe(name)}-{key[:10]}-{stamp}" + (f"-{k}" if k else ""))
        try:
            out.mkdir(exist_ok=False)
            return out
        except FileExistsError:
            continue
    raise MedfmError(f"could not make a new run folder under {base}", "pass --out")


def earlier_run_dirs(kind: str, name: str, key: str) -> list[Path]:
    """Default folders of earlier runs of ``key`` (a rerun after a kill finds its finished folder here)."""
    base = runs_root() / kind
    return sorted(base.glob(f"{_safe(name)}-{key[:10]}-*")) if base.is_dir() else []


def _safe(name: str) -> str:
    return re.sub(r"[^\w.+-]+", "_", name).strip("_") or "run"


def start_run(out: str | Path | None, overwrite: bool, kind: str, name: str, key: str,
              store: ResultsStore) -> tuple[Path, dict | None]:
    """The run folder of run ``key``, and its record when the run already finished there but its row never
    reached ``store`` (the row is stored now: the rerun completes the missing half).

    ``out`` given: a finished run there is refused unless ``overwrite`` (as before). No ``out``: an earlier
    default folder of this run that finished without its row is completed; otherwise a new unique folder."""
    if out is not None:
        out = Path(out)
        if not overwrite:
            done = complete_run(out, key, store, kind)
            if done is not None:
                return out, done
            if (out / "results.json").exists():
                raise MedfmError(f"{out / 'results.json'} already exists", "pass another --out, or --overwrite to replace it")
        return out, None
    for earlier in earlier_run_dirs(kind, name, key):
        done = complete_run(earlier, key, store, kind)
        if done is not None:
            return earlier, done
    return default_run_dir(kind, name, key), None
