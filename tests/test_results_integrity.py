"""No lost or clobbered rows (issue 13.4): a run's results.json and its store row never disagree after a kill,
parallel runs keep every folder and row, and files that are not medfm results stores are refused untouched.

Real probes (a linear head, few epochs) on the real 128-image PneumoniaMNIST subset cache; a real SIGKILL;
eight real processes. (A fine-tune killed between its writes: tests/test_run_identity.py.)
"""

import hashlib
import json
import multiprocessing as mp
import os
import signal
import sqlite3
import subprocess
import sys
import threading

import pytest

from medfm.config import ProbeConfig, ReportConfig
from medfm.errors import MedfmError
from medfm.probe import run_probe
from medfm.report import run_report
from medfm.results import ResultsStore, default_run_dir

FAST = dict(lrs=[1e-2], wds=[1e-4], epochs=3, min_steps=10, bootstrap=0)


class Killed(Exception):
    """Stands in for a kill at a fault point."""


def cfg(cache, tmp_path, **kw) -> ProbeConfig:
    return ProbeConfig(**{"cache": str(cache), "results": str(tmp_path / "results.sqlite"), **FAST, **kw})


def rows(tmp_path) -> list[dict]:
    return ResultsStore(tmp_path / "results.sqlite").records()


@pytest.fixture
def runs(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDFM_RUNS", str(tmp_path / "runs"))
    return tmp_path / "runs"


def _fail_at(monkeypatch, point: str) -> None:
    import medfm.results as results

    if point == "results.json half written":  # the temporary file is written, the rename never happens
        def write(path, obj):
            path.with_name(path.name + ".tmp").write_text(json.dumps(obj)[:100])
            raise Killed(point)

        monkeypatch.setattr(results, "write_json_atomic", write)
    elif point == "between results.json and the row":
        monkeypatch.setattr(results.ResultsStore, "append", lambda *a, **k: (_ for _ in ()).throw(Killed(point)))
    elif point == "after the row":
        real = results.ResultsStore.append

        def append(self, *a, **k):
            real(self, *a, **k)
            raise Killed(point)

        monkeypatch.setattr(results.ResultsStore, "append", append)


@pytest.mark.parametrize("out", ["given", "default"])
@pytest.mark.parametrize("point", ["results.json half written", "between results.json and the row", "after the row"])
def test_a_probe_killed_at_any_point_of_its_two_writes_is_completed_by_its_rerun(pneu_tiny_cache, tmp_path, runs,
                                                                                   monkeypatch, point, out):
    c = cfg(pneu_tiny_cache, tmp_path, out=str(tmp_path / "run") if out == "given" else None)
    with monkeypatch.context() as m:
        _fail_at(m, point)
        with pytest.raises(Killed):
            run_probe(c)
    if point == "after the row" and out == "given":  # both halves were written: the rerun refuses, as before
        with pytest.raises(MedfmError, match="already exists.*--overwrite"):
            run_probe(c)
    else:
        again = run_probe(c)
        assert again["stored"] is True or point == "after the row"
        if point == "between results.json and the row":
            assert again["completed"] is True  # the row came from the finished folder: no training again
    stored = rows(tmp_path)
    assert len(stored) == 1
    folders = [p for p in (runs / "probe").iterdir()] if out == "default" else [tmp_path / "run"]
    finished = [json.loads((f / "results.json").read_text()) for f in folders if (f / "results.json").exists()]
    assert stored[0]["run_key"] in {r["run_key"] for r in finished}
    assert stored[0]["test"] in [r["test"] for r in finished]  # the row and its results.json agree
    if point == "between results.json and the row":
        assert len(folders) == 1  # found, not trained again into a new folder


def test_a_real_sigkill_between_the_writes_is_completed_by_the_rerun(pneu_tiny_cache, tmp_path, runs):
    c = cfg(pneu_tiny_cache, tmp_path, out=str(tmp_path / "run"))
    script = ("import os, signal, sys\nfrom medfm.config import ProbeConfig\nfrom medfm.probe import run_probe\n"
              "import medfm.results as r\n"
              "r.ResultsStore.append = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)\n"
              f"run_probe(ProbeConfig(**{c.to_dict()!r}))\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert (tmp_path / "run" / "results.json").is_file() and rows(tmp_path) == []
    again = run_probe(c)
    assert again["completed"] is True and [r["run_key"] for r in rows(tmp_path)] == [again["run_key"]]


def _probe_in_child(cache: str, store: str, seed: int, start) -> None:
    import torch

    torch.set_num_threads(1)
    start.wait()
    run_probe(ProbeConfig(cache=cache, results=store, seed=seed, head="logreg", wds=[1e-3], bootstrap=0))


def test_eight_parallel_probes_with_default_folders_keep_eight_folders_and_eight_rows(pneu_tiny_cache, tmp_path, runs):
    ctx = mp.get_context("fork")
    start = ctx.Event()
    procs = [ctx.Process(target=_probe_in_child, args=(str(pneu_tiny_cache), str(tmp_path / "results.sqlite"), s, start))
             for s in range(8)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(300)
    assert [p.exitcode for p in procs] == [0] * 8
    folders = sorted((runs / "probe").iterdir())
    seeds = sorted(json.loads((f / "results.json").read_text())["seed"] for f in folders)
    assert len(folders) == 8 and seeds == list(range(8))
    assert sorted(r["seed"] for r in rows(tmp_path)) == list(range(8))
    assert {r["out"] for r in rows(tmp_path)} == {str(f) for f in folders}


def test_default_run_folders_are_unique_even_for_one_run_started_many_times_at_once(runs):
    made, barrier = [], threading.Barrier(16)

    def make():
        barrier.wait()
        made.append(default_run_dir("probe", "same-name", "samekey1234"))

    threads = [threading.Thread(target=make) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(made)) == 16 and all(p.is_dir() for p in made)


def _files(tmp_path) -> dict:
    random_bytes = tmp_path / "random.sqlite"
    random_bytes.write_bytes(os.urandom(8192))
    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as con:
        con.execute("CREATE TABLE patients (id INTEGER, name TEXT)")
    wrong = tmp_path / "wrong-schema.sqlite"
    with sqlite3.connect(wrong) as con:
        con.execute("CREATE TABLE results (id INTEGER, value REAL)")
    good = ResultsStore(tmp_path / "good.sqlite")
    good.append({"dataset": "d", "backbone": "b", "head": "linear", "headline_metric": {"name": "roc_auc", "value": 1.0}},
                "k" * 64, "probe")
    truncated = tmp_path / "truncated.sqlite"
    data = (tmp_path / "good.sqlite").read_bytes()
    truncated.write_bytes(data[: len(data) // 2 + 100])
    return {"random bytes": random_bytes, "foreign": foreign, "wrong schema": wrong, "truncated": truncated}


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_report_and_probe_refuse_files_that_are_not_results_stores_and_leave_them_untouched(pneu_tiny_cache, tmp_path,
                                                                                          runs, capfd):
    for what, path in _files(tmp_path).items():
        before = _digest(path)
        with pytest.raises(MedfmError, match="is not a medfm results store"):
            run_report(ReportConfig(results=str(path), out=str(tmp_path / "report")))
        capfd.readouterr()
        with pytest.raises(MedfmError, match="is not a medfm results store"):
            run_probe(cfg(pneu_tiny_cache, tmp_path, results=str(path)))
        assert "training" not in capfd.readouterr().err, what  # refused before any training
        assert _digest(path) == before, what
    assert not (tmp_path / "report").exists() and not (runs / "probe").exists()
    with sqlite3.connect(tmp_path / "foreign.sqlite") as con:  # nothing written into it
        assert [r[0] for r in con.execute("SELECT name FROM sqlite_master")] == ["patients"]


def test_an_empty_file_is_refused_by_the_report_untouched_and_made_a_store_by_a_writer(tmp_path):
    """An empty file holds nothing to lose (an SQLite client that only looked at a path leaves one): the report
    refuses it without writing; a probe, fine-tune or sweep makes it a store in place."""
    empty = tmp_path / "empty.sqlite"
    empty.write_bytes(b"")
    with pytest.raises(MedfmError, match="is not a medfm results store .an empty file"):
        run_report(ReportConfig(results=str(empty), out=str(tmp_path / "report")))
    assert empty.stat().st_size == 0 and not (tmp_path / "report").exists()
    assert len(ResultsStore(empty)) == 0
    with sqlite3.connect(empty) as con:
        assert con.execute("PRAGMA application_id").fetchone()[0] == 0x6D656466


def test_cli_report_on_a_foreign_sqlite_file_is_one_line_and_exit_2(cli, tmp_path):
    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as con:
        con.execute("CREATE TABLE patients (id INTEGER)")
    line = cli.error("report", "--results", foreign, "--out", tmp_path / "report")
    assert "is not a medfm results store" in line and "without a results table" in line
