"""``medfm probe``: train a head on a feature cache, choose on val, report on test.

Writes ``config.json`` (rerun with ``--config``) and ``results.json`` into the run folder; never
overwrites an earlier run's results unless asked to.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from medfm import __version__
from medfm.cache import FeatureCache
from medfm.config import ProbeConfig
from medfm.data.splits import stratified_partition
from medfm.errors import MedfmError
from medfm.extract.runner import pick_device
from medfm.metrics import check_metric_for_task, compute_metrics
from medfm.paths import runs_root
from medfm.probe.heads import HEADS
from medfm.results import ResultsStore, run_key
from medfm.ui import console

VAL_FROM_TRAIN = 0.15


def load_splits(cache: FeatureCache, seed: int) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], str]:
    """Train/val/test arrays; a cache without val gets one carved (stratified, seeded) from train."""
    data = {s: (cache.features(s), cache.labels(s)) for s in cache.splits}
    if "train" not in data or "test" not in data:
        raise MedfmError(f"cache {cache.path} needs train and test splits (has {', '.join(data)})", "re-extract it")
    if "val" in data and len(data["val"][1]):
        return data, "val split from the cache"
    X, y = data["train"]
    parts = stratified_partition(y, {"train": 1 - VAL_FROM_TRAIN, "val": VAL_FROM_TRAIN}, seed)
    data["train"], data["val"] = (X[parts["train"]], y[parts["train"]]), (X[parts["val"]], y[parts["val"]])
    return data, f"val = stratified {VAL_FROM_TRAIN:.0%} of train, seed {seed} (cache had no val split)"


def run_probe(cfg: ProbeConfig) -> dict:
    start = time.perf_counter()
    cache = FeatureCache(cfg.cache)
    ds_meta, bb_meta = cache.meta["dataset"], cache.meta["backbone"]
    task = ds_meta["task"]
    metric = cfg.metric or ds_meta["headline_metric"]
    check_metric_for_task(metric, task)
    head_factory = HEADS.get(cfg.head)
    out = _run_dir(cfg, ds_meta["name"], bb_meta["name"])

    data, val_policy = load_splits(cache, cfg.seed)
    (X_tr, y_tr), (X_va, y_va), (X_te, y_te) = data["train"], data["val"], data["test"]
    device = pick_device(cfg.device)
    head = head_factory(cfg, task, metric, device)
    console.print(f"training {cfg.head} head on {len(y_tr)} train / {len(y_va)} val samples ({metric} chooses)")
    head.fit(X_tr, y_tr, X_va, y_va, num_classes=len(ds_meta["classes"]))
    val = compute_metrics(task, y_va, head.predict_proba(X_va))
    test = compute_metrics(task, y_te, head.predict_proba(X_te))
    record = {
        "medfm_version": __version__,
        "dataset": ds_meta["name"],
        "task": task,
        "classes": ds_meta["classes"],
        "backbone": bb_meta["name"],
        "weights": bb_meta["weights"]["origin"],
        "weights_sha256": bb_meta["weights"]["sha256"],
        "feature": bb_meta["feature"],
        "img_size": bb_meta["preprocessing"]["input_size"][-1],
        "head": cfg.head,
        "seed": cfg.seed,
        "headline_metric": {"name": metric, "value": test[metric]},
        "hyperparameters": getattr(head, "best_params_", {}),
        "val": val,
        "test": test,
        "n": {"train": int(len(y_tr)), "val": int(len(y_va)), "test": int(len(y_te))},
        "val_policy": val_policy,
        "cache": str(cache.path),
        "cache_fingerprint": cache.meta["fingerprint"],
        "wall_time_s": round(time.perf_counter() - start, 3),
        "out": str(out),
    }
    if hasattr(head, "grid_"):
        record["grid"] = [{"lr": lr, "weight_decay": wd, "val": None if not np.isfinite(s) else float(s)}
                          for (lr, wd), s in zip(head.grid_, head.val_scores_)]
    identity = {"kind": "probe", "cache": cache.meta["fingerprint"], "head": cfg.head, "metric": metric,
                "settings": cfg.to_dict() | {"cache": None, "out": None, "results": None, "overwrite": None,
                                             "device": None}}
    record["run_key"] = run_key(identity)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps({"probe": cfg.to_dict()}, indent=2))
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(out / "results.json")
    store = ResultsStore(cfg.results)
    record["stored"] = store.append(record, record["run_key"], kind="probe")
    record["results_store"] = str(store.path)
    return record


def _run_dir(cfg: ProbeConfig, dataset: str, backbone: str) -> Path:
    if cfg.out:
        out = Path(cfg.out)
        if (out / "results.json").exists() and not cfg.overwrite:
            raise MedfmError(f"{out / 'results.json'} already exists", "pass another --out, or --overwrite to replace it")
        return out
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = runs_root() / "probe" / f"{dataset}-{backbone}-{cfg.head}-{stamp}"
    out, k = base, 1
    while out.exists():  # two runs in the same second get distinct folders
        out, k = base.with_name(f"{base.name}-{k}"), k + 1
    return out
