"""``medfm demo --sam``: a natural-image SAM against its medical fine-tune, and DINOv2-S, on real data.

MobileSAM (SAM distilled into TinyViT on natural images, 1024 px), LiteMedSAM (the same encoder
distilled by MedSAM's authors on medical images, 256 px) and DINOv2 ViT-S/14 (224 px), all with
real weights, frozen, each at its native input size and with its authors' preprocessing; linear
and kNN probes on real BUSI (breast ultrasound) and real Kermany chest x-rays; one leaderboard.

The SAM encoders cost seconds per image on a CPU at their native sizes, so the demo runs on a
stratified subset: ``per_class`` images of each class (of each official split for Kermany, whose
train/test split is kept; BUSI has none, so medfm makes its seeded 70/15/15 split). The subsets
are written as CSV manifests (absolute image paths) under ``$MEDFM_RUNS/demo_sam``, named by size,
so a rerun reuses the same rows and the caches of a finished run.
"""

from __future__ import annotations

import csv
import random
import time
from collections import defaultdict
from pathlib import Path

from medfm.config import ExtractConfig, ProbeConfig
from medfm.data.zoo import DATASETS
from medfm.demo import demo_weights
from medfm.errors import MedfmError
from medfm.extract import run_extract
from medfm.paths import require_data_root, runs_root
from medfm.probe import run_probe

SAM_DEMO_BACKBONES = ("mobilesam", "litemedsam", "dinov2_vits14")
SAM_DEMO_DATASETS = ("busi", "kermany_cxr_224")
SAM_DEMO_HEADS = ("linear", "knn")
SAM_DEMO_PER_CLASS = 40
SUBSET_SEED = 0


def subset_manifest(dataset: str, per_class: int, data_root: str | None, out_dir: Path) -> Path:
    """A stratified subset of a registered manifest dataset: ``per_class`` rows per (split, class), seed 0."""
    manifest = require_data_root(data_root) / DATASETS.get(dataset).location
    if not manifest.is_file():
        raise MedfmError(f"{manifest} not found (the demo needs real {dataset})", "pass --data-root to the folder holding it")
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row.get("split") or "", row["label"])].append(row)
    rng = random.Random(SUBSET_SEED)
    picked = []
    for key in sorted(groups):
        members = groups[key]
        picked += rng.sample(members, min(per_class, len(members)))
    target = out_dir / f"{dataset}_{per_class}_per_class" / "labels.csv"
    target.parent.mkdir(parents=True, exist_ok=True)
    fields = ["path", "label"] + (["split"] if "split" in rows[0] else [])
    tmp = target.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fields, extrasaction="ignore")
        w.writeheader()
        for row in picked:
            w.writerow({**row, "path": str((manifest.parent / row["path"]).resolve())})
    tmp.replace(target)
    return target


def run_sam_demo(per_class: int = SAM_DEMO_PER_CLASS, data_root: str | None = None, weights: str | None = None,
                 backbones=SAM_DEMO_BACKBONES, datasets=SAM_DEMO_DATASETS, heads=SAM_DEMO_HEADS,
                 batch_size: int = 8) -> list[dict]:
    """Extract every (backbone, dataset) once, probe each cache with every head; one record per probe."""
    dinov2 = demo_weights(weights) if "dinov2_vits14" in backbones else None
    out_dir = runs_root() / "demo_sam"
    records = []
    for dataset in datasets:
        manifest = subset_manifest(dataset, per_class, data_root, out_dir)
        for name in backbones:
            t0 = time.perf_counter()
            ex = run_extract(ExtractConfig(backbone=name, dataset=str(manifest), batch_size=batch_size,
                                           weights=dinov2 if name == "dinov2_vits14" else None))
            seconds = ex.seconds if ex.extracted else time.perf_counter() - t0
            for head in heads:
                rec = run_probe(ProbeConfig(cache=str(ex.cache), head=head))
                records.append({**rec, "demo_dataset": dataset, "extract_seconds": round(seconds, 1),
                                "images": ex.extracted if ex.extracted else None, "reused": ex.reused})
    return records


def sam_demo_table(records: list[dict], per_class: int):
    from rich.table import Table

    t = Table(title=f"frozen MobileSAM vs LiteMedSAM vs DINOv2-S, {per_class} images per class (per split), real data")
    for col in ("dataset", "head", "backbone", "px", "test ROC-AUC", "95% CI", "test bal. acc", "extract s"):
        t.add_column(col, justify="right" if col in ("px", "test ROC-AUC", "95% CI", "test bal. acc", "extract s") else "left")
    order = sorted(records, key=lambda r: (r["demo_dataset"], r["head"], -r["headline_metric"]["value"]))
    for r in order:
        ci = r["headline_metric"].get("ci95") or r.get("test_ci95", {}).get(r["headline_metric"]["name"])
        ci_text = f"{ci[0]:.3f}-{ci[1]:.3f}" if ci else "-"
        t.add_row(r["demo_dataset"], r["head"], r["backbone"], str(r["img_size"]), f"{r['headline_metric']['value']:.3f}",
                  ci_text, f"{r['test'].get('balanced_accuracy', float('nan')):.3f}",
                  "reused" if r["reused"] else f"{r['extract_seconds']:.0f}")
    return t
