"""Seeded, stratified splits that are identical on every machine.

Uses numpy's PCG64 generator, whose stream is stable across numpy versions, so the same seed gives
byte-identical split files everywhere. Multilabel data is split randomly (not stratified).
"""

from __future__ import annotations

import numpy as np


def stratified_partition(labels: np.ndarray, fractions: dict[str, float], seed: int) -> dict[str, np.ndarray]:
    """Partition sample indices into named parts with the given fractions, per class.

    Every class with at least as many samples as parts gets at least one sample in each part, so
    small classes are never missing from val or test. Returns sorted index arrays.
    """
    names = list(fractions)
    fr = np.array([fractions[n] for n in names], dtype=np.float64)
    if not np.isclose(fr.sum(), 1.0) or (fr < 0).any():
        raise ValueError(f"split fractions must be non-negative and sum to 1, got {fractions}")
    rng = np.random.Generator(np.random.PCG64(seed))
    strata = labels if labels.ndim == 1 else np.zeros(len(labels), dtype=np.int64)
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for cls in np.unique(strata):
        idx = np.flatnonzero(strata == cls)
        idx = idx[rng.permutation(len(idx))]
        counts = _allocate(len(idx), fr)
        bounds = np.concatenate([[0], np.cumsum(counts)])
        for k, n in enumerate(names):
            parts[n].append(idx[bounds[k] : bounds[k + 1]])
    return {n: np.sort(np.concatenate(p)) for n, p in parts.items()}


def _allocate(n: int, fr: np.ndarray) -> np.ndarray:
    """Split n items by fractions (largest remainder), with one each first when n allows."""
    k = len(fr)
    base = np.zeros(k, dtype=np.int64)
    if n >= k:
        base += (fr > 0).astype(np.int64)
    rest = n - base.sum()
    exact = fr * rest
    counts = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: rest - counts.sum()]] += 1
    return base + counts


def grouped_partition(labels: np.ndarray, groups: list, fractions: dict[str, float], seed: int) -> dict[str, np.ndarray]:
    """Like ``stratified_partition``, but whole groups (patients, lesions) go to one part.

    Groups are stratified by their most common label (multilabel: not stratified); fractions
    count groups, not samples. A row whose group is None is a group of its own.
    """
    keys = np.array([f"\0{i}" if g is None else str(g) for i, g in enumerate(groups)], dtype=object)
    uniq, inverse = np.unique(keys.astype(str), return_inverse=True)
    if labels.ndim == 1:
        n_cls = int(labels.max()) + 1 if len(labels) else 1
        votes = np.zeros((len(uniq), n_cls), dtype=np.int64)
        np.add.at(votes, (inverse, labels), 1)
        group_labels = votes.argmax(axis=1)
    else:
        group_labels = np.zeros(len(uniq), dtype=np.int64)
    group_parts = stratified_partition(group_labels, fractions, seed)
    member = np.empty(len(uniq), dtype=object)
    for name, gidx in group_parts.items():
        member[gidx] = name
    return {name: np.flatnonzero(member[inverse] == name) for name in fractions}


def partition(labels: np.ndarray, fractions: dict[str, float], seed: int, groups: list | None = None,
              stratified: bool = True) -> dict[str, np.ndarray]:
    """The one entry point: stratified or plain random, grouped when group ids are given."""
    strata = labels if stratified else np.zeros(len(labels), dtype=np.int64)
    if groups is not None:
        return grouped_partition(strata, groups, fractions, seed)
    return stratified_partition(strata, fractions, seed)


def split_table(dataset) -> bytes:
    """The split file: one ``split,id,label`` line per sample, in split then dataset order.

    Same dataset and seed -> byte-identical bytes; its sha256 is part of the dataset identity,
    and extract writes it next to the cache as ``<cache>.splits.csv``.
    """
    import csv
    import io

    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(["split", "id", "label"])
    for name, split in dataset.splits.items():
        for sid, lab in zip(split.ids, split.labels):
            out.writerow([name, sid, ";".join(str(int(v)) for v in lab) if np.ndim(lab) else dataset.classes[int(lab)]])
    return buf.getvalue().encode()


def split_file_path(cache_path):
    """``<cache>.splits.csv``, beside the cache it describes."""
    from pathlib import Path

    p = Path(cache_path)
    return p.with_name(p.name + ".splits.csv")


def write_split_file(dataset, path) -> None:
    """Write the split file (same bytes for the same dataset and seed; the fingerprint covers its sha256)."""
    from pathlib import Path

    path = Path(path)
    data = split_table(dataset)
    if path.is_file() and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
