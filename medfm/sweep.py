"""``medfm sweep``: plan a backbones x datasets x heads x label budgets x seeds grid and run it.

Each (backbone, dataset) is extracted once (``run_extract``: a finished cache is reused, an
unfinished one resumed); every probe then runs off that cache. A probe whose results-store key
is already present is skipped, so a killed sweep is simply rerun: rows stored before the kill
stay as they are, nothing is duplicated, the rest are computed.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from pathlib import Path

from medfm.config import ExtractConfig, ProbeConfig, SweepConfig
from medfm.errors import MedfmError
from medfm.paths import runs_root
from medfm.presets import PRESETS
from medfm.probe.heads import HEADS
from medfm.results import ResultsStore
from medfm.ui import console, progress


@dataclass(frozen=True)
class Job:
    backbone: str
    dataset: str
    head: str
    fraction: float
    seed: int

    @property
    def label(self) -> str:
        return f"{self.dataset}/{self.backbone}/{self.head} f={self.fraction:g} seed={self.seed}"


def resolve_grid(cfg: SweepConfig) -> dict:
    """The grid to run: a preset's lists, overridden by any list given explicitly."""
    preset = PRESETS.get(cfg.preset) if cfg.preset else None

    def pick(mine, theirs, default):
        return list(mine) or list(theirs) or list(default)

    grid = {
        "backbones": pick(cfg.backbones, preset.backbones if preset else (), ()),
        "datasets": pick(cfg.datasets, preset.datasets if preset else (), ()),
        "heads": pick(cfg.heads, preset.heads if preset else (), ("linear",)),
        "fractions": pick(cfg.fractions, preset.fractions if preset else (), (1.0,)),
        "seeds": pick(cfg.seeds, preset.seeds if preset else (), (0,)),
        "img_size": cfg.img_size or (preset.img_size if preset else None),
        "probe": {**(preset.probe if preset else {}), **cfg.probe},
        "scenarios": list(preset.scenarios) if preset else ["frozen"],
    }
    for key in ("backbones", "datasets"):
        if not grid[key]:
            raise MedfmError(f"the sweep has no {key}", f"pass --{key} a,b or --preset NAME (`medfm sweep --list-presets`)")
    for h in grid["heads"]:
        HEADS.get(h)
    bad = [f for f in grid["fractions"] if not 0 < f <= 1]
    if bad:
        raise MedfmError(f"label fraction {bad[0]} is out of range", "use fractions in (0, 1], e.g. --fractions 0.01,0.1,1.0")
    return grid


def plan_jobs(grid: dict) -> list[Job]:
    return [Job(b, d, h, float(f), int(s)) for d, b, h, f, s in
            itertools.product(grid["datasets"], grid["backbones"], grid["heads"], grid["fractions"], grid["seeds"])]


def needs_tokens(heads: list[str]) -> bool:
    probe = ProbeConfig(cache="-")
    return any(getattr(HEADS.get(h)(probe, "binary", "roc_auc", "cpu"), "input", "features") == "tokens" for h in heads)


def _registered(grid: dict) -> dict[tuple[str, str], str]:
    from medfm.backbones import BACKBONES
    from medfm.data import DATASETS

    status = {}
    for d, b in itertools.product(grid["datasets"], grid["backbones"]):
        missing = ([f"backbone {b} not registered"] if b not in BACKBONES else []) + \
                  ([f"dataset {d} not registered"] if d not in DATASETS and not Path(d).exists() else [])
        status[(b, d)] = "; ".join(missing) or "ok"
    return status


def run_sweep(cfg: SweepConfig) -> dict:
    grid = resolve_grid(cfg)
    jobs = plan_jobs(grid)
    store = ResultsStore(cfg.results)
    status = _registered(grid)
    tokens = cfg.tokens if cfg.tokens is not None else needs_tokens(grid["heads"])
    name = cfg.preset or "sweep"
    out_root = Path(cfg.out) if cfg.out else runs_root() / "sweep" / name
    n_pairs = len(grid["datasets"]) * len(grid["backbones"])
    console.print(f"sweep plan: {len(grid['backbones'])} backbones x {len(grid['datasets'])} datasets x "
                  f"{len(grid['heads'])} heads x {len(grid['fractions'])} label budgets x {len(grid['seeds'])} seeds "
                  f"= {len(jobs)} probes over {n_pairs} caches (results: {store.path})")
    from medfm.backbones import BACKBONES
    from medfm.data import DATASETS

    missing = [b for b in grid["backbones"] if b not in BACKBONES] + \
              [d for d in grid["datasets"] if d not in DATASETS and not Path(d).exists()]
    if missing:
        console.print(f"  [yellow]not registered yet (running them stops with the registry's error): {', '.join(missing)}[/]")
    if "unfrozen" in grid["scenarios"]:
        console.print(f"  unfrozen scenario: {len(grid['backbones']) * len(grid['datasets']) * len(grid['heads'])} "
                      "fine-tune runs belong to `medfm finetune` (not run by sweep)")
    summary = {"preset": cfg.preset, "planned": len(jobs), "ran": 0, "skipped": 0, "results": str(store.path),
               "grid": {k: v for k, v in grid.items() if k != "probe"}, "plan": [j.__dict__ for j in jobs],
               "caches": {}}
    if cfg.plan_only:
        summary["status"] = {f"{d}/{b}": st for (b, d), st in status.items()}
        return summary

    from medfm.cache import FeatureCache
    from medfm.extract import run_extract
    from medfm.probe.runner import probe_run_key, run_probe

    start = time.perf_counter()
    with progress() as bar:
        task = bar.add_task("sweep", total=len(jobs), rate="")
        for (d, b), pair_jobs in itertools.groupby(jobs, key=lambda j: (j.dataset, j.backbone)):
            pair_jobs = list(pair_jobs)
            ex = run_extract(ExtractConfig(backbone=b, dataset=d, weights=cfg.weights.get(b), data_root=cfg.data_root,
                                           img_size=grid["img_size"], tokens=tokens, batch_size=cfg.extract_batch_size,
                                           device=cfg.device))
            summary["caches"][f"{d}/{b}"] = str(ex.cache)
            cache = FeatureCache(ex.cache)
            for job in pair_jobs:
                pcfg = ProbeConfig(**{**grid["probe"], "cache": str(ex.cache), "head": job.head, "fraction": job.fraction,
                                      "seed": job.seed, "results": str(store.path), "device": cfg.device, "overwrite": True,
                                      "out": str(out_root / d / b / f"{job.head}-f{job.fraction:g}-s{job.seed}")})
                if store.has(probe_run_key(pcfg, cache)):
                    summary["skipped"] += 1
                else:
                    rec = run_probe(pcfg)
                    summary["ran"] += 1
                    console.print(f"  {job.label}: {rec['headline_metric']['name']} {rec['headline_metric']['value']:.4f}")
                bar.update(task, advance=1, rate=f"{summary['ran']} run, {summary['skipped']} already done")
    summary["seconds"] = round(time.perf_counter() - start, 2)
    console.print(f"[green]sweep done[/]: {summary['ran']} probes run, {summary['skipped']} already in {store.path}")
    return summary
