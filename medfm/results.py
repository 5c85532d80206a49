"""The results store: every probe / fine-tune result as one row, appended, never lost.

A SQLite file (default ``$MEDFM_RUNS/results.sqlite``) with a few indexed columns for querying and
the whole result record as JSON. Each row has a ``run_key`` — a hash of everything that defines
the run (cache fingerprint or backbone/dataset, head, its settings, label fraction, seed) — which is
unique: appending a run that is already stored is a no-op, so an interrupted sweep can simply be
rerun. Writes are single transactions (WAL journal), so a kill never leaves half a row.
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing
from pathlib import Path

from medfm.cache.fingerprint import fingerprint
from medfm.paths import runs_root

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


def default_store_path() -> Path:
    return runs_root() / "results.sqlite"


def run_key(identity: dict) -> str:
    """A stable key for a run; ``identity`` holds what defines it (not timings or paths)."""
    return fingerprint(identity)


class ResultsStore:
    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else default_store_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as con, con:
            con.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=60)
        con.execute("PRAGMA journal_mode=WAL")
        return con

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
        with closing(self._connect()) as con, con:
            cur = con.execute(
                "INSERT OR IGNORE INTO results (run_key, created, kind, dataset, backbone, weights_sha256, feature, head,"
                " fraction, seed, headline_name, headline_value, record) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                row,
            )
            return cur.rowcount == 1

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
