"""Issue 17 point 3's comparison: a study preset run in both fidelities, and the report's exact-vs-fast table.

A real sweep of the mansoori2025 preset, frozen linear head, one backbone with real weights on real
PneumoniaMNIST images (a small subset), once as medfm's cached path (fast) and once as the study code runs it
(exact: an online fine-tune with unfreeze 0, squash + dataset statistics, its augmentation and schedule; one
epoch and 64 px here, recorded as settings over the code's). The report pairs the two rows on the same test rows;
the table's difference and CI are checked against a paired bootstrap computed here from the stored predictions.
"""

from __future__ import annotations

import json

import numpy as np

from medfm.config import ReportConfig, SweepConfig
from medfm.report import run_report
from medfm.results import ResultsStore
from medfm.stats import paired_bootstrap
from medfm.sweep import run_sweep


def test_exact_and_fast_rows_of_a_preset_are_paired_in_the_report(pneu_subset, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDFM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MEDFM_RUNS", str(tmp_path / "runs"))
    store = tmp_path / "results.sqlite"
    common = dict(preset="mansoori2025", scenarios=["frozen"], heads=["linear"], backbones=["mobilenetv2"],
                  datasets=[str(pneu_subset)], img_size=64, seeds=[0], results=str(store), out=str(tmp_path / "sweep"))
    run_sweep(SweepConfig(**common, fidelity="fast"))
    run_sweep(SweepConfig(**common, fidelity="fast", resize="squash", resize_size=256, norm="dataset"))  # exact's
    run_sweep(SweepConfig(**common, fidelity="exact", finetune={"epochs": 1, "batch_size": 16, "lr": 1e-7}))
    # val 32: two whole batches; lr 1e-7: a barely trained head whose test scores differ only past the 5th decimal
    # (the rounding check below needs one)
    rows = ResultsStore(store).records()
    modes = sorted((r["kind"], r["fidelity"]["mode"]) for r in rows)
    assert modes == [("finetune", "exact"), ("probe", "fast"), ("probe", "fast")]
    exact = next(r for r in rows if r["kind"] == "finetune")
    assert exact["identity"]["unfreeze"] in (0, "0")  # the frozen row of the code: no backbone block trained
    assert exact["fidelity"]["overridden"]["epochs"] == 1  # a setting over the code's, recorded

    report = run_report(ReportConfig(results=str(store), out=str(tmp_path / "report"), bootstrap=400))
    text = (tmp_path / "report" / "leaderboard.md").read_text()
    assert "## Exact vs fast fidelity" in text
    line = next(l for l in text.splitlines() if l.startswith("|") and "frozen" in l and "mobilenetv2" in l
                and "Exact" not in l and "exact_vs_fast" not in l and l.count("|") > 12)
    cells = [c.strip() for c in line.strip("|").split("|")]
    fast = next(r for r in rows if r["kind"] == "probe" and not r["identity"].get("resize"))
    y = np.asarray(exact["predictions"]["test"]["y_true"])
    a = np.asarray(exact["predictions"]["test"]["y_score"])[:, 1]
    b = np.asarray(fast["predictions"]["test"]["y_score"])[:, 1]
    assert np.array_equal(y, np.asarray(fast["predictions"]["test"]["y_true"]))  # the same test rows
    from sklearn.metrics import roc_auc_score

    diff = roc_auc_score(y, a) - roc_auc_score(y, b)
    assert cells[6] == "crop, norm=backbone" and cells[7] == "squash256, norm=dataset"  # which rows were paired
    assert float(cells[10]) == round(diff, 4)  # exact − fast, as the stored predictions give it
    low, high = (float(v) for v in cells[11].strip("[]").split(","))
    ref = paired_bootstrap(y, a, b, resamples=2000, seed=1)
    assert low <= diff <= high and abs(low - ref.low) < 0.05 and abs(high - ref.high) < 0.05
    assert report is not None
    # both fast rows are paired with the exact one, each named by its preprocessing
    assert sum(1 for l in text.splitlines() if "squash256, norm=dataset" in l and "mobilenetv2" in l) == 2
    # an exact frozen row (unfreeze 0) is not "fine-tuned": never paired with the probe of the same preprocessing
    tuned_csv = tmp_path / "report" / "frozen_vs_finetuned.csv"
    assert not tuned_csv.exists() or len(tuned_csv.read_text().strip().splitlines()) == 1, tuned_csv.read_text()

    # a row whose stored scores no longer give its recorded number (rounded, as medfm stored them before) is never
    # paired: rounding a barely-trained head's scores to 5 decimals ties them all
    rounded = {"predictions": {"test": {"y_true": y.tolist(),
                                        "y_score": np.round(np.asarray(exact["predictions"]["test"]["y_score"]), 5).tolist()}}}
    assert roc_auc_score(y, np.asarray(rounded["predictions"]["test"]["y_score"])[:, 1]) != roc_auc_score(y, a)
    assert ResultsStore(store).annotate(exact["run_key"], rounded)
    run_report(ReportConfig(results=str(store), out=str(tmp_path / "report2"), bootstrap=100))
    again = (tmp_path / "report2" / "leaderboard.md").read_text().split("## Exact vs fast fidelity")[1]
    assert "scores rounded by an older medfm" in again and "| frozen |" not in again


def test_an_exact_row_stored_before_a_kill_gets_its_fidelity_on_rerun_without_retraining(pneu_subset, tmp_path,
                                                                                          monkeypatch):
    """A kill between storing an exact row and annotating it leaves the row without its fidelity; the rerun
    finds the row done (nothing trains) and adds the fidelity and departures to the store and results.json."""
    import sqlite3

    monkeypatch.setenv("MEDFM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MEDFM_RUNS", str(tmp_path / "runs"))
    store = tmp_path / "results.sqlite"
    cfg = SweepConfig(preset="mansoori2025", scenarios=["frozen"], heads=["linear"], backbones=["mobilenetv2"],
                      datasets=[str(pneu_subset)], img_size=32, seeds=[0], results=str(store), out=str(tmp_path / "sweep"),
                      fidelity="exact", finetune={"epochs": 1, "batch_size": 16})
    assert run_sweep(cfg)["ran"] == 1
    (row,) = ResultsStore(store).records()
    with sqlite3.connect(store) as con:  # the state a kill right after the row was stored leaves
        con.execute("UPDATE results SET record = ? WHERE run_key = ?",
                    (json.dumps({k: v for k, v in row.items() if k != "fidelity"}), row["run_key"]))
    folder = next((tmp_path / "sweep").rglob("results.json")).parent
    on_disk = json.loads((folder / "results.json").read_text())
    (folder / "results.json").write_text(json.dumps({k: v for k, v in on_disk.items() if k != "fidelity"}))
    assert "fidelity" not in ResultsStore(store).records()[0]
    again = run_sweep(cfg)
    assert again["ran"] == 0
    (back,) = ResultsStore(store).records()
    assert back["fidelity"] == row["fidelity"] and back["fidelity"]["mode"] == "exact"
    assert back["headline_metric"] == row["headline_metric"]
    assert json.loads((folder / "results.json").read_text())["fidelity"] == row["fidelity"]
