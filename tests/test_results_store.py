import multiprocessing as mp

from medfm.results import ResultsStore, run_key


def record(backbone="a", seed=0, value=0.9):
    return {"dataset": "d", "backbone": backbone, "head": "linear", "seed": seed,
            "headline_metric": {"name": "roc_auc", "value": value}, "test": {"roc_auc": value}}


def test_append_is_idempotent_per_run_key_and_filterable(tmp_path):
    store = ResultsStore(tmp_path / "r.sqlite")
    k1, k2 = run_key({"b": "a", "seed": 0}), run_key({"b": "a", "seed": 1})
    assert store.append(record(), k1, "probe") is True
    assert store.append(record(value=0.1), k1, "probe") is False  # same run: nothing duplicated or replaced
    assert store.append(record(seed=1, value=0.8), k2, "probe") is True
    again = ResultsStore(tmp_path / "r.sqlite")  # reopened: rows persisted
    assert len(again) == 2
    assert [r["headline_metric"]["value"] for r in again.records(backbone="a")] == [0.9, 0.8]
    assert again.records(seed=1)[0]["seed"] == 1 and again.has(k1) and not again.has(run_key({"x": 1}))


def _writer(path, start):
    store = ResultsStore(path)
    for i in range(start, start + 25):
        store.append(record(seed=i), run_key({"seed": i}), "probe")


def test_concurrent_writers_lose_no_rows(tmp_path):
    path = tmp_path / "r.sqlite"
    procs = [mp.Process(target=_writer, args=(path, s)) for s in (0, 25)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert sorted(r["seed"] for r in ResultsStore(path).records()) == list(range(50))


def test_a_write_waits_for_a_busy_store_and_retries(tmp_path, monkeypatch):
    """Another writer holds the store's write lock longer than SQLite's busy timeout: the append retries
    and lands once the lock is released, instead of failing."""
    import sqlite3
    import threading
    import time

    import medfm.results as results

    store = ResultsStore(tmp_path / "r.sqlite")
    monkeypatch.setattr(results, "BUSY_TIMEOUT_S", 0.2)
    locked, release = threading.Event(), threading.Event()

    def hold_lock():
        con = sqlite3.connect(store.path, isolation_level=None)
        con.execute("BEGIN EXCLUSIVE")
        locked.set()
        release.wait()
        con.execute("COMMIT")
        con.close()

    holder = threading.Thread(target=hold_lock)
    holder.start()
    locked.wait()
    threading.Timer(0.8, release.set).start()
    t0 = time.perf_counter()
    assert store.append(record(), run_key({"busy": 1}), "probe") is True
    assert time.perf_counter() - t0 >= 0.7 and len(store) == 1
    holder.join()
