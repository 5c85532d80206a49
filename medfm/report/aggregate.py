"""Rows of the results store -> groups over seeds: mean ± std and a bootstrap 95 % CI.

A group is (kind, dataset, backbone, head, fraction). Its CI is computed from the stored
per-sample test scores: each bootstrap resample draws one set of test rows and averages the
headline metric over the group's seeds on it (``bootstrap_ci_multi``), so it covers the test-set
sampling error of the number printed. Rows stored without predictions fall back to their own
per-row CI (single seed) or none.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from medfm.protocol import bootstrap_ci_multi, seed_summary

GROUP_KEYS = ("kind", "dataset", "backbone", "head", "fraction")


@dataclass
class Group:
    kind: str
    dataset: str
    backbone: str
    head: str
    fraction: float
    metric: str
    rows: list[dict] = field(default_factory=list)
    mean: float = float("nan")
    std: float = float("nan")
    ci: tuple[float, float] | None = None

    @property
    def seeds(self) -> list[int]:
        return sorted(r.get("seed", 0) for r in self.rows)

    @property
    def label(self) -> str:
        kind = "" if self.kind == "probe" else f" [{self.kind}]"
        return f"{self.backbone} + {self.head}{kind}"


def _kind(r: dict) -> str:
    return r.get("kind", "probe")


def group_rows(records: list[dict], n_boot: int = 1000) -> list[Group]:
    buckets: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        buckets[(_kind(r), r["dataset"], r["backbone"], r["head"], float(r.get("fraction", 1.0)),
                 r["headline_metric"]["name"])].append(r)
    groups = []
    for (kind, ds, bb, head, frac, metric), rows in sorted(buckets.items()):
        g = Group(kind, ds, bb, head, frac, metric, sorted(rows, key=lambda r: r.get("seed", 0)))
        g.mean, g.std = seed_summary([r["headline_metric"]["value"] for r in g.rows])
        g.ci = _group_ci(g, n_boot)
        groups.append(g)
    return groups


def _group_ci(g: Group, n_boot: int) -> tuple[float, float] | None:
    preds = [r.get("predictions", {}).get("test") for r in g.rows]
    if all(preds) and n_boot > 0:
        y = np.asarray(preds[0]["y_true"])
        if all(np.array_equal(np.asarray(p["y_true"]), y) for p in preds):
            return bootstrap_ci_multi(g.metric, y, [np.asarray(p["y_score"]) for p in preds], n_boot, seed=0)
    if len(g.rows) == 1 and g.rows[0]["headline_metric"].get("ci95"):
        return tuple(g.rows[0]["headline_metric"]["ci95"])
    return None


def leaderboard(groups: list[Group]) -> list[Group]:
    """The full-label-budget group of every (kind, dataset, backbone, head), best first per dataset."""
    best: dict[tuple, Group] = {}
    for g in groups:
        key = (g.kind, g.dataset, g.backbone, g.head)
        if key not in best or g.fraction > best[key].fraction:
            best[key] = g
    return sorted(best.values(), key=lambda g: (g.dataset, -np.nan_to_num(g.mean, nan=-1e9)))


def backbone_ranks(board: list[Group]) -> dict[str, float]:
    """Mean rank of each backbone over datasets (its best head/kind per dataset; 1 = best)."""
    per_ds: dict[str, dict[str, float]] = defaultdict(dict)
    for g in board:
        cur = per_ds[g.dataset].get(g.backbone, -np.inf)
        per_ds[g.dataset][g.backbone] = max(cur, np.nan_to_num(g.mean, nan=-np.inf))
    ranks: dict[str, list[int]] = defaultdict(list)
    for scores in per_ds.values():
        for rank, bb in enumerate(sorted(scores, key=lambda b: -scores[b]), start=1):
            ranks[bb].append(rank)
    return dict(sorted(((b, float(np.mean(r))) for b, r in ranks.items()), key=lambda kv: kv[1]))
