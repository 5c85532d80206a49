"""``medfm probe``: train a head on a feature cache, choose on val, report on test.

The train split is first cut to the label budget (``--fraction``, stratified, seeded by ``--seed``).
The record carries a bootstrap 95 % CI of the headline metric on test and, unless turned off, the
per-sample test scores (reports draw ROC curves and seed-pooled CIs from them).

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
from medfm.distributed import pick_device
from medfm.metrics import check_metric_for_task, compute_metrics, stored_scores
from medfm.heads import HEADS
from medfm.probe.tokens import TokenRows
from medfm.protocol import ci_record
from medfm.heads.deit_weights import with_deit_identity
from medfm.identity import preprocessing_record, probe_identity, with_identity
from medfm.results import ResultsStore, finish_run, run_key, start_run
from medfm.targets import label_budget, rows_sha256
from medfm.ui import console

VAL_FROM_TRAIN = 0.15


def split_rows(cache: FeatureCache, seed: int) -> tuple[dict[str, tuple[str, np.ndarray]], str]:
    """Train/val/test as (cache split, row indices); a cache without val gets one carved from train."""
    present = cache.splits
    if "train" not in present or "test" not in present:
        raise MedfmError(f"cache {cache.path} needs train and test splits (has {', '.join(present)})", "re-extract it")
    rows = {s: (s, np.arange(len(cache.labels(s)))) for s in present}
    if "val" in rows and len(rows["val"][1]):
        return rows, "val split from the cache"
    parts = stratified_partition(cache.labels("train"), {"train": 1 - VAL_FROM_TRAIN, "val": VAL_FROM_TRAIN}, seed)
    rows["train"], rows["val"] = ("train", parts["train"]), ("train", parts["val"])
    return rows, f"val = stratified {VAL_FROM_TRAIN:.0%} of train, seed {seed} (cache had no val split)"


def load_splits(cache: FeatureCache, seed: int) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], str]:
    """Train/val/test (features, labels) arrays, val carved as ``split_rows`` does."""
    rows, policy = split_rows(cache, seed)
    return {s: (cache.features(src)[idx], cache.labels(src)[idx]) for s, (src, idx) in rows.items()}, policy


def probe_metric(cfg: ProbeConfig, cache: FeatureCache) -> str:
    metric = cfg.metric or cache.meta["dataset"]["headline_metric"]
    check_metric_for_task(metric, cache.meta["dataset"]["task"])
    return metric


def probe_settings(cfg: ProbeConfig) -> dict:
    """The probe's settings as its key and identity hold them: the deit head's resolved start; ``ci`` only when not
    the default percentile (keys of probes made before the option stay valid)."""
    settings = with_deit_identity(cfg.to_dict())
    if settings.get("ci") == "percentile":
        settings.pop("ci")
    return settings


def probe_run_key(cfg: ProbeConfig, cache: FeatureCache) -> str:
    """The results-store key of this probe: cache fingerprint, head, metric and every setting that matters."""
    settings = probe_settings(cfg) | {"cache": None, "out": None, "results": None, "overwrite": None,
                                                    "device": None}
    for picker in ("dataset", "backbone"):  # which caches a bare `medfm probe` picks; keys made before them stay valid
        settings.pop(picker)
    identity = {"kind": "probe", "cache": cache.meta["fingerprint"], "head": cfg.head, "metric": probe_metric(cfg, cache),
                "settings": settings}
    return run_key(identity)


def _inputs(spec, cache: FeatureCache, rows: dict[str, tuple[str, np.ndarray]], head_name: str) -> dict:
    """What the head reads (its registry entry says) per split: pooled features, or lazily streamed token rows."""
    if spec.reads == "tokens":
        if not cache.has_tokens():
            raise MedfmError(f"the {head_name} head needs patch tokens, and cache {cache.path} has none",
                             "re-extract with `medfm extract ... --tokens`")
        return {s: TokenRows(cache.tokens(src), idx) for s, (src, idx) in rows.items()}
    feats = {src: cache.features(src) for src in {src for src, _ in rows.values()}}
    return {s: feats[src][idx] for s, (src, idx) in rows.items()}


def run_probe(cfg: ProbeConfig, cache: FeatureCache | None = None) -> dict:
    """One probe. ``cache``: the already opened ``cfg.cache`` (a sweep's ``LoadedCache``, read once for all its
    rows); opened here when not given."""
    start = time.perf_counter()
    if cfg.cache is None:
        raise MedfmError("missing --cache", "e.g. `medfm probe --cache <path medfm extract printed>`, or `medfm probe` "
                                            "alone for every cache not probed yet")
    if cache is not None and Path(cfg.cache).resolve() != Path(cache.path).resolve():
        raise ValueError(f"run_probe was handed cache {cache.path} for a probe of {cfg.cache}")
    cache = cache if cache is not None else FeatureCache(cfg.cache)
    ds_meta, bb_meta = cache.meta["dataset"], cache.meta["backbone"]
    task = ds_meta["task"]
    metric = probe_metric(cfg, cache)
    spec = HEADS.get(cfg.head)
    spec.require("probe")
    key = probe_run_key(cfg, cache)
    store = ResultsStore(cfg.results)  # a file that is not a results store is refused before any training
    out, done = start_run(cfg.out, cfg.overwrite, "probe", f"{ds_meta['name']}-{bb_meta['name']}-{cfg.head}", key, store)
    if done is not None:
        console.print(f"[green]stored[/] the finished run in {out} (its row was missing from {store.path})")
        return done

    rows, val_policy = split_rows(cache, cfg.seed)
    labels = {s: cache.labels(src)[idx] for s, (src, idx) in rows.items()}
    keep = label_budget(labels["train"], cfg.fraction, cfg.seed)
    rows["train"] = (rows["train"][0], rows["train"][1][keep])
    labels["train"] = labels["train"][keep]
    device = pick_device(cfg.device)
    head = spec.build_probe(cfg, task, metric, device)
    X = _inputs(spec, cache, rows, cfg.head)
    (y_tr, y_va, y_te) = labels["train"], labels["val"], labels["test"]
    budget = f" (label budget {cfg.fraction:g}, seed {cfg.seed})" if cfg.fraction < 1 else ""
    console.print(f"training {cfg.head} head on {len(y_tr)} train{budget} / {len(y_va)} val samples ({metric} chooses)")
    head.fit(X["train"], y_tr, X["val"], y_va, num_classes=len(ds_meta["classes"]))
    p_val, p_test = head.predict_proba(X["val"]), head.predict_proba(X["test"])
    val = compute_metrics(task, y_va, p_val)
    test = compute_metrics(task, y_te, p_test)
    record = {
        "medfm_version": __version__,
        "kind": "probe",
        "dataset": ds_meta["name"],
        "task": task,
        "classes": ds_meta["classes"],
        "backbone": bb_meta["name"],
        "weights": bb_meta["weights"]["origin"],
        "weights_sha256": bb_meta["weights"]["sha256"],
        "feature": bb_meta["feature"],
        "img_size": bb_meta["preprocessing"]["input_size"][-1],
        "preprocessing": preprocessing_record(bb_meta["preprocessing"]),
        "head": cfg.head,
        "fraction": cfg.fraction,
        "seed": cfg.seed,
        "headline_metric": {"name": metric, "value": test[metric],
                            **ci_record(metric, y_te, p_test, cfg.bootstrap, cfg.ci)},
        "hyperparameters": getattr(head, "best_params_", {}),
        "val": val,
        "test": test,
        "n": {"train": int(len(y_tr)), "val": int(len(y_va)), "test": int(len(y_te))},
        "train_rows_sha256": rows_sha256(rows["train"][1]),
        "val_policy": val_policy,
        "duplicates": cache.meta.get("fingerprint_inputs", {}).get("dataset", {}).get("duplicates"),  # groups kept or dropped
        "cache": str(cache.path),
        "cache_fingerprint": cache.meta["fingerprint"],
        "out": str(out),
    }
    if hasattr(head, "grid_"):
        grid = [g if isinstance(g, tuple) else (g,) for g in head.grid_]
        names = getattr(head, "grid_names", ("value",))
        record["grid"] = [dict(zip(names, g)) | {"val": None if not np.isfinite(s) else float(s)}
                          for g, s in zip(grid, head.val_scores_)]
    if getattr(head, "history_", None):
        record["history"] = head.history_
    if cfg.store_predictions:
        record["predictions"] = {"test": {"y_true": y_te.tolist(), "y_score": stored_scores(p_test)}}
    record["wall_time_s"] = round(time.perf_counter() - start, 3)
    record["run_key"] = key
    with_identity(record, probe_identity(probe_settings(cfg), cache.meta, metric, spec.reads == "tokens"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps({"probe": cfg.to_dict()}, indent=2))
    return finish_run(out, record, store, "probe")
