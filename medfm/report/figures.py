"""The report's matplotlib figures, each returned as PNG bytes (the HTML embeds them as base64)."""

from __future__ import annotations

import io
from collections import defaultdict

import numpy as np

from medfm.report.aggregate import Group


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def label_efficiency(groups: list[Group], dataset: str) -> bytes:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    lines: dict[str, list[Group]] = defaultdict(list)
    for g in groups:
        if g.dataset == dataset:
            lines[g.title].append(g)
    for label, gs in sorted(lines.items()):
        gs = sorted(gs, key=lambda g: g.fraction)
        ax.errorbar([g.fraction for g in gs], [g.mean for g in gs], yerr=[g.std for g in gs], marker="o", capsize=3,
                    label=label)
    ax.set_xscale("log")
    ax.set_xlabel("label fraction of train (log)")
    metric = next(g.metric for g in groups if g.dataset == dataset)
    ax.set_ylabel(f"test {metric} (mean ± std over seeds)")
    ax.set_title(f"label efficiency — {dataset}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _png(fig)


def confusion(g: Group) -> bytes | None:
    from sklearn.metrics import confusion_matrix

    pred = g.rows[0].get("predictions", {}).get("test")
    if not pred or np.asarray(pred["y_true"]).ndim != 1:
        return None
    y, p = np.asarray(pred["y_true"]), np.asarray(pred["y_score"])
    classes = g.rows[0].get("classes") or [str(i) for i in range(p.shape[1])]
    cm = confusion_matrix(y, p.argmax(1), labels=np.arange(p.shape[1]))
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.2 + 0.6 * len(classes), 1.0 + 0.6 * len(classes)))
    ax.imshow(cm, cmap="Blues")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{g.dataset}: {g.title} (seed {g.rows[0].get('seed', 0)})", fontsize=9)
    return _png(fig)


def roc_curves(groups: list[Group], dataset: str) -> bytes | None:
    from sklearn.metrics import auc, roc_curve

    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 5))
    drawn = 0
    for g in groups:
        pred = g.rows[0].get("predictions", {}).get("test") if g.dataset == dataset else None
        if not pred:
            continue
        y, p = np.asarray(pred["y_true"]), np.asarray(pred["y_score"])
        if y.ndim == 1 and p.shape[1] == 2:
            fpr, tpr, _ = roc_curve(y, p[:, 1])
        else:  # multiclass / multilabel: micro-averaged one-vs-rest
            onehot = y if y.ndim == 2 else np.eye(p.shape[1], dtype=np.int64)[y]
            fpr, tpr, _ = roc_curve(onehot.ravel(), p.ravel())
        ax.plot(fpr, tpr, label=f"{g.title} (AUC {auc(fpr, tpr):.3f})")
        drawn += 1
    if not drawn:
        _plt().close(fig)
        return None
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"ROC (test, full label budget, first seed) — {dataset}", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    return _png(fig)


def ranking(ranks: dict[str, float]) -> bytes:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 0.5 + 0.4 * len(ranks)))
    names = list(ranks)[::-1]
    ax.barh(names, [ranks[n] for n in names], color="tab:blue")
    ax.set_xlabel("mean rank over datasets (1 = best; each backbone's best head)")
    ax.set_title("backbone ranking")
    return _png(fig)


def training_curve(record: dict) -> bytes:
    plt = _plt()
    hist = record["history"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ep = [h.get("epoch", i + 1) for i, h in enumerate(hist)]
    if any("train_loss" in h for h in hist):
        ax.plot(ep, [h.get("train_loss") for h in hist], label="train loss", color="tab:red")
    ax.set_xlabel("epoch")
    ax.set_ylabel("train loss")
    if any("val" in h for h in hist):
        ax2 = ax.twinx()
        ax2.plot(ep, [h.get("val") for h in hist], label="val", color="tab:blue", marker=".")
        ax2.set_ylabel(f"val {record['headline_metric']['name']}")
    ax.set_title(f"{record['dataset']}: {record['backbone']} + {record['head']} [{record.get('kind', 'probe')}] "
                 f"f={record.get('fraction', 1.0):g} seed {record.get('seed', 0)}", fontsize=9)
    return _png(fig)
