"""``medfm report``: the results store -> leaderboard (Markdown, CSV, self-contained HTML) + figures.

Writes into ``--out``: ``leaderboard.md``, ``results.csv`` (every group: every label budget),
``report.html`` (the table and every figure embedded as base64 PNG: one file to send around) and
``figures/*.png``. Numbers are the headline metric, mean ± std over seeds, with the bootstrap 95 %
CI described in ``medfm.report.aggregate``.

The statistics sections (``medfm.report.sections``; each also written as a CSV beside the leaderboard):
paired comparisons of the entries of each dataset (``paired``: "tied for best" marks and a pairwise matrix
figure), ranks across datasets with the Friedman test and a critical-difference diagram (``across``),
fine-tuned minus frozen at each label budget, and with ``--published FILE`` the published numbers beside
the matching entries (``published_view``).
"""

from __future__ import annotations

import base64
import csv
import html
import json
import re
from pathlib import Path

from medfm.config import ReportConfig
from medfm.errors import MedfmError
from medfm.published import read_published, resolve_published
from medfm.report import figures, sections, stat_figures
from medfm.report.across import across_datasets
from medfm.report.paired import compare_datasets, exact_vs_fast, frozen_vs_tuned
from medfm.report.published_view import match
from medfm.identity import NOT_IN_OLD_ROWS, flat_identity, identity_of
from medfm.report.aggregate import Group, backbone_ranks, group_rows, leaderboard
from medfm.results import ResultsStore
from medfm.ui import console


def _fmt(g: Group) -> str:
    s = f"{g.mean:.4f}" if g.mean == g.mean else "—"
    if len(g.rows) > 1:
        s += f" ± {g.std:.4f}"
    if g.ci:
        s += f" [{g.ci[0]:.4f}, {g.ci[1]:.4f}]"
    return s


COLUMNS = ("dataset", "metric", "run", "kind", "fraction", "seeds", "test (mean ± std [95% CI])", "vs best")
PUBLISHED_COLUMNS = ("published", "medfm − published")
# results.csv: every identity field as a column (settings mappings as JSON), then the numbers
CSV_FIELDS = ("kind", "dataset", "backbone", "weights", "weights_sha256", "feature", "layers", "img_size", "grey", "tokens",
              "dtype", "pixels", "head", "head_settings", "unfreeze", "blocks", "finetune", "fraction", "metric",
              "dataset_sha256", "identity_version")


def _row(g: Group, status: dict[str, str], published: dict[str, tuple] | None = None) -> list[str]:
    cells = [g.dataset, g.metric, g.label, g.kind, f"{g.fraction:g}", str(len(g.rows)), _fmt(g), status.get(g.key, "")]
    if published is not None:
        value, diff, differs = published.get(g.key, (None, None, False))
        cells += ["" if value is None else f"{value:.4f}" + (" (protocol differs)" if differs else ""),
                  "" if diff is None else f"{diff:+.4f}"]
    return cells


def select_rows(records: list[dict], cfg: ReportConfig) -> list[dict]:
    """The rows the report covers: ``--kind``, ``--dataset``, ``--fraction`` and ``--where FIELD=VALUE`` (a run
    identity field; one field given several times matches any of its values, different fields all apply)."""
    wanted: dict[str, set[str]] = {}
    for item in cfg.where:
        field, sep, value = item.partition("=")
        if not sep or not field.strip():
            raise MedfmError(f"--where {item!r} is not FIELD=VALUE", "e.g. --where backbone=mobilenetv2 --where img_size=224")
        wanted.setdefault(field.strip(), set()).add(value.strip())
    for name, values in (("kind", [cfg.kind] if cfg.kind else []), ("dataset", cfg.dataset),
                         ("fraction", [f"{f:g}" for f in cfg.fraction])):
        if values:
            wanted.setdefault(name, set()).update(values)
    if not wanted:
        return records
    flats = [flat_identity(identity_of(r)) | {"seed": r.get("seed", 0)} for r in records]
    known = set().union(*flats) if flats else set()
    unknown = sorted(set(wanted) - known)
    if unknown and records:
        raise MedfmError(f"--where {unknown[0]}: the rows of this store have no such field",
                         f"use one of {', '.join(sorted(known))}")
    return [r for r, f in zip(records, flats) if all(_text(f.get(k)) in v for k, v in wanted.items())]


def _filters(cfg: ReportConfig) -> str:
    shown = [f"kind={cfg.kind}"] if cfg.kind else []
    shown += [f"dataset={d}" for d in cfg.dataset] + [f"fraction={f:g}" for f in cfg.fraction] + list(cfg.where)
    return f" Rows selected by: {', '.join(shown)}." if shown else ""


def _text(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return "" if v is None else str(v)


def _slug(*parts) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", "-".join(str(p) for p in parts))


def run_report(cfg: ReportConfig) -> dict:
    store = ResultsStore(cfg.results, readonly=True)  # refuses a file that is not a medfm store; never writes
    pub_path = resolve_published(cfg.published) if cfg.published else None  # a bad file stops before any work
    published = read_published(pub_path) if pub_path else None
    records = select_rows(store.records(), cfg)
    if not records:
        what = "rows" if not (cfg.kind or cfg.dataset or cfg.fraction or cfg.where) else "rows matching the filters"
        raise MedfmError(f"results store {store.path} has no {what}", "run `medfm probe` or `medfm sweep` first, "
                         "or loosen --kind / --dataset / --fraction / --where")
    out = Path(cfg.out)
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    console.print(f"report over {len(records)} rows of {store.path}")

    groups = group_rows(records, cfg.bootstrap)
    board = leaderboard(groups)
    ranks = backbone_ranks(board)
    datasets = sorted({g.dataset for g in groups})
    comparisons = compare_datasets(board, cfg.bootstrap)
    status = {g.key: c.status(g) for c in comparisons for g in c.entries}
    status |= {g.key: "not compared" for c in comparisons for g, _ in c.left_out}
    across = across_datasets(board)
    tuned, tuned_notes = frozen_vs_tuned(groups, cfg.bootstrap)
    stat_sections = [sections.pairwise(comparisons), sections.across(across), sections.frozen_tuned(tuned, tuned_notes)]
    exact, exact_notes = exact_vs_fast(groups, cfg.bootstrap)
    if exact or exact_notes:  # only where rows of both fidelities exist
        stat_sections.append(sections.exact_fast(exact, exact_notes))
    pub_cells = None
    if published is not None:
        matched, unmatched = match(board, published)
        stat_sections += sections.published(matched, unmatched, pub_path.name)
        pub_cells = {c.entry["group"].key: (c.published.value, c.difference, bool(c.protocol_differences))
                     for c in matched if c.entry["metric"] == c.entry["group"].metric}

    labels = {r.get("run_key"): g.title for g in groups for r in g.rows}
    figs: list[tuple[str, str, bytes]] = []  # (section, title, png)
    for ds in datasets:
        figs.append((ds, f"label efficiency — {ds}", figures.label_efficiency(groups, ds)))
        roc = figures.roc_curves([g for g in board if g.dataset == ds], ds)
        if roc:
            figs.append((ds, f"ROC curves — {ds}", roc))
        top = next((g for g in board if g.dataset == ds), None)
        cm = figures.confusion(top) if top else None
        if cm:
            figs.append((ds, f"confusion matrix — {ds}, best: {top.label}", cm))
    figs.append(("ranking", "backbone ranking", figures.ranking(ranks)))
    for c in comparisons:
        matrix = stat_figures.pairwise_matrix(c)
        if matrix:
            figs.append((c.dataset, f"pairwise matrix — {c.dataset}", matrix))
    cd = stat_figures.cd_diagram(across)
    if cd:
        figs.append(("ranking", "critical-difference diagram", cd))
    for ds in datasets:
        fvt = stat_figures.frozen_vs_tuned(tuned, ds)
        if fvt:
            figs.append((ds, f"frozen vs fine-tuned — {ds}", fvt))
    for r in records:
        if r.get("history"):
            label = labels.get(r.get("run_key"), f"{r['backbone']} + {r['head']}")
            figs.append(("training", f"training curve — {r['dataset']} {label}", figures.training_curve(r)))

    paths = []
    for i, (_, title, png) in enumerate(figs):
        p = fig_dir / f"{i:02d}-{_slug(title)[:80]}.png"
        p.write_bytes(png)
        paths.append(p)

    old = sum(1 for g in groups if g.identity.get("identity_version") == 0 for _ in g.rows)
    note = (f" {old} rows predate run identities: they are grouped by what they recorded (cache fingerprint, head, "
            f"grid, label budget); {', '.join(NOT_IN_OLD_ROWS)} were not recorded." if old else "")
    columns = COLUMNS + (PUBLISHED_COLUMNS if pub_cells is not None else ())
    md = ["# medfm leaderboard", "", f"Results store: `{store.path}` ({len(records)} rows). Headline metric on test at "
          "the largest label budget: mean ± std over seeds [bootstrap 95 % CI]. A row is one run identity "
          "(everything but the seed); its label shows what sets it apart. \"vs best\": the dataset's best entry, "
          "the entries tied for best (not significantly worse than it on the same test rows, Holm-corrected; see the "
          "paired comparisons below) and those below it." + note + _filters(cfg), "",
          "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    md += ["| " + " | ".join(_row(g, status, pub_cells)) + " |" for g in board]
    md += ["", "Backbone ranking (mean rank over datasets): " + ", ".join(f"{b} {r:.2f}" for b, r in ranks.items()), ""]
    from medfm.fidelity import report_lines  # issue 17: per row group, the fidelity it ran and its departures

    md += report_lines(board)
    dup_notes = duplicate_notes(records)
    md += [f"Duplicates in the data: {n}" for n in dup_notes] + ([""] if dup_notes else [])
    for section in stat_sections:
        md += section.markdown()
    (out / "leaderboard.md").write_text("\n".join(md) + "\n")

    with open(out / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run", *CSV_FIELDS, "identity_sha256", "n_seeds", "seeds", "mean", "std", "ci95_low", "ci95_high",
                    "vs_best"])
        for g in groups:
            ident = [json.dumps(v, sort_keys=True) if isinstance(v, dict) else v
                     for v in (g.identity.get(k) for k in CSV_FIELDS)]
            w.writerow([g.label, *ident, g.key, len(g.rows), " ".join(map(str, g.seeds)), g.mean, g.std,
                        g.ci[0] if g.ci else "", g.ci[1] if g.ci else "", status.get(g.key, "")])

    tables = [p for p in (section.write_csv(out) for section in stat_sections) if p]
    (out / "report.html").write_text(_html(board, groups, figs, ranks, store.path, len(records), dup_notes,
                                           [_row(g, status, pub_cells) for g in board], columns, stat_sections))
    result = {"tables": [str(p) for p in tables], "vs_best": {f"{g.dataset}: {g.title}": status[g.key] for g in board if status.get(g.key)},
              "out": str(out), "html": str(out / "report.html"), "markdown": str(out / "leaderboard.md"),
              "csv": str(out / "results.csv"), "figures": [str(p) for p in paths], "rows": len(records),
              "groups": len(groups)}
    console.print(f"[green]wrote[/] {out / 'report.html'} ({len(figs)} figures)")
    return result


def duplicate_notes(records: list[dict]) -> list[str]:
    """One line per dataset whose rows recorded identical-image groups (``--duplicates`` warn or drop)."""
    from medfm.data.duplicates import summary_note

    seen = {}
    for r in records:
        if r.get("duplicates"):
            seen.setdefault(r["dataset"], summary_note(r["duplicates"]))
    return [f"{ds}: {note}" for ds, note in sorted(seen.items())]


def _html(board, groups, figs, ranks, store_path, n_rows, dup_notes, rows, columns, stat_sections) -> str:
    e = html.escape
    head = "".join(f"<th>{e(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f'<td class="{_cls(c)}">{e(c)}</td>' for c in r) + "</tr>" for r in rows)
    imgs = "".join(
        f'<figure><img alt="{e(title)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        f"<figcaption>{e(title)}</figcaption></figure>"
        for _, title, png in figs
    )
    rank_txt = ", ".join(f"{e(b)} {r:.2f}" for b, r in ranks.items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>medfm report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}th{{background:#eee}}
td.best,td.tied-for-best{{font-weight:bold;color:#064}}
figure{{display:inline-block;margin:1em;vertical-align:top}}figcaption{{font-size:small;color:#444}}</style></head>
<body><h1>medfm report</h1>
<p>{n_rows} result rows from <code>{e(str(store_path))}</code>; {len(groups)} run identities (everything but the seed; a label shows what sets a row apart).
Headline metric on test at the largest label budget: mean ± std over seeds [bootstrap 95 % CI over test rows].</p>
<table id="leaderboard"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<p>Backbone ranking (mean rank over datasets): {rank_txt}</p>
{"".join(f"<p>Duplicates in the data: {e(n)}</p>" for n in dup_notes)}
{"".join(section.html() for section in stat_sections)}
<h2>Figures</h2>{imgs}
</body></html>
"""


def _cls(cell: str) -> str:
    return re.sub(r"[^a-z]+", "-", cell) if cell in ("best", "tied for best", "below best") else ""
