"""Paired comparisons of entries scored on the same test rows: is a gap on one dataset real?

Two entries are *paired* when they were scored on the very same test rows: the same dataset content
(the identity's ``dataset_sha256``, which covers the images, labels and split file) and the same
sequence of test labels in every stored seed. Rows without stored predictions, or from before run
identities existed (their dataset content is unknown), are never paired; the report says so.

All entries of one test-row set are bootstrapped together: each resample draws one set of test rows,
every entry is scored on it (the headline metric averaged over the entry's seeds, as the leaderboard
averages them), so the difference of any two entries on a resample is a *paired* difference. The 95 %
CI and two-sided p-value of a difference come from those resampled differences (the percentile test of
``medfm.stats.paired_bootstrap``). For binary ROC-AUC, DeLong's test is the primary test: the seeds'
score vectors enter ``medfm.stats.delong`` together, and the difference of the seed-mean AUCs is a
contrast of their AUCs, whose variance is that contrast of DeLong's covariance. Holm's correction runs
over all pairs of a dataset. Both tests treat the trained models as fixed and resample test rows only:
they answer "would another test set from the same source reorder these two", not seed-to-seed noise.
"""

from __future__ import annotations

import hashlib
import itertools
import warnings
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from scipy import stats as sps

from medfm.metrics import compute_metrics
from medfm.protocol import BOOT_BLOCK, _resampled_metric
from medfm.report.aggregate import Group
from medfm.stats import delong, holm

ALPHA = 0.05
PROBE, FINETUNE = "probe", "finetune"


# ----------------------------------------------------------------------------------- test-row sets


@dataclass
class Scored:
    """A group's stored test predictions, one score array per seed, or why it cannot be paired."""

    group: Group
    rows: str | None = None  # the test-row set: dataset content hash + test labels digest
    y: np.ndarray | None = None
    scores: list[np.ndarray] = field(default_factory=list)
    why_not: str = ""


def scored(g: Group) -> Scored:
    preds = [r.get("predictions", {}).get("test") for r in g.rows]
    if not all(preds):
        return Scored(g, why_not="no stored test predictions (run with --store-predictions)")
    content = g.identity.get("dataset_sha256")
    if not content:
        return Scored(g, why_not="the row predates run identities: its dataset content is not recorded")
    y = np.asarray(preds[0]["y_true"])
    if not all(np.array_equal(np.asarray(p["y_true"]), y) for p in preds):
        return Scored(g, why_not="its seeds were scored on different test labels")
    scores = [np.asarray(p["y_score"], dtype=np.float64) for p in preds]
    for r, s in zip(g.rows, scores):  # the stored scores must give the recorded number, or nothing is paired
        recorded = (r.get("test") or {}).get(g.metric)
        if recorded is None or not r.get("task"):
            continue
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            again = compute_metrics(r["task"], y, s, [g.metric])[g.metric]
        if not (abs(again - recorded) <= 1e-6 or (again != again and recorded != recorded)):
            return Scored(g, why_not=f"its stored test predictions give {g.metric} {again:.4f}, not the recorded "
                                     f"{recorded:.4f} (scores rounded by an older medfm): rerun the row to compare it")
    digest = hashlib.sha256(np.ascontiguousarray(y, dtype=np.int64).tobytes() + str(y.shape).encode()).hexdigest()
    return Scored(g, f"{content}:{digest}", y, scores)


def resampled_means(entries: list[Scored], metric: str, n_boot: int, seed: int = 0) -> np.ndarray:
    """``[E, B]``: each entry's metric, averaged over its seeds, on the same ``n_boot`` resamples of the test rows."""
    y = entries[0].y
    rng = np.random.default_rng(seed)
    blocks = []
    for lo in range(0, n_boot, BOOT_BLOCK):
        idx = rng.integers(0, len(y), size=(min(BOOT_BLOCK, n_boot - lo), len(y)))
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            blocks.append(np.stack([np.nanmean(np.stack([_resampled_metric(metric, y, s, idx) for s in e.scores]), axis=0)
                                    for e in entries]))
    return np.concatenate(blocks, axis=1) if blocks else np.zeros((len(entries), 0))


# ------------------------------------------------------------------------------------------- pairs


@dataclass
class Pair:
    """``a`` minus ``b`` on the same test rows (``a`` is the one ranked higher on the leaderboard)."""

    a: Group
    b: Group
    diff: float
    low: float
    high: float
    p_boot: float
    p_delong: float | None = None
    p_boot_holm: float = float("nan")
    p_delong_holm: float | None = None

    @property
    def test(self) -> str:
        return "DeLong" if self.p_delong is not None else "paired bootstrap"

    @property
    def p(self) -> float:
        """The primary test's p-value: DeLong's for binary ROC-AUC, else the paired bootstrap's."""
        return self.p_delong if self.p_delong is not None else self.p_boot

    @property
    def p_holm(self) -> float:
        return self.p_delong_holm if self.p_delong_holm is not None else self.p_boot_holm

    @property
    def tested(self) -> bool:
        """False where no test could run (``--bootstrap 0`` and no DeLong): neither tied nor worse is known."""
        return bool(np.isfinite(self.p_holm))

    @property
    def significant(self) -> bool:
        return bool(self.tested and self.p_holm < ALPHA)


def _bootstrap_summary(diff: float, boot: np.ndarray) -> tuple[float, float, float]:
    """(low, high, two-sided p) of resampled differences: the percentile CI and its matching test
    (as ``medfm.stats.paired_bootstrap``: twice the smaller tail share on either side of 0, floored at 1/B)."""
    boot = boot[np.isfinite(boot)]
    if boot.size == 0:
        return float("nan"), float("nan"), float("nan")
    low, high = np.quantile(boot, [ALPHA / 2, 1 - ALPHA / 2])
    p = min(1.0, 2 * min((boot <= 0).mean(), (boot >= 0).mean()))
    return float(low), float(high), max(p, 1 / boot.size)


def _binary_auc(metric: str, e: Scored) -> bool:
    return metric == "roc_auc" and e.y.ndim == 1 and all(s.ndim == 2 and s.shape[1] == 2 for s in e.scores)


def delong_seed_means(a: Scored, b: Scored) -> float | None:
    """Two-sided p of DeLong's test of "seed-mean AUC of a = seed-mean AUC of b" (None where it cannot run)."""
    stacked = np.stack([s[:, 1] for s in a.scores] + [s[:, 1] for s in b.scores])
    try:
        d = delong(a.y, stacked)
    except ValueError:  # fewer than 2 positives or negatives
        return None
    c = np.r_[np.full(len(a.scores), 1 / len(a.scores)), np.full(len(b.scores), -1 / len(b.scores))]
    diff, var = float(c @ d.auc), float(c @ d.cov @ c)
    if not var > 0:
        return 1.0 if abs(diff) < 1e-12 else 0.0
    return float(2 * sps.norm.sf(abs(diff) / np.sqrt(var)))


def make_pair(a: Scored, b: Scored, boot_a: np.ndarray, boot_b: np.ndarray, metric: str) -> Pair:
    diff = float(a.group.mean - b.group.mean)
    low, high, p = _bootstrap_summary(diff, boot_a - boot_b)
    p_delong = delong_seed_means(a, b) if _binary_auc(metric, a) and _binary_auc(metric, b) else None
    return Pair(a.group, b.group, diff, low, high, p, p_delong)


def correct(pairs: list[Pair]) -> None:
    """Holm's correction over ``pairs`` (one family), for each test separately."""
    booted = [p for p in pairs if np.isfinite(p.p_boot)]
    for pair, adj in zip(booted, holm([p.p_boot for p in booted])):
        pair.p_boot_holm = float(adj)
    with_delong = [p for p in pairs if p.p_delong is not None]
    for pair, adj in zip(with_delong, holm([p.p_delong for p in with_delong])):
        pair.p_delong_holm = float(adj)


# ------------------------------------------------------------------------------ one dataset's entries


@dataclass
class DatasetComparison:
    """The leaderboard entries of one dataset and metric, compared pairwise on one test-row set."""

    dataset: str
    metric: str
    entries: list[Group]  # paired entries, leaderboard order (best first)
    pairs: dict[tuple[str, str], Pair]  # (a.key, b.key), a above b
    left_out: list[tuple[Group, str]]  # entries of this dataset not compared, and why
    n_test: int = 0

    def pair(self, a: Group, b: Group) -> Pair | None:
        return self.pairs.get((a.key, b.key)) or self.pairs.get((b.key, a.key))

    @property
    def best(self) -> Group | None:
        return self.entries[0] if self.entries else None

    def status(self, g: Group) -> str:
        """"best", "tied for best" (not significantly worse than the best after Holm), "below best", "not tested"
        (no test could run: ``--bootstrap 0`` on a metric without DeLong), or "" (not compared)."""
        if self.best is None or all(g.key != e.key for e in self.entries):
            return ""
        if g.key == self.best.key:
            return "best"
        pair = self.pair(self.best, g)
        if not pair.tested:
            return "not tested"
        return "below best" if pair.significant else "tied for best"


def by_row_set(scored_entries: list[Scored]) -> dict[str, list[Scored]]:
    sets: dict[str, list[Scored]] = defaultdict(list)
    for e in scored_entries:
        sets[e.rows].append(e)
    return sets


def compare_dataset(board_entries: list[Group], n_boot: int) -> DatasetComparison:
    """Every pair of ``board_entries`` (one dataset and metric, best first) scored on the same test rows.

    Entries on another test-row set than the best-placed pairable entry are left out with the reason."""
    first = board_entries[0]
    scored_entries = [scored(g) for g in board_entries]
    left_out = [(e.group, e.why_not) for e in scored_entries if e.why_not]
    pairable = [e for e in scored_entries if not e.why_not and np.isfinite(e.group.mean)]
    left_out += [(e.group, "no finite headline value") for e in scored_entries if not e.why_not and not np.isfinite(e.group.mean)]
    if not pairable:
        return DatasetComparison(first.dataset, first.metric, [], {}, left_out)
    chosen = [e for e in pairable if e.rows == pairable[0].rows]
    left_out += [(e.group, "scored on other test rows than the best entry (different dataset content or split)")
                 for e in pairable if e.rows != pairable[0].rows]
    boots = resampled_means(chosen, first.metric, n_boot) if len(chosen) > 1 else None
    pairs = {}
    for i, j in itertools.combinations(range(len(chosen)), 2):
        pairs[(chosen[i].group.key, chosen[j].group.key)] = make_pair(chosen[i], chosen[j], boots[i], boots[j], first.metric)
    correct(list(pairs.values()))
    return DatasetComparison(first.dataset, first.metric, [e.group for e in chosen], pairs, left_out, len(chosen[0].y))


def compare_datasets(board: list[Group], n_boot: int) -> list[DatasetComparison]:
    per: dict[tuple[str, str], list[Group]] = defaultdict(list)
    for g in board:  # board order: best first within a dataset
        per[(g.dataset, g.metric)].append(g)
    return [compare_dataset(gs, n_boot) for _, gs in sorted(per.items())]


# --------------------------------------------------------------------- frozen vs fine-tuned, per budget

BACKBONE_MATCH = ("backbone", "weights", "weights_sha256", "img_size", "grey", "resize", "norm",
                  "drop_cutoff")  # the same backbone and preprocessing, frozen or tuned


@dataclass
class FrozenVsTuned:
    """Fine-tuned minus frozen: the same backbone on the same test rows at the same label budget."""

    frozen: Group
    tuned: Group
    pair: Pair  # a = tuned, b = frozen

    dataset = property(lambda self: self.frozen.dataset)
    fraction = property(lambda self: self.frozen.fraction)
    backbone = property(lambda self: self.frozen.backbone_label)


def paired_sides(cells: dict[tuple, tuple[list[Scored], list[Scored]]], n_boot: int, budget_note: bool = False
                 ) -> tuple[list[tuple[Scored, Scored, Pair]], list[str]]:
    """Every (base, other) pair of each cell scored on the same test rows, as ``other`` minus ``base`` with the
    paired bootstrap (and DeLong for binary ROC-AUC); Holm over the pairs of a dataset and metric. Also the
    notes on pairs that could not be compared, and why."""
    notes: list[str] = []
    per_rows: dict[tuple, list[tuple[Scored, Scored]]] = defaultdict(list)
    for _key, (bases, others) in sorted(cells.items(), key=lambda kv: str(kv[0])):
        for f, t in itertools.product(bases, others):
            why = f.why_not or t.why_not or ("" if f.rows == t.rows else "scored on different test rows")
            if why:
                at_budget = f" at budget {f.group.fraction:g}" if budget_note else ""
                notes.append(f"{f.group.dataset} {f.group.title} vs {t.group.title}{at_budget}: not compared ({why})")
                continue
            per_rows[(f.group.dataset, f.group.metric, f.rows)].append((f, t))
    out: list[tuple[Scored, Scored, Pair]] = []
    for (_dataset, metric, _), pairs in sorted(per_rows.items(), key=lambda kv: kv[0][:2]):
        members = list({id(e): e for fp in pairs for e in fp}.values())
        at = {id(e): i for i, e in enumerate(members)}
        boots = resampled_means(members, metric, n_boot)
        made = [(f, t, make_pair(t, f, boots[at[id(t)]], boots[at[id(f)]], metric)) for f, t in pairs]
        correct([m[2] for m in made])
        out += made
    return out, notes


def frozen_vs_tuned(groups: list[Group], n_boot: int) -> tuple[list[FrozenVsTuned], list[str]]:
    """Every (probe, fine-tune) pair of one backbone, dataset test rows, metric and label budget, with the paired
    bootstrap (and DeLong) of fine-tuned minus frozen; Holm over the pairs of a dataset. Also the notes on
    groups that had a counterpart but could not be paired. A fine-tune that trains no backbone block (an exact
    frozen row: unfreeze 0) is not fine-tuned: it is left out (the exact-vs-fast table pairs it)."""
    cells: dict[tuple, tuple[list[Scored], list[Scored]]] = defaultdict(lambda: ([], []))
    for g in groups:
        if g.kind == PROBE or (g.kind == FINETUNE and _scenario(g) != "frozen"):
            key = (g.dataset, g.metric, g.fraction, tuple(str(g.identity.get(k)) for k in BACKBONE_MATCH))
            cells[key][g.kind == FINETUNE].append(scored(g))
    pairs, notes = paired_sides(cells, n_boot, budget_note=True)
    out = [FrozenVsTuned(f.group, t.group, pair) for f, t, pair in pairs]
    out.sort(key=lambda m: (m.dataset, m.backbone, m.frozen.title, m.tuned.title, m.fraction))
    return out, notes


# ------------------------------------------------------------------------------- exact vs fast fidelity


def fidelity_of(g: Group) -> str | None:
    """The fidelity a group's rows ran ('fast' or 'exact', from each record's ``fidelity`` entry), or None."""
    modes = {(r.get("fidelity") or {}).get("mode") for r in g.rows}
    return modes.pop() if len(modes) == 1 else None


def _scenario(g: Group) -> str:
    """'frozen' for a probe and for a fine-tune that trains no backbone block; else how deep it trained."""
    unfreeze = g.identity.get("unfreeze")
    return "frozen" if g.kind == PROBE or str(unfreeze) == "0" else f"unfreeze {unfreeze}"


@dataclass
class ExactVsFast:
    """Exact minus fast fidelity: one backbone, head, scenario and label budget on the same test rows (issue 17:
    what caching un-augmented features and medfm's preprocessing change, against the study code's online run)."""

    fast: Group
    exact: Group
    pair: Pair  # a = exact, b = fast

    dataset = property(lambda self: self.fast.dataset)
    fraction = property(lambda self: self.fast.fraction)
    scenario = property(lambda self: _scenario(self.fast))


def exact_vs_fast(groups: list[Group], n_boot: int) -> tuple[list[ExactVsFast], list[str]]:
    """Every (fast, exact) pair of one dataset, backbone name, head, scenario, metric and label budget, with the
    paired bootstrap (and DeLong for binary ROC-AUC) of exact minus fast; Holm over the pairs of a dataset.
    The backbone is matched by name only: the two fidelities preprocess differently on purpose."""
    cells: dict[tuple, tuple[list[Scored], list[Scored]]] = defaultdict(lambda: ([], []))
    for g in groups:
        mode = fidelity_of(g)
        if mode in ("fast", "exact"):
            cells[(g.dataset, g.metric, g.fraction, g.backbone, g.head, _scenario(g))][mode == "exact"].append(scored(g))
    pairs, notes = paired_sides(cells, n_boot)
    out = [ExactVsFast(f.group, x.group, pair) for f, x, pair in pairs]
    out.sort(key=lambda m: (m.dataset, m.fast.backbone, m.fast.head, m.scenario, m.fraction))
    return out, notes
