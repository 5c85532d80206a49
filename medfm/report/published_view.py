"""``medfm report --published FILE``: leaderboard entries as published-table entries, and their matches.

A published table names a dataset by its base name and image size (MedMNIST+: ``pneumoniamnist`` at
28/64/128/224 px), a protocol (``linear probe``, ``knn``, ``end-to-end``, ...: ``medfm.published.PROTOCOLS``)
and a metric. A medfm entry is translated the same way: ``pneumoniamnist_128`` is ``pneumoniamnist`` at
128 px (a bare MedMNIST name is its 28-px release; any other dataset has no image size), its kind, head and
depth name the protocol (a fine-tune matches ``end-to-end`` only when every block was trained), and every
metric the rows recorded on test is offered (mean over seeds), so a published accuracy matches too.

The settings compared with the published ones (``medfm.published`` names the differences) are the ones
medfm ran: the linear head's optimiser (``lbfgs``: exact logistic regression, or ``adam`` with its lrs
and epochs for the grid solver), the kNN ``k`` values swept, a fine-tune's optimiser (AdamW), lr, epochs
and schedule, the resize policy (the identity's ``resize``; ``crop``, the default, where it records none)
and the metric that chose hyper-parameters.
"""

from __future__ import annotations

import re

import numpy as np

from medfm.published import PROTOCOLS, Comparison, PublishedRow, compare
from medfm.report.aggregate import Group

MEDMNIST = re.compile(r"^(?P<base>[a-z]+mnist)(?:_(?P<size>64|128|224))?$")


def dataset_and_size(name: str) -> tuple[str, int | None]:
    m = MEDMNIST.match(name)
    if not m:
        return name, None
    return m["base"], int(m["size"] or 28)


def protocol_of(identity: dict) -> str | None:
    for name in PROTOCOLS.names():
        p = PROTOCOLS.get(name)
        if p.kind != identity.get("kind") or p.head != identity.get("head"):
            continue
        if p.kind == "finetune":
            full = identity.get("unfreeze") is not None and identity.get("unfreeze") == identity.get("blocks")
            if (p.unfreeze == "all") != full:
                continue
        return name
    return None


def _list(v) -> str:
    return ",".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v) if isinstance(v, (list, tuple)) else str(v)


def ran_settings(identity: dict) -> dict:
    """The settings of a run that published protocols state (see the module docstring)."""
    hs, ft = identity.get("head_settings") or {}, identity.get("finetune") or {}
    out = {"metric": identity.get("metric"),
           "resize": identity.get("resize") or ft.get("resize") or hs.get("resize") or "crop"}
    if identity.get("kind") == "finetune":
        out |= {"optimizer": "adamw", "lr": _list(ft.get("lr", "")), "epochs": _list(ft.get("epochs", "")),
                "schedule": ft.get("schedule", "cosine")}
    elif identity.get("head") == "linear":
        if hs.get("solver", "lbfgs") == "grid":
            out |= {"optimizer": "adam", "lr": _list(hs.get("lrs", "")), "epochs": _list(hs.get("epochs", ""))}
        else:
            out |= {"optimizer": "lbfgs"}
    elif identity.get("head") == "knn":
        out |= {"k": _list(hs.get("ks", ""))}
    elif identity.get("head") == "logreg":
        out |= {"optimizer": "lbfgs"}
    return {k: v for k, v in out.items() if v not in (None, "")}


def entries(board: list[Group]) -> list[dict]:
    """One entry per leaderboard group and metric recorded on test (seed mean), with ``group`` attached."""
    out = []
    for g in board:
        protocol = protocol_of(g.identity)
        if protocol is None:
            continue
        dataset, size = dataset_and_size(g.dataset)
        metrics = sorted({m for r in g.rows for m in r.get("test", {})})
        for m in metrics:
            vals = [r["test"].get(m) for r in g.rows]
            vals = [v for v in vals if v is not None and np.isfinite(v)]
            if len(vals) != len(g.rows):
                continue
            out.append({"dataset": dataset, "backbone": g.backbone, "protocol": protocol, "image_size": size,
                        "metric": m, "value": float(np.mean(vals)), "settings": ran_settings(g.identity), "group": g})
    return out


def match(board: list[Group], published: list[PublishedRow]) -> tuple[list[Comparison], list[PublishedRow]]:
    return compare(entries(board), published)
