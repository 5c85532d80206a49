"""Identical images under two names: found by content digest, then refused, reported or dropped.

A **duplicate group** is two or more samples with the same image bytes (file content for manifest
and folder datasets, array row for MedMNIST ``.npz``). A group whose copies sit in more than one
split **leaks** (the model is tested on what it trained on, or chose hyper-parameters on); one
whose copies carry different labels **contradicts** itself. Published datasets hold such groups
(BUSI, Kermany, PneumoniaMNIST, BreastMNIST, measured in the README), so the ``--duplicates``
policy decides:

- ``error`` (default for user manifests and folders): stop, naming the rows of the first group;
- ``warn`` (default for registry datasets, which stay as published): keep every sample, and say
  how many groups there are on the log, in the dataset notes and in the identity (so in every
  cache's metadata and every run record);
- ``drop``: a contradicting group loses every copy (its label cannot be trusted); a leaking one
  keeps its copies in the earliest split (train, then val) and loses those in the later splits,
  which are the ones that would leak. What was dropped is part of the identity.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from medfm.data.base import SPLITS
from medfm.errors import MedfmError

POLICIES = ("error", "warn", "drop")
USER_DEFAULT, REGISTRY_DEFAULT = "error", "warn"


@dataclass(frozen=True)
class Copy:
    """One sample of a duplicate group: its split, index in that split, label (as text) and where it comes from."""

    split: str
    index: int
    label: str
    where: str


@dataclass
class DuplicateGroup:
    digest: str
    copies: list[Copy] = field(default_factory=list)

    @property
    def leaking(self) -> bool:
        return len({c.split for c in self.copies}) > 1

    @property
    def contradictory(self) -> bool:
        return len({c.label for c in self.copies}) > 1

    def kind(self) -> str:
        kinds = [k for k, on in (("across splits", self.leaking), ("different labels", self.contradictory)) if on]
        return " and ".join(kinds) or "same split and label"

    def describe(self) -> str:
        return f"{' = '.join(f'{c.where} ({c.split}, {c.label})' for c in self.copies)}: {self.kind()}"


def find_groups(digests: dict[str, list[str]], labels: dict[str, list[str]], where) -> list[DuplicateGroup]:
    """Groups of equal digests; ``digests[split][i]`` and ``labels[split][i]`` per sample, ``where(split, i)`` names it."""
    by_digest: dict[str, DuplicateGroup] = {}
    for split in [s for s in SPLITS if s in digests]:
        for i, d in enumerate(digests[split]):
            by_digest.setdefault(d, DuplicateGroup(d)).copies.append(Copy(split, i, labels[split][i], where(split, i)))
    return [g for g in by_digest.values() if len(g.copies) > 1]


def row_digests(array: np.ndarray) -> list[str]:
    """sha256 of each row of an image array (MedMNIST): identical pixels, identical digest."""
    def one(i: int) -> str:
        return hashlib.sha256(np.ascontiguousarray(array[i]).tobytes()).hexdigest()

    if array.nbytes < 64 << 20:
        return [one(i) for i in range(len(array))]
    with ThreadPoolExecutor(8) as pool:  # large rows (MedMNIST+ 224 px): hashlib releases the GIL
        return list(pool.map(one, range(len(array))))


@dataclass
class Resolution:
    """What a policy decided: the samples to drop per split, and the summary kept in the identity (None: no groups)."""

    drop: dict[str, set[int]]
    summary: dict | None
    note: str | None


def resolve(groups: list[DuplicateGroup], policy: str, source: str, what: str = "") -> Resolution:
    """Apply ``policy`` to ``groups`` of the dataset read from ``source``; ``error`` raises naming the first group."""
    if policy not in POLICIES:
        raise MedfmError(f"--duplicates {policy!r} is not a policy", f"choose {', '.join(POLICIES)}")
    if not groups:
        return Resolution({}, None, None)
    leaking = sum(g.leaking for g in groups)
    contradictory = sum(g.contradictory for g in groups)
    summary = {"policy": policy, "groups": len(groups), "across_splits": leaking, "different_labels": contradictory}
    count = summary_note(summary)
    if policy == "error":
        raise MedfmError(f"{source}: {count}, e.g. {groups[0].describe()}",
                         "remove the copies, or pass --duplicates warn (keep and report) or drop (remove leaking and "
                         f"contradicting copies); `medfm datasets inspect {what or source}` lists every group")
    drop: dict[str, set[int]] = defaultdict(set)
    if policy == "drop":
        for g in groups:
            if g.contradictory:
                keep_split = None
            elif g.leaking:
                keep_split = next(s for s in SPLITS if any(c.split == s for c in g.copies))
            else:
                continue
            for c in g.copies:
                if c.split != keep_split:
                    drop[c.split].add(c.index)
        summary["dropped"] = {s: len(v) for s, v in sorted(drop.items())}
    return Resolution(dict(drop), summary, summary_note(summary))


def summary_note(summary: dict) -> str:
    """One line for the log, the dataset notes and the reports."""
    count = (f"{summary['groups']} group(s) of identical images under different names or rows "
             f"({summary['across_splits']} across splits, {summary['different_labels']} with different labels)")
    if "dropped" in summary:
        return f"{count}: dropped {sum(summary['dropped'].values())} copies (--duplicates drop)"
    if summary["policy"] == "warn":
        return f"{count}, kept (--duplicates warn)"
    return count
