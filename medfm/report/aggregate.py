"""Rows of the results store -> groups over seeds: mean ± std and a bootstrap 95 % CI.

A group is one run identity (``medfm.identity``: everything that decides a row's number except the
seed), so only seeds of the same experiment are ever averaged. Its label names the backbone and
head plus only what sets the group apart from the others in the report (``mobilenetv2 (random
init) + linear``, ``dinov2_vits14 @224 u2 + deit``).

The CI is computed from the stored per-sample test scores: each bootstrap resample draws one set of
test rows and averages the headline metric over the group's seeds on it (``bootstrap_ci_multi``),
so it covers the test-set sampling error of the number printed. Rows stored without predictions fall
back to their own per-row CI (single seed) or none.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from medfm.identity import backbone_label, distinguishing_fields, identity_of, identity_sha256, run_label
from medfm.protocol import bootstrap_ci_multi, seed_summary


@dataclass
class Group:
    identity: dict
    key: str  # identity_sha256: the group key
    rows: list[dict] = field(default_factory=list)
    mean: float = float("nan")
    std: float = float("nan")
    ci: tuple[float, float] | None = None
    label: str = ""  # backbone + head + the distinguishing parts of the identity
    backbone_label: str = ""  # the backbone + its distinguishing parts (what the ranking ranks)

    kind = property(lambda self: self.identity["kind"])
    dataset = property(lambda self: self.identity["dataset"])
    backbone = property(lambda self: self.identity["backbone"])
    head = property(lambda self: self.identity["head"])
    fraction = property(lambda self: float(self.identity["fraction"]))
    metric = property(lambda self: self.identity["metric"])

    @property
    def title(self) -> str:
        """The label, with the kind when it is not a probe (figure legends have no kind column)."""
        return self.label + ("" if self.kind == "probe" else f" [{self.kind}]")

    @property
    def seeds(self) -> list[int]:
        return sorted(r.get("seed", 0) for r in self.rows)

    @property
    def setup(self) -> dict:
        """The identity without the label budget: groups of one setup form a label-efficiency curve."""
        return {k: v for k, v in self.identity.items() if k != "fraction"}


def group_rows(records: list[dict], n_boot: int = 1000) -> list[Group]:
    buckets: dict[str, list[dict]] = defaultdict(list)
    identities: dict[str, dict] = {}
    for r in records:
        ident = identity_of(r)
        key = identity_sha256(ident)
        identities[key] = ident
        buckets[key].append(r)
    groups = []
    for key, rows in buckets.items():
        g = Group(identities[key], key, sorted(rows, key=lambda r: r.get("seed", 0)))
        g.mean, g.std = seed_summary([r["headline_metric"]["value"] for r in g.rows])
        g.ci = _group_ci(g, n_boot)
        groups.append(g)
    _label(groups)
    return sorted(groups, key=lambda g: (g.kind, g.dataset, g.label, g.fraction, g.metric))


def _label(groups: list[Group]) -> None:
    """Labels showing only what distinguishes groups; a hash where two would still read the same."""
    by_kind: dict[str, list[Group]] = defaultdict(list)
    for g in groups:
        by_kind[g.kind].append(g)
    for same_kind in by_kind.values():  # probes are told apart from probes, fine-tunes from fine-tunes
        varying = distinguishing_fields([g.identity for g in same_kind])
        for g in same_kind:
            g.label, g.backbone_label = run_label(g.identity, varying), backbone_label(g.identity, varying)
    seen: dict[tuple, set[str]] = defaultdict(set)
    for g in groups:
        seen[(g.kind, g.dataset, g.metric, g.fraction, g.label)].add(g.key)
    for g in groups:
        if len(seen[(g.kind, g.dataset, g.metric, g.fraction, g.label)]) > 1:
            g.label += f" #{g.key[:6]}"


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
    """The largest-label-budget group of every setup (identity without the budget), best first per dataset."""
    from medfm.cache.fingerprint import fingerprint

    best: dict[str, Group] = {}
    for g in groups:
        key = fingerprint(g.setup)
        if key not in best or g.fraction > best[key].fraction:
            best[key] = g
    return sorted(best.values(), key=lambda g: (g.dataset, -np.nan_to_num(g.mean, nan=-1e9)))


def backbone_ranks(board: list[Group]) -> dict[str, float]:
    """Mean rank of each backbone (with what sets it apart: weights, image size, ...) over datasets
    (its best head/kind per dataset; 1 = best)."""
    per_ds: dict[str, dict[str, float]] = defaultdict(dict)
    for g in board:
        cur = per_ds[g.dataset].get(g.backbone_label, -np.inf)
        per_ds[g.dataset][g.backbone_label] = max(cur, np.nan_to_num(g.mean, nan=-np.inf))
    ranks: dict[str, list[int]] = defaultdict(list)
    for scores in per_ds.values():
        for rank, bb in enumerate(sorted(scores, key=lambda b: -scores[b]), start=1):
            ranks[bb].append(rank)
    return dict(sorted(((b, float(np.mean(r))) for b, r in ranks.items()), key=lambda kv: kv[1]))
