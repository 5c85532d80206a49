"""`medfm sweep` killed midway and rerun, then `medfm report` on its store, rendered by headless Chromium.

The sweep is real: two real backbones (DINOv2 ViT-S/14 and MobileNetV2, real weights) over real
BreastMNIST at 42 px, linear + kNN heads, 2 label budgets x 2 seeds = 16 probes. It extracts into
the session's cache folder, so the DINOv2 token cache test_protocol made is reused.

A second sweep runs both scenarios, frozen probes and unfrozen fine-tunes (real MobileNetV2 at 32 px
on the real PneumoniaMNIST subset `pneu_subset`, 1 epoch), into one store.
"""

import os
import signal
import sqlite3
import subprocess
import time

import pytest
from PIL import Image

from conftest import rendered_body_attrs

pytestmark = pytest.mark.slow
N_JOBS = 16


def sweep_args(data_root, dinov2_s_weights, store):
    return ("sweep", "--backbones", "mobilenetv2,dinov2_vits14", "--weights", f"dinov2_vits14={dinov2_s_weights}",
            "--datasets", "breastmnist", "--heads", "linear,knn", "--fractions", "0.1,1.0", "--seeds", "0,1",
            "--img-size", 42, "--tokens", "--data-root", data_root, "--results", store, "--bootstrap", 200)


def stored_rows(store) -> list[tuple]:
    try:
        with sqlite3.connect(store, timeout=30) as con:
            return con.execute("SELECT id, run_key, created, record FROM results ORDER BY id").fetchall()
    except sqlite3.Error:
        return []


@pytest.fixture(scope="session")
def swept(session_cli, data_root, dinov2_s_weights, tmp_path_factory):
    from conftest import Cli

    cli = Cli(tmp_path_factory.mktemp("sweep"))
    cli.env["MEDFM_CACHE"] = session_cli.env["MEDFM_CACHE"]
    store = cli.workdir / "results.sqlite"
    args = sweep_args(data_root, dinov2_s_weights, store)
    proc = subprocess.Popen(cli.cmd(*args), cwd=cli.workdir, env=cli.env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    while len(stored_rows(store)) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = stored_rows(store)
    rerun = cli.json(*args)
    again = cli.json(*args)
    return {"cli": cli, "store": store, "before": before, "rerun": rerun, "again": again}


def test_killed_sweep_reruns_to_the_complete_grid_without_duplicates_or_losses(swept):
    before, after = swept["before"], stored_rows(swept["store"])
    assert 3 <= len(before) < N_JOBS, "killed midway"
    assert len(after) == N_JOBS and len({r[1] for r in after}) == N_JOBS  # complete, no duplicate run
    assert after[: len(before)] == before  # rows stored before the kill are untouched
    assert swept["rerun"]["planned"] == N_JOBS and swept["rerun"]["skipped"] == len(before)
    assert swept["rerun"]["ran"] == N_JOBS - len(before)
    assert swept["again"]["ran"] == 0 and swept["again"]["skipped"] == N_JOBS
    import json

    combos = {(r["backbone"], r["head"], r["fraction"], r["seed"]) for r in (json.loads(row[3]) for row in after)}
    assert len(combos) == N_JOBS
    rec = json.loads(after[0][3])
    for key in ("backbone", "weights_sha256", "feature", "head", "fraction", "seed", "hyperparameters", "val", "test",
                "wall_time_s", "cache_fingerprint"):
        assert rec.get(key) is not None, key


def test_report_renders_table_and_every_figure_in_headless_chromium(swept, chromium, tmp_path):
    out = tmp_path / "report"
    result = swept["cli"].json("report", "--results", swept["store"], "--out", out, "--bootstrap", 200)
    md = (out / "leaderboard.md").read_text()
    assert "mobilenetv2" in md and "dinov2_vits14" in md and "±" in md
    csv_lines = (out / "results.csv").read_text().strip().splitlines()
    assert len(csv_lines) == 1 + 8  # 2 backbones x 2 heads x 2 label budgets
    assert len(result["figures"]) >= 4  # label efficiency, ROC, confusion matrix, ranking
    for f in result["figures"]:
        with Image.open(f) as im:
            assert im.size[0] > 100 and im.size[1] > 100 and im.getextrema() != ((255, 255), (255, 255), (255, 255), (255, 255))

    probe = ("window.addEventListener('load', () => { const imgs = [...document.images];"  # what the browser rendered
             " document.body.setAttribute('data-imgs', imgs.length);"
             " document.body.setAttribute('data-rendered', imgs.filter(i => i.complete && i.naturalWidth > 0).length);"
             " document.body.setAttribute('data-rows', document.querySelectorAll('#leaderboard tbody tr').length);"
             " });")
    attrs = rendered_body_attrs(chromium, out / "report.html", probe, tmp_path)
    assert attrs["imgs"] == len(result["figures"]) and attrs["rendered"] == attrs["imgs"], attrs
    assert attrs["rows"] == 4  # 2 backbones x 2 heads at the full label budget


def test_sweep_runs_frozen_probes_and_unfrozen_finetunes_into_one_store_and_resumes(cli, pneu_subset, mobilenet_weights,
                                                                                   tmp_path, monkeypatch, capfd):
    """Both scenarios land in one store; a rerun runs nothing; a fine-tune killed after its last checkpoint
    resumes from its row's run folder; a finished run folder whose row is missing is stored, not retrained."""
    from medfm.config import SweepConfig
    from medfm.results import ResultsStore
    from medfm.sweep import run_sweep

    store, out = tmp_path / "results.sqlite", tmp_path / "sweep"
    first = cli.json("sweep", "--backbones", "mobilenetv2", "--datasets", pneu_subset, "--heads", "linear,knn",
                     "--img-size", 32, "--scenarios", "frozen,unfrozen", "--unfreeze", 1, "--finetune", "epochs=1",
                     "--finetune", "batch_size=32", "--finetune", "num_workers=0", "--bootstrap", 50, "--results", store,
                     "--out", out)
    assert first["probes"] == {"planned": 2, "ran": 2, "skipped": 0}
    assert first["finetunes"] == {"planned": 1, "ran": 1, "skipped": 0}  # knn is probe-only: a note, not a row
    assert first["not_planned"] == ["head knn has no unfrozen rows (unfrozen heads: linear, deit, mlp)"]
    rows = ResultsStore(store).records()
    assert sorted((r["kind"], r["head"]) for r in rows) == [("finetune", "linear"), ("probe", "knn"), ("probe", "linear")]
    ft = next(r for r in rows if r["kind"] == "finetune")
    assert ft["unfreeze"] == 1 and ft["epochs_run"] == 1 and ft["backbone"] == "mobilenetv2" and ft["n"]["train"] == 64
    run_dir = tmp_path / ft["out"]
    assert run_dir.parent.parent.parent == out and (run_dir / "last.pt").is_file()

    # the same sweep again (in this process, same caches): every row is skipped, no model is built
    monkeypatch.setenv("MEDFM_CACHE", cli.env["MEDFM_CACHE"])
    grid = {"backbones": ["mobilenetv2"], "datasets": [str(pneu_subset)], "heads": ["linear", "knn"], "img_size": 32,
            "unfreeze": [1], "finetune": {"epochs": 1, "batch_size": 32, "num_workers": 0}, "results": str(store),
            "out": str(out), "probe": {"bootstrap": 50}}
    capfd.readouterr()
    again = run_sweep(SweepConfig(**grid, scenarios=["frozen", "unfrozen"]))
    assert again["ran"] == 0 and again["probes"]["skipped"] == 2 and again["finetunes"]["skipped"] == 1
    assert "building" not in capfd.readouterr().err and len(ResultsStore(store)) == 3

    # killed after the fine-tune's last checkpoint, before its results: the rerun resumes from last.pt
    (run_dir / "results.json").unlink()
    with sqlite3.connect(store) as con:
        con.execute("DELETE FROM results WHERE kind = 'finetune'")
    last = (run_dir / "last.pt").stat().st_mtime_ns
    resumed = run_sweep(SweepConfig(**grid, scenarios=["unfrozen"]))
    assert resumed["finetunes"] == {"planned": 1, "ran": 1, "skipped": 0}
    assert "resuming" in capfd.readouterr().err
    assert (run_dir / "last.pt").stat().st_mtime_ns == last  # no epoch trained again
    again_ft = ResultsStore(store).records(kind="finetune")
    assert [(r["run_key"], r["test"], r["history"]) for r in again_ft] == [(ft["run_key"], ft["test"], ft["history"])]

    # a finished run folder whose row is not in this store: stored from its results.json, not retrained
    other = tmp_path / "other.sqlite"
    moved = run_sweep(SweepConfig(**{**grid, "results": str(other)}, scenarios=["unfrozen"]))
    assert moved["finetunes"] == {"planned": 1, "ran": 0, "skipped": 1}
    assert [r["run_key"] for r in ResultsStore(other).records()] == [ft["run_key"]]
