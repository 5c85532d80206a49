"""The report's figures for its statistics: the pairwise matrix, the critical-difference diagram and the
frozen-vs-fine-tuned differences (PNG bytes, as ``medfm.report.figures``)."""

from __future__ import annotations

import textwrap
from collections import defaultdict

import numpy as np

from medfm.report.across import AcrossDatasets
from medfm.report.figures import _plt, _png
from medfm.report.paired import DatasetComparison, FrozenVsTuned


def _short(label: str, width: int = 34) -> str:
    return label if len(label) <= width else label[: width - 1] + "…"


def _wrapped(label: str, width: int = 30, lines: int = 3) -> str:
    return "\n".join(textwrap.wrap(label, width, max_lines=lines, placeholder="…"))


def pairwise_matrix(c: DatasetComparison) -> bytes | None:
    """Row minus column on the same test rows: the difference (colour and text), its 95 % CI, and * where the
    primary test is significant after Holm's correction."""
    k = len(c.entries)
    if k < 2:
        return None
    plt = _plt()
    diff = np.full((k, k), np.nan)
    text = [[""] * k for _ in range(k)]
    for i, a in enumerate(c.entries):
        for j, b in enumerate(c.entries):
            if i == j:
                continue
            p = c.pair(a, b)
            sign = 1 if p.a.key == a.key else -1
            lo, hi = sorted((sign * p.low, sign * p.high))
            diff[i, j] = sign * p.diff
            text[i][j] = f"{sign * p.diff:+.3f}{'*' if p.significant else ''}\n[{lo:+.3f}, {hi:+.3f}]"
    span = np.nanmax(np.abs(diff)) or 1.0
    size = 1.6 + 1.05 * k
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    im = ax.imshow(diff, cmap="RdBu", vmin=-span, vmax=span)
    for i in range(k):
        for j in range(k):
            dark = np.isfinite(diff[i, j]) and abs(diff[i, j]) > 0.6 * span
            ax.text(j, i, text[i][j] or "—", ha="center", va="center", fontsize=6.5, color="white" if dark else "black")
    names = [_wrapped(g.title) for g in c.entries]
    ax.set_xticks(range(k), names, rotation=40, ha="right", fontsize=7)
    ax.set_yticks(range(k), names, fontsize=7)
    fig.colorbar(im, ax=ax, shrink=0.7, label=f"row − column, test {c.metric}")
    tests = "DeLong" if any(p.p_delong is not None for p in c.pairs.values()) else "paired bootstrap"
    ax.set_title(f"{c.dataset}: pairwise differences [95% paired-bootstrap CI]\n* p < 0.05 ({tests}, Holm over "
                 f"{len(c.pairs)} pairs); n = {c.n_test} test rows", fontsize=9)
    return _png(fig)


def cd_diagram(a: AcrossDatasets) -> bytes | None:
    """Demšar's critical-difference diagram: entries on the average-rank axis (1 = best, on the left), the CD
    as a bar above the axis, thick bars joining entries whose ranks differ by less than the CD."""
    if not a.drawable:
        return None
    plt = _plt()
    k = len(a.entries)
    order = list(np.argsort(a.ranks))
    left, right = order[: (k + 1) // 2], order[(k + 1) // 2:]
    lo_rank, hi_rank = 1, max(k, 2)
    rows = max(len(left), len(right))
    fig, ax = plt.subplots(figsize=(11, 1.6 + 0.3 * rows + 0.15 * len(a.groups)))
    ax.set_xlim(lo_rank - 0.25 * k - 2.2, hi_rank + 0.25 * k + 2.2)
    ax.set_ylim(-(0.6 * rows + 0.3 * len(a.groups) + 0.5), 1.6)
    ax.axis("off")
    ax.hlines(0, lo_rank, hi_rank, color="k", lw=1)
    for r in range(lo_rank, hi_rank + 1):
        ax.vlines(r, 0, 0.15, color="k", lw=1)
        ax.text(r, 0.25, str(r), ha="center", va="bottom", fontsize=8)
    ax.hlines(1.05, lo_rank, lo_rank + a.cd, color="tab:red", lw=2)
    ax.vlines([lo_rank, lo_rank + a.cd], 0.95, 1.15, color="tab:red", lw=1)
    ax.text(lo_rank + a.cd / 2, 1.2, f"CD = {a.cd:.2f}", ha="center", va="bottom", fontsize=8, color="tab:red")
    for side, items in (("left", left), ("right", right)):
        for n, i in enumerate(items if side == "left" else items[::-1]):
            y = -(n + 1) * 0.6 - 0.3 * len(a.groups)
            x_text = lo_rank - 0.3 if side == "left" else hi_rank + 0.3
            ax.plot([a.ranks[i], a.ranks[i], x_text], [0, y, y], color="k", lw=0.8)
            ax.text(x_text + (-0.05 if side == "left" else 0.05), y, f"{_short(a.entries[i], 72)} ({a.ranks[i]:.2f})",
                    ha="right" if side == "left" else "left", va="center", fontsize=7.5)
    for n, g in enumerate(a.groups):
        y = -0.2 - 0.3 * n
        ax.hlines(y, a.ranks[g[0]] - 0.03, a.ranks[g[-1]] + 0.03, color="tab:blue", lw=4, alpha=0.8)
    fried = (f"Friedman χ² = {a.friedman_stat:.2f}, p = {a.friedman_p:.3g}; " if a.friedman_p is not None else
             "Friedman test needs ≥ 3 entries; ")
    ax.set_title(f"critical-difference diagram: {k} entries over {len(a.datasets)} datasets\n{fried}"
                 f"Nemenyi CD (α = 0.05, q = {a.q:.3f}); bars join entries not significantly different", fontsize=9)
    return _png(fig)


def frozen_vs_tuned(items: list[FrozenVsTuned], dataset: str) -> bytes | None:
    """Fine-tuned minus frozen over the label budgets, one line per backbone, probe head and fine-tune depth."""
    lines: dict[str, list[FrozenVsTuned]] = defaultdict(list)
    for m in items:
        if m.dataset == dataset:
            depth = m.tuned.identity.get("unfreeze")
            lines[f"{m.backbone}: {m.tuned.head} u{depth} − {m.frozen.head} probe"].append(m)
    if not lines:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, ms in sorted(lines.items()):
        ms = sorted(ms, key=lambda m: m.fraction)
        x = [m.fraction for m in ms]
        y = [m.pair.diff for m in ms]
        err = [[m.pair.diff - m.pair.low for m in ms], [m.pair.high - m.pair.diff for m in ms]]
        ax.errorbar(x, y, yerr=np.clip(err, 0, None), marker="o", capsize=3, label=_short(label, 80))
        for m in ms:
            if m.pair.significant:
                ax.annotate("*", (m.fraction, m.pair.high), ha="center", va="bottom", fontsize=10)
    ax.axhline(0, color="k", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel("label fraction of train (log)")
    metric = next(m.frozen.metric for m in items if m.dataset == dataset)
    ax.set_ylabel(f"fine-tuned − frozen, test {metric}")
    ax.set_title(f"frozen vs fine-tuned — {dataset} (95% paired CI; * p < 0.05, Holm)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6.5)
    return _png(fig)
