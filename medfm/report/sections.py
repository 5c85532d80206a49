"""The report's statistics sections as Markdown lines, HTML and CSV: pairwise comparisons per dataset, ranks
across datasets, frozen vs fine-tuned, published numbers. Each section is one table (rows as lists of cells)
rendered three ways, so the Markdown, the HTML and the CSV files always say the same thing."""

from __future__ import annotations

import csv
import html
from dataclasses import dataclass, field
from pathlib import Path

from medfm.published import Comparison, PublishedRow
from medfm.report.across import AcrossDatasets
from medfm.report.paired import ALPHA, DatasetComparison, ExactVsFast, FrozenVsTuned


def _p(v: float | None) -> str:
    if v is None or v != v:
        return "—"
    return f"{v:.3g}" if v < 0.001 else f"{v:.3f}"


def _ci(low: float, high: float) -> str:
    return "—" if low != low else f"[{low:+.4f}, {high:+.4f}]"


def _significant(p) -> str:
    return "not tested" if not p.tested else "yes" if p.significant else "no"


@dataclass
class Section:
    anchor: str  # HTML id and CSV file stem
    title: str
    intro: str
    columns: tuple[str, ...] = ()
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> list[str]:
        out = [f"## {self.title}", "", self.intro, ""]
        if self.rows:
            out += ["| " + " | ".join(self.columns) + " |", "|" + "---|" * len(self.columns)]
            out += ["| " + " | ".join(r) + " |" for r in self.rows] + [""]
        out += [f"- {n}" for n in self.notes] + ([""] if self.notes else [])
        return out

    def html(self) -> str:
        e = html.escape
        table = ""
        if self.rows:
            head = "".join(f"<th>{e(c)}</th>" for c in self.columns)
            body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in self.rows)
            table = f'<table id="{self.anchor}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
        notes = "".join(f"<li>{e(n)}</li>" for n in self.notes)
        return (f'<section id="section-{self.anchor}"><h2>{e(self.title)}</h2><p>{e(self.intro)}</p>{table}'
                + (f"<ul>{notes}</ul>" if notes else "") + "</section>")

    def write_csv(self, folder: Path) -> Path | None:
        if not self.rows:
            return None
        path = folder / f"{self.anchor}.csv"
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(self.columns)
            w.writerows(self.rows)
        return path


def pairwise(comparisons: list[DatasetComparison]) -> Section:
    s = Section("pairwise", "Paired comparisons per dataset",
                "Every pair of leaderboard entries scored on the same test rows: the difference of their headline "
                "numbers (seed means), its 95 % paired-bootstrap CI (both entries scored on the same resampled rows), "
                "the bootstrap p-value and, for binary ROC-AUC, DeLong's (the primary test there); p-values Holm-"
                f"corrected over the pairs of a dataset, significant at {ALPHA:g}. Both resample test rows only, with "
                "the trained models fixed.",
                ("dataset", "metric", "A", "B", "A − B", "95% CI", "p boot", "p boot (Holm)", "p DeLong",
                 "p DeLong (Holm)", "significant"))
    for c in comparisons:
        for p in c.pairs.values():
            s.rows.append([c.dataset, c.metric, p.a.title, p.b.title, f"{p.diff:+.4f}", _ci(p.low, p.high), _p(p.p_boot),
                           _p(p.p_boot_holm), _p(p.p_delong), _p(p.p_delong_holm), _significant(p)])
        if c.best is not None:
            tied = [g.title for g in c.entries[1:] if c.status(g) == "tied for best"]
            s.notes.append(f"{c.dataset}: best {c.best.title}" + (f"; tied for best (not significantly worse): "
                                                                 f"{', '.join(tied)}" if tied else "; no entry tied"))
        s.notes += [f"{c.dataset}: {g.title} not compared: {why}" for g, why in c.left_out]
    return s


def across(a: AcrossDatasets) -> Section:
    s = Section("ranks", "Ranks across datasets",
                "Average rank of each entry (1 = best) over the datasets where every compared entry has a result, "
                "the Friedman test of \"all entries rank alike\" (scipy) and the Nemenyi critical difference "
                "(Demšar 2006): entries whose average ranks differ by less than the CD are not significantly different.",
                ("entry", "average rank", *a.datasets))
    if a.why_not:
        s.notes.append(f"no ranking: {a.why_not}")
    if a.ranks is not None:
        for j in sorted(range(len(a.entries)), key=lambda j: a.ranks[j]):
            s.rows.append([a.entries[j], f"{a.ranks[j]:.2f}", *(f"{v:.4f}" for v in a.table[:, j])])
        fried = (f"Friedman χ² = {a.friedman_stat:.3f}, p = {_p(a.friedman_p)}" if a.friedman_p is not None
                 else "Friedman test not run: it needs at least 3 entries")
        s.notes.append(f"{len(a.entries)} entries over {len(a.datasets)} datasets ({', '.join(a.datasets)}). {fried}. "
                       f"Nemenyi q(0.05) = {a.q:.3f}, CD = {a.cd:.3f}.")
        s.notes += [f"not significantly different (within the CD): {', '.join(a.entries[i] for i in g)}" for g in a.groups]
    s.notes += [f"dataset {d} left out: {why}" for d, why in a.left_out_datasets]
    s.notes += [f"entry {e} left out: {why}" for e, why in a.left_out_entries]
    return s


def frozen_tuned(items: list[FrozenVsTuned], notes: list[str]) -> Section:
    s = Section("frozen_vs_finetuned", "Frozen vs fine-tuned, per label budget",
                "For each backbone and dataset, fine-tuned minus frozen (probe) at each label budget, on the same test "
                "rows: difference of the seed means, 95 % paired-bootstrap CI, p-value (DeLong for binary ROC-AUC, "
                "else bootstrap; Holm over the pairs of a dataset).",
                ("dataset", "metric", "backbone", "label budget", "frozen", "fine-tuned", "frozen value",
                 "fine-tuned value", "fine-tuned − frozen", "95% CI", "p", "p (Holm)", "significant"))
    for m in items:
        p = m.pair
        s.rows.append([m.dataset, m.frozen.metric, m.backbone, f"{m.fraction:g}", _head(m.frozen), _head(m.tuned),
                       f"{m.frozen.mean:.4f}", f"{m.tuned.mean:.4f}", f"{p.diff:+.4f}", _ci(p.low, p.high), _p(p.p),
                       _p(p.p_holm), _significant(p)])
    if not items:
        s.notes.append("no backbone has both probe and fine-tune rows on the same test rows and label budget")
    s.notes += notes
    return s


def exact_fast(items: list[ExactVsFast], notes: list[str]) -> Section:
    s = Section("exact_vs_fast", "Exact vs fast fidelity",
                "For each backbone, head and label budget run in both fidelities (`medfm sweep --fidelity exact|fast`), "
                "exact minus fast on the same test rows: the study code's online run (its preprocessing, augmentation, "
                "optimiser, schedule) against medfm's cached path. Difference of the seed means, 95 % paired-bootstrap "
                "CI, p-value (DeLong for binary ROC-AUC, else bootstrap; Holm over the pairs of a dataset).",
                ("dataset", "metric", "backbone", "head", "scenario", "label budget", "fast preprocessing",
                 "exact preprocessing", "fast value", "exact value", "exact − fast", "95% CI", "p", "p (Holm)",
                 "significant"))
    for m in items:
        p = m.pair
        s.rows.append([m.dataset, m.fast.metric, m.fast.backbone, m.fast.head, m.scenario, f"{m.fraction:g}",
                       _preprocessing(m.fast), _preprocessing(m.exact), f"{m.fast.mean:.4f}", f"{m.exact.mean:.4f}",
                       f"{p.diff:+.4f}", _ci(p.low, p.high), _p(p.p), _p(p.p_holm), _significant(p)])
    s.notes += notes
    return s


def _preprocessing(g) -> str:
    """A row group's resize policy and normalisation, as its identity records them (absent: crop, backbone):
    what tells two fast rows of one backbone apart."""
    return f"{g.identity.get('resize') or 'crop'}, norm={g.identity.get('norm') or 'backbone'}"


def _head(g) -> str:
    """The head part of a label (``linear``, ``knn (k=11)``), and for a fine-tune how deep it trained."""
    head = g.label[len(g.backbone_label):].split("+ ", 1)[-1].strip() or g.head
    if g.kind == "finetune" and g.identity.get("unfreeze") is not None:
        head += f", last {g.identity['unfreeze']} of {g.identity.get('blocks')} blocks trained"
    return head


def published(matched: list[Comparison], unmatched: list[PublishedRow], source: str) -> list[Section]:
    cmp = Section("published", "Published numbers side by side",
                  f"Entries matching a row of {source} (dataset, backbone, protocol, image size, metric), both on the "
                  "0–1 scale; medfm − published. Where the published protocol differs from what medfm ran, the last "
                  "column says how.",
                  ("dataset", "image size", "backbone", "protocol", "metric", "medfm entry", "medfm", "published",
                   "medfm − published", "source", "protocol differences"))
    for c in matched:
        e, r = c.entry, c.published
        cmp.rows.append([r.dataset, "" if r.image_size is None else str(r.image_size), r.backbone, r.protocol, r.metric,
                         e["group"].title, f"{e['value']:.4f}", f"{r.value:.4f}", f"{c.difference:+.4f}", r.source,
                         "; ".join(c.protocol_differences) or "none recorded"])
    if not matched:
        cmp.notes.append("no entry of this report matches a published row")
    only = Section("published_only", "Published rows with no medfm entry",
                   f"Rows of {source} that no entry of this report matches.",
                   ("dataset", "image size", "backbone", "protocol", "metric", "published", "source", "note"))
    for r in unmatched:
        only.rows.append([r.dataset, "" if r.image_size is None else str(r.image_size), r.backbone, r.protocol, r.metric,
                          f"{r.value:.4f}", r.source, r.note])
    return [cmp, only]
