"""Result records rendered as rich tables (the CLI's human-readable output)."""

from __future__ import annotations

from rich.table import Table


def _fmt(v) -> str:
    return "—" if v is None or v != v else f"{v:.4f}"


def results_table(record: dict) -> Table:
    """One probe result: every metric on val and test, headline first and bold."""
    head = record["headline_metric"]["name"]
    t = Table(title=f"{record['backbone']} on {record['dataset']} — {record['head']} head "
                    f"(test n={record['n']['test']})")
    t.add_column("metric")
    t.add_column("val", justify="right")
    t.add_column("test", justify="right")
    names = [head] + [m for m in record["test"] if m != head]
    for m in names:
        style = "bold" if m == head else None
        t.add_row(m + (" (headline)" if m == head else ""), _fmt(record["val"].get(m)), _fmt(record["test"][m]), style=style)
    hp = ", ".join(f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}"
                   for k, v in record.get("hyperparameters", {}).items())
    if hp:
        t.caption = f"chosen on val: {hp}"
    return t


def comparison_table(records: list[dict], title: str) -> Table:
    """Several results side by side (one row per backbone/run)."""
    head = records[0]["headline_metric"]["name"]
    others = [m for m in ("balanced_accuracy", "accuracy", "f1_macro") if m in records[0]["test"] and m != head]
    t = Table(title=title)
    for col in ("backbone", "weights", "feature", "px"):
        t.add_column(col)
    t.add_column(f"test {head}", justify="right", style="bold")
    for m in others:
        t.add_column(f"test {m}", justify="right")
    t.add_column("val-chosen", justify="right")
    for r in sorted(records, key=lambda r: -r["headline_metric"]["value"]):
        hp = ", ".join(f"{'wd' if k == 'weight_decay' else k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                       for k, v in r.get("hyperparameters", {}).items())
        t.add_row(r["backbone"], r["weights"], r["feature"], str(r["img_size"]), _fmt(r["headline_metric"]["value"]),
                  *[_fmt(r["test"][m]) for m in others], hp)
    return t
