"""Bare ``medfm probe``: probe every finished cache under ``$MEDFM_CACHE`` that this probe has not run on yet.

"Not yet" is the results store's own test: the probe's run key (cache fingerprint, head, metric and
every setting) is not in the store. ``--dataset`` / ``--backbone`` narrow the caches by the names
in their metadata, so `medfm extract` followed by `medfm probe` needs no path copied by hand.
"""

from __future__ import annotations

from pathlib import Path

from medfm.cache import FORMAT, FeatureCache
from medfm.cache.store import read_meta
from medfm.config import ProbeConfig
from medfm.errors import MedfmError
from medfm.paths import cache_root
from medfm.results import ResultsStore
from medfm.ui import console

CACHE_SUFFIXES = (".zarr", ".h5")


def finished_caches(root: Path) -> list[tuple[Path, dict]]:
    """Finished feature caches one or two levels under ``root`` (``<dataset>/<backbone>-...zarr``), with their metadata."""
    found = []
    for path in sorted({*root.glob("*"), *root.glob("*/*")}):
        if path.suffix not in CACHE_SUFFIXES:
            continue
        meta = read_meta(path) or {}
        if meta.get("format") == FORMAT and meta.get("complete"):
            found.append((path, meta))
    return found


def _dataset_matches(name: str, wanted: str) -> bool:
    from medfm.data import DATASETS

    wanted = DATASETS.canonical(wanted)
    return name == wanted or (":" not in wanted and name.split(":")[0] == wanted)


def pick_caches(cfg: ProbeConfig) -> list[Path]:
    root = cache_root()
    caches = finished_caches(root)
    picked = [p for p, m in caches
              if (cfg.dataset is None or _dataset_matches(m["dataset"]["name"], cfg.dataset))
              and (cfg.backbone is None or m["backbone"]["name"] == cfg.backbone)]
    if not picked:
        which = " and ".join(f"{k} {v}" for k, v in (("dataset", cfg.dataset), ("backbone", cfg.backbone)) if v)
        what = f" of {which}" if which else ""
        raise MedfmError(f"no finished feature cache{what} under {root} ($MEDFM_CACHE; {len(caches)} there in all)",
                         "run `medfm extract --backbone B --dataset D` first, or pass --cache PATH")
    return picked


def probe_every_cache(cfg: ProbeConfig) -> dict:
    """Probe each picked cache whose run key is not stored; the summary says what ran and what was already there."""
    from medfm.probe.runner import probe_run_key, run_probe

    if cfg.out is not None:
        raise MedfmError("--out names one run folder, and `medfm probe` without --cache may probe many caches",
                         "drop --out (each probe gets its own folder), or pass --cache")
    store = ResultsStore(cfg.results)
    summary = {"probed": [], "already_stored": [], "results": str(store.path), "cache_root": str(cache_root())}
    picked = pick_caches(cfg)
    console.print(f"probe ({cfg.head}): {len(picked)} finished cache(s) under {cache_root()}")
    for path in picked:
        one = cfg.model_copy(update={"cache": str(path), "dataset": None, "backbone": None})
        if store.has(probe_run_key(one, FeatureCache(path))):
            summary["already_stored"].append(str(path))
            console.print(f"  already in {store.path.name}: {path.name}")
            continue
        record = run_probe(one)
        metric = record["headline_metric"]
        summary["probed"].append({"cache": str(path), "dataset": record["dataset"], "backbone": record["backbone"],
                                  "metric": metric["name"], "value": metric["value"], "out": record["out"]})
        console.print(f"  probed {record['dataset']} / {record['backbone']}: {metric['name']} {metric['value']:.4f}")
    return summary
