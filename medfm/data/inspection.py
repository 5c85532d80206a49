"""``medfm datasets inspect``: what medfm understood of a dataset, before anything runs.

Reads the dataset the way ``extract`` will (same protocol, same split), but collects every problem
instead of stopping at the first: missing files and unknown labels (rows that ``--skip-bad`` would
drop), images that do not decode, classes that training does not see, and every group of identical
images under two names (``data/duplicates.py``: listed, whatever the run's ``--duplicates`` policy
would do with them). Every image is decoded once, which also gives its size/mode.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from medfm.data import create_dataset
from medfm.data.images import ImageReadError
from medfm.ui import console, progress


def inspect_dataset(name_or_path: str, data_root: str | Path | None = None, seed: int = 0, decode: bool = True) -> dict:
    ds = create_dataset(name_or_path, data_root, seed=seed, skip_bad=True, check_images=False, duplicates="warn",
                        allow_missing_class=True)
    problems = list(ds.skipped)
    missing = ds.identity.get("allow_missing_class")
    if missing:
        problems.append(f"class(es) {', '.join(missing)} have no training images but appear in val/test "
                        "(extract stops unless --allow-missing-class)")
    sizes: Counter[str] = Counter()
    if decode:
        total = sum(len(s) for s in ds.splits.values())
        with progress() as bar:
            task = bar.add_task("decode", total=total, rate="")
            for split in ds.splits.values():
                for i in range(len(split)):
                    try:
                        img = split.images.load(i)
                        sizes[f"{img.size[0]}x{img.size[1]} {img.mode}"] += 1
                    except ImageReadError as exc:
                        problems.append(f"{split.images.describe(i)}: {exc.reason}")
                    except Exception as exc:  # noqa: BLE001 - a reader bug still names the file
                        problems.append(f"{split.images.describe(i)}: {type(exc).__name__}: {exc}")
                    bar.update(task, advance=1)
    counts = ds.summary()
    totals = np.sum([list(v["per_class"].values()) for v in counts.values()], axis=0)
    imbalance = float(totals.max() / totals.min()) if totals.min() > 0 else float("inf")
    for name, split in ds.splits.items():
        if len(split) == 0:
            problems.append(f"split {name} is empty")
        elif ds.task != "multilabel":
            missing = [c for c, n in counts[name]["per_class"].items() if n == 0]
            if missing:
                problems.append(f"split {name} has no images of class(es) {', '.join(missing)}")
    return {
        "name": ds.name,
        "source": ds.source,
        "task": ds.task,
        "classes": ds.classes,
        "headline_metric": ds.headline_metric,
        "notes": ds.notes,
        "counts": counts,
        "total_per_class": dict(zip(ds.classes, totals.astype(int).tolist())),
        "imbalance_ratio": round(imbalance, 2),
        "image_sizes": dict(sizes.most_common()),
        "split_sha256": ds.identity.get("split_sha256"),
        "problems": problems,
        "duplicates": [{"kind": g.kind(), "copies": [{"split": c.split, "label": c.label, "where": c.where} for c in g.copies]}
                       for g in ds.duplicates],
    }


def print_report(report: dict) -> None:
    from rich.markup import escape
    from rich.table import Table

    from medfm.ui import stdout_console

    out = stdout_console()
    out.print(f"[bold]{report['name']}[/] ({report['task']}, {len(report['classes'])} classes, "
              f"headline {report['headline_metric']}) from {report['source']}")
    for note in report["notes"]:
        out.print(f"  - {note}")
    t = Table(title="images per split and class")
    splits = list(report["counts"])
    for col in ("class", *splits, "total"):
        t.add_column(col, justify="left" if col == "class" else "right")
    for c in report["classes"]:
        t.add_row(c, *[str(report["counts"][s]["per_class"][c]) for s in splits], str(report["total_per_class"][c]))
    t.add_row("[bold]all", *[f"[bold]{report['counts'][s]['n']}" for s in splits],
              f"[bold]{sum(report['counts'][s]['n'] for s in splits)}")
    out.print(t)
    out.print(f"class imbalance (largest / smallest class): {report['imbalance_ratio']}")
    sizes = report["image_sizes"]
    if sizes:
        shown = ", ".join(f"{k} x{v}" for k, v in list(sizes.items())[:5])
        out.print(f"image sizes: {shown}{' ...' if len(sizes) > 5 else ''}")
    groups = report["duplicates"]
    if groups:
        across = sum("across splits" in g["kind"] for g in groups)
        labels = sum("different labels" in g["kind"] for g in groups)
        out.print(f"[yellow]{len(groups)} group(s) of identical images[/] ({across} across splits, {labels} with "
                  "different labels; --duplicates error|warn|drop decides):")
        for g in groups:
            out.print(escape(f"  - {g['kind']}: " + " = ".join(f"{c['where']} ({c['split']}, {c['label']})" for c in g["copies"])))
    if report["problems"]:
        out.print(f"[red]{len(report['problems'])} problem(s):[/]")
        for p in report["problems"]:
            out.print(f"  - {p}")
    else:
        out.print("[green]no problems found[/]")
    console.print(f"split sha256 {report['split_sha256'][:12]}")
