"""Sweeps check every row before any work and can keep going (issue 13.5); `medfm metrics` (13.6).

Real backbones (MobileNetV2 with ImageNet weights, DINOv2 ViT-S/14 with real weights) on the real
128-image PneumoniaMNIST subset; the MobileNetV2 rows probe the session's tiny cache folder.
"""

import json

import pytest

from medfm.config import SweepConfig
from medfm.errors import MedfmError
from medfm.results import ResultsStore
from medfm.sweep import raise_for_failures, run_sweep


def grid(pneu_subset, dinov2_s_weights, tmp_path, **kw) -> SweepConfig:
    return SweepConfig(**{"backbones": ["mobilenetv2", "dinov2_vits14"], "datasets": [str(pneu_subset)],
                          "weights": {"dinov2_vits14": str(dinov2_s_weights)}, "seeds": [0, 1], "img_size": 32,
                          "probe": {"lrs": [1e-2], "wds": [1e-4], "epochs": 3, "bootstrap": 0},
                          "results": str(tmp_path / "results.sqlite"), "out": str(tmp_path / "sweep"), **kw})


def test_a_sweep_with_a_bad_row_stops_before_any_work(pneu_subset, dinov2_s_weights, tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("MEDFM_CACHE", str(tmp_path / "cache"))
    with pytest.raises(MedfmError, match=r"2 of 4 sweep rows cannot run, so none was run; first: .*dinov2_vits14.*"
                                         r"not a multiple of dinov2_vits14's patch size 14.*--keep-going"):
        run_sweep(grid(pneu_subset, dinov2_s_weights, tmp_path))
    assert "building" not in capfd.readouterr().err  # no model was built
    # no store was made (checking the dataset may leave its content-hash sidecar under the cache root)
    assert not _stores(tmp_path / "cache") and len(ResultsStore(tmp_path / "results.sqlite")) == 0
    for bad, match in (({"datasets": [str(tmp_path / "nowhere.csv")]}, "nowhere.csv"),
                       ({"weights": {"dinov2_vits14": str(tmp_path / "missing.safetensors")},
                         "img_size": {"dinov2_vits14": 28, "mobilenetv2": 32}}, "missing.safetensors"),
                       ({"backbones": ["mobilenetv2", "dinov2_vits14"], "img_size": {"mobilenetv2": 32, "dinov2_vits": 28}},
                        "not one of the sweep's backbones")):
        with pytest.raises(MedfmError, match=match):
            run_sweep(grid(pneu_subset, dinov2_s_weights, tmp_path, **bad))
    assert not _stores(tmp_path / "cache")


def _stores(root) -> list:
    """Feature / pixel stores (and their working folders) under a cache root."""
    return [p for p in root.rglob("*") if p.suffix in (".zarr", ".h5") or ".creating" in p.name] if root.exists() else []


def test_per_backbone_image_sizes_pass_the_checks(pneu_subset, dinov2_s_weights, tmp_path):
    sizes = "dinov2_vits14=28,mobilenetv2=32"
    plan = run_sweep(grid(pneu_subset, dinov2_s_weights, tmp_path, img_size=sizes, plan_only=True))
    assert plan["grid"]["img_size"] == {"dinov2_vits14": 28, "mobilenetv2": 32}
    assert set(plan["status"].values()) == {"ok"} and plan["failed"] == []


def test_keep_going_records_the_failing_rows_and_finishes_the_rest(pneu_subset, dinov2_s_weights, pneu_tiny_cache,
                                                                   tmp_path, monkeypatch):
    monkeypatch.setenv("MEDFM_CACHE", str(pneu_tiny_cache.parent.parent))  # the mobilenetv2 rows reuse the tiny cache
    summary = run_sweep(grid(pneu_subset, dinov2_s_weights, tmp_path, keep_going=True))
    assert [(f["backbone"], f["seed"]) for f in summary["failed"]] == [("dinov2_vits14", 0), ("dinov2_vits14", 1)]
    assert all("patch size 14" in f["error"] for f in summary["failed"])
    assert summary["probes"] == {"planned": 4, "ran": 2, "skipped": 0}
    assert summary["caches"] == {f"{pneu_subset}/mobilenetv2": str(pneu_tiny_cache)}
    assert sorted((r["backbone"], r["seed"]) for r in ResultsStore(tmp_path / "results.sqlite").records()) == [
        ("mobilenetv2", 0), ("mobilenetv2", 1)]
    with pytest.raises(MedfmError, match="2 of 4 sweep rows failed .first: .*patch size 14"):
        raise_for_failures(summary)  # what the CLI exits with
    # the finished rows' folders gathered into another store: stored from their results.json, not trained again
    other = run_sweep(grid(pneu_subset, dinov2_s_weights, tmp_path, backbones=["mobilenetv2"],
                           results=str(tmp_path / "other.sqlite")))
    assert other["probes"] == {"planned": 2, "ran": 0, "skipped": 2} and other["failed"] == []
    assert len(ResultsStore(tmp_path / "other.sqlite")) == 2


def test_cli_keep_going_with_failures_prints_the_summary_and_exits_2_with_one_line(cli, pneu_subset, tmp_path):
    proc = cli("sweep", "--backbones", "dinov2_vits14", "--datasets", pneu_subset, "--seeds", "0,1", "--img-size", 30,
               "--results", tmp_path / "results.sqlite", "--keep-going", "--json", ok=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("medfm: error:")]
    assert len(errors) == 1 and "2 of 2 sweep rows failed" in errors[0] and "patch size 14" in errors[0]
    assert "Traceback" not in proc.stderr and len(json.loads(proc.stdout)["failed"]) == 2


def test_medfm_metrics_lists_the_registry_the_unknown_metric_error_points_at():
    from typer.testing import CliRunner

    from medfm.cli import app
    from medfm.metrics import METRICS, check_metric_for_task

    out = CliRunner().invoke(app, ["metrics", "--json"])
    assert out.exit_code == 0, out.output
    listed = json.loads(out.output)["metrics"]
    assert [m["name"] for m in listed] == list(METRICS) and len(listed) == len(METRICS)
    auc = next(m for m in listed if m["name"] == "roc_auc")
    assert auc["tasks"] == ["binary", "multiclass", "multilabel"] and "ROC" in auc["description"]
    with pytest.raises(MedfmError, match=f"`medfm metrics` lists all {len(METRICS)}"):
        check_metric_for_task("auroc", "binary")
    table = CliRunner().invoke(app, ["metrics"])
    assert table.exit_code == 0 and all(m["name"] in table.output for m in listed)
