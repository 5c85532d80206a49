"""Across datasets: average ranks, the Friedman test and the Nemenyi critical difference (Demšar 2006).

An entry here is a leaderboard setup with the dataset taken out of its identity (``mobilenetv2 +
linear`` probed on every dataset is one entry), so it can be ranked on each dataset. The Friedman test
needs a complete table, so the comparison runs over the datasets where every compared entry has a
result. Which entries to compare is chosen to keep the table as large as possible: for each threshold t,
the entries with results on at least t datasets and the datasets where all of them have one; the
threshold giving the most cells (entries x datasets, at least 2 of each) wins, ties going to more
datasets. Every dataset and entry left out is named with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from medfm.cache.fingerprint import fingerprint
from medfm.report.aggregate import Group
from medfm.stats import average_ranks, cd_groups, critical_difference, friedman, nemenyi_q

DATASET_FIELDS = ("dataset", "dataset_sha256", "metric")


def entry_key(g: Group) -> str:
    return fingerprint({k: v for k, v in g.identity.items() if k not in DATASET_FIELDS})


@dataclass
class AcrossDatasets:
    entries: list[str]  # labels, in table column order
    datasets: list[str]
    table: np.ndarray  # [datasets, entries] headline values
    ranks: np.ndarray | None = None
    friedman_stat: float | None = None
    friedman_p: float | None = None
    q: float | None = None
    cd: float | None = None
    groups: list[tuple[int, ...]] = field(default_factory=list)  # cd_groups: bars of the diagram
    left_out_datasets: list[tuple[str, str]] = field(default_factory=list)
    left_out_entries: list[tuple[str, str]] = field(default_factory=list)
    why_not: str = ""  # set when no ranking could be made

    @property
    def drawable(self) -> bool:
        return self.ranks is not None and self.cd is not None


def _choose(present: dict[str, set[str]], datasets: list[str]) -> tuple[list[str], list[str]]:
    best: tuple[int, int, list[str], list[str]] = (0, 0, [], [])
    for t in range(len(datasets), 0, -1):
        entries = [e for e, ds in present.items() if len(ds) >= t]
        kept = [d for d in datasets if all(d in present[e] for e in entries)]
        if len(entries) >= 2 and len(kept) >= 2:
            score = (len(entries) * len(kept), len(kept))
            if score > best[:2]:
                best = (*score, entries, kept)
    return best[2], best[3]


def across_datasets(board: list[Group]) -> AcrossDatasets:
    values: dict[str, dict[str, float]] = {}  # entry key -> dataset -> value
    labels: dict[str, str] = {}
    for g in board:
        if not np.isfinite(g.mean):
            continue
        key = entry_key(g)
        values.setdefault(key, {})[g.dataset] = g.mean
        labels.setdefault(key, g.title)
    datasets = sorted({g.dataset for g in board})
    present = {k: set(v) for k, v in values.items()}
    _unique_labels(labels)
    if len(datasets) < 2:
        return AcrossDatasets([], datasets, np.zeros((0, 0)), why_not=f"{len(datasets)} dataset in the report: ranks "
                              "across datasets need at least 2")
    chosen, kept = _choose(present, datasets)
    if not chosen:
        return AcrossDatasets([], datasets, np.zeros((0, 0)), why_not="no two entries have results on the same two "
                              "datasets", left_out_datasets=[(d, "no two entries with results on it and another dataset")
                                                             for d in datasets])
    table = np.array([[values[e][d] for e in chosen] for d in kept])
    out = AcrossDatasets([labels[e] for e in chosen], kept, table)
    for d in datasets:
        if d not in kept:
            missing = [labels[e] for e in chosen if d not in present[e]]
            out.left_out_datasets.append((d, "no result for " + ", ".join(missing)))
    for e in present:
        if e not in chosen:
            out.left_out_entries.append((labels[e], f"results on {len(present[e])} of the {len(datasets)} datasets "
                                                    f"({', '.join(sorted(present[e]))})"))
    k, n = len(chosen), len(kept)
    out.ranks = average_ranks(table)
    if k >= 3:
        f = friedman(table)
        out.friedman_stat, out.friedman_p = f.statistic, f.p_value
    out.q, out.cd = nemenyi_q(k), critical_difference(k, n)
    out.groups = cd_groups(out.ranks, out.cd)
    return out


def _unique_labels(labels: dict[str, str]) -> None:
    seen: dict[str, list[str]] = {}
    for key, label in labels.items():
        seen.setdefault(label, []).append(key)
    for label, keys in seen.items():
        if len(keys) > 1:
            for key in keys:
                labels[key] = f"{label} #{key[:6]}"
