"""Metric registry: every metric medfm reports, declared once with the tasks it applies to.

Convention for all metrics: ``y_true`` is ``[N]`` class indices (binary / multiclass) or ``[N, C]``
0/1 (multilabel); ``y_score`` is ``[N, C]`` probabilities (softmax rows, or independent sigmoids
for multilabel). Threshold metrics use argmax (single-label) or 0.5 (multilabel).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn import metrics as skm

from medfm.registry import Registry

TASKS = ("binary", "multiclass", "multilabel")
IGNORE = 255  # a multilabel target value meaning "not known" (e.g. CheXpert uncertain under policy 'ignore')


@dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable[[np.ndarray, np.ndarray], float]
    tasks: tuple[str, ...]
    description: str


METRICS: Registry[Metric] = Registry("metric", "medfm metrics")


def _metric(name: str, tasks: tuple[str, ...], description: str):
    def wrap(fn):
        METRICS.add(name, Metric(name, fn, tasks, description))
        return fn

    return wrap


def _pred(y_score: np.ndarray) -> np.ndarray:
    return np.asarray(y_score).argmax(axis=1)


def _binary_auc(t: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC of 0/1 targets ``t`` (both present): the Mann-Whitney statistic, tied scores counting one
    half (equal to scikit-learn's ``roc_auc_score`` to float rounding, without its input validation,
    which costs ~10x the sort on a 5,000-row val split; a path probe scores every weight decay). Used per
    column (multiclass, multilabel); the binary AUC stays scikit-learn's own, bit for bit."""
    order = np.argsort(score, kind="stable")
    ranked = score[order]
    first = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])  # where each run of tied scores starts
    ends = np.r_[first[1:], len(ranked)]
    mid_rank = (first + ends + 1) / 2.0  # 1-based average rank of each run
    ranks = np.repeat(mid_rank, ends - first)
    positive = t[order] == 1
    n_pos = int(positive.sum())
    n_neg = len(t) - n_pos
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _auc_per_column(y_onehot: np.ndarray, y_score: np.ndarray) -> float:
    """Mean one-vs-rest AUC over the columns that have both positives and negatives.

    A class absent from a small test split would make sklearn raise; averaging over the columns
    that are defined is what the MedMNIST and CheXpert evaluations do.
    """
    aucs = []
    for c in range(y_onehot.shape[1]):
        known = y_onehot[:, c] != IGNORE  # multilabel targets marked "not known" are left out of that column
        t = y_onehot[known, c]
        if 0 < t.sum() < len(t):
            aucs.append(_binary_auc(t, y_score[known, c]))
    return float(np.mean(aucs)) if aucs else float("nan")


@_metric("roc_auc", TASKS, "area under the ROC curve; macro one-vs-rest for multiclass and multilabel")
def roc_auc(y_true, y_score):
    y_score = np.asarray(y_score, dtype=np.float64)
    y_true = np.asarray(y_true)
    if y_true.ndim == 2:  # multilabel
        return _auc_per_column(y_true, y_score)
    if y_score.shape[1] == 2:
        if len(np.unique(y_true)) < 2:
            return float("nan")
        return float(skm.roc_auc_score(y_true, y_score[:, 1]))  # to the last bit: reports compare it with sklearn's
    onehot = np.eye(y_score.shape[1], dtype=np.int64)[y_true]
    return _auc_per_column(onehot, y_score)


@_metric("roc_auc_ovo", ("multiclass",), "macro one-vs-one ROC-AUC over class pairs (Hand & Till; sklearn "
         "multi_class='ovo'); nan when y_true lacks a class")
def roc_auc_ovo(y_true, y_score):
    y_score = np.asarray(y_score, dtype=np.float64)
    y_true = np.asarray(y_true)
    if len(np.unique(y_true)) != y_score.shape[1]:
        return float("nan")
    return float(skm.roc_auc_score(y_true, y_score, multi_class="ovo", average="macro"))


@_metric("roc_auc_study1", TASKS, "study 1's roc_auc: binary AUC, multiclass one-vs-one (0.5 when a class is "
         "missing), multilabel mean over labels with 0.5 for a label without positives (utils/metrics.py:L21-39, L102-107)")
def roc_auc_study1(y_true, y_score):
    """ROC-AUC as study 1's code logs it (sajjad-sh33/Medical-Transfer-Learning @02db977, ``utils/metrics.py``).

    Single-label (L68-71, L102-107): the softmax of the last class for two classes, else the rows,
    into ``roc_auc_score(..., multi_class='ovo')``; any failure (a class absent from the split)
    scores 0.5. Multilabel (``mean_roc_auc``, L21-39): the mean over ALL labels, a label without
    positives counting 0.5 (medfm's ``roc_auc`` leaves such a label out). Its sample weights
    (1e-6 for negatives, 1 + 1e-6 for positives) are constant within each class, so they do not
    change the AUC; they are passed as the code passes them. A label with positives but no
    negatives makes the code's sklearn call raise (its run stops): nan here. Targets marked
    ``IGNORE`` are left out of their label (the study has none: U-Zeros). The code rounds every
    logged value to 3 decimals (L110-116); this does not.
    """
    y_score = np.asarray(y_score, dtype=np.float64)
    y_true = np.asarray(y_true)
    if y_true.ndim == 2:
        return _mean_auc_study1(y_true, y_score)
    try:
        score = y_score[:, -1] if y_score.shape[1] == 2 else y_score
        return float(skm.roc_auc_score(y_true, score, average="macro", multi_class="ovo"))
    except ValueError:  # the code's bare `except:` -> 0.5 (L105-107)
        return 0.5


def _mean_auc_study1(y_true: np.ndarray, y_score: np.ndarray) -> float:
    aucs = []
    for c in range(y_true.shape[1]):
        known = y_true[:, c] != IGNORE
        t = y_true[known, c].astype(np.float64)
        tar = (t + t**2) / 2
        if tar.sum() == 0:
            aucs.append(0.5)
        elif tar.sum() == len(tar):
            return float("nan")
        else:
            aucs.append(skm.roc_auc_score(tar, y_score[known, c], average="macro", sample_weight=t**2 + 1e-06,
                                          multi_class="ovo"))
    return float(np.mean(aucs))


@_metric("accuracy", TASKS, "fraction correct (multilabel: mean per-label accuracy at 0.5)")
def accuracy(y_true, y_score):
    y_true = np.asarray(y_true)
    if y_true.ndim == 2:
        known = y_true != IGNORE
        return float(((np.asarray(y_score) >= 0.5) == (y_true == 1))[known].mean())
    return float((_pred(y_score) == y_true).mean())


@_metric("balanced_accuracy", ("binary", "multiclass"), "mean per-class recall (= macro recall)")
def balanced_accuracy(y_true, y_score):
    return float(skm.balanced_accuracy_score(y_true, _pred(y_score)))


@_metric("f1_macro", TASKS, "unweighted mean of per-class F1")
def f1_macro(y_true, y_score):
    y_true = np.asarray(y_true)
    if y_true.ndim == 2:
        pred = np.asarray(y_score) >= 0.5
        f1s = [skm.f1_score(y_true[k, c], pred[k, c], zero_division=0)
               for c in range(y_true.shape[1]) for k in [y_true[:, c] != IGNORE]]
        return float(np.mean(f1s))
    labels = np.arange(np.asarray(y_score).shape[1])
    return float(skm.f1_score(y_true, _pred(y_score), labels=labels, average="macro", zero_division=0))


@_metric("precision_macro", ("binary", "multiclass"), "unweighted mean of per-class precision")
def precision_macro(y_true, y_score):
    labels = np.arange(np.asarray(y_score).shape[1])
    return float(skm.precision_score(y_true, _pred(y_score), labels=labels, average="macro", zero_division=0))


@_metric("recall_macro", ("binary", "multiclass"), "unweighted mean of per-class recall over the classes in y_true "
         "or the predictions (study 1's `recall`, ISIC's headline; = balanced_accuracy unless a class is predicted "
         "but absent)")
def recall_macro(y_true, y_score):
    return float(skm.recall_score(y_true, _pred(y_score), average="macro", zero_division=0))


@_metric("cohen_kappa", ("binary", "multiclass"), "Cohen's kappa (unweighted)")
def cohen_kappa(y_true, y_score):
    return float(skm.cohen_kappa_score(y_true, _pred(y_score)))


@_metric("quadratic_kappa", ("binary", "multiclass"), "quadratic-weighted Cohen's kappa (ordinal grades, e.g. APTOS)")
def quadratic_kappa(y_true, y_score):
    labels = np.arange(np.asarray(y_score).shape[1])
    return float(skm.cohen_kappa_score(y_true, _pred(y_score), labels=labels, weights="quadratic"))


def metrics_for_task(task: str) -> list[str]:
    return [name for name, m in METRICS.items() if task in m.tasks]


def compute_metrics(task: str, y_true: np.ndarray, y_score: np.ndarray, names: list[str] | None = None) -> dict[str, float]:
    """Every metric that applies to ``task`` (or just ``names``), as ``{name: value}``."""
    names = names or metrics_for_task(task)
    return {n: METRICS.get(n).fn(y_true, y_score) for n in names}


def check_metric_for_task(name: str, task: str) -> None:
    from medfm.errors import MedfmError

    metric = METRICS.get(name)
    if task not in metric.tasks:
        raise MedfmError(
            f"metric {name!r} does not apply to a {task} task",
            f"choose one of {', '.join(metrics_for_task(task))}",
        )


def stored_scores(y_score: np.ndarray) -> list:
    """Test scores as a record stores them: exactly the values the metrics were computed from, unrounded.

    Rounding (to 5 decimals, as records did before) ties scores that differ by less than the rounding step, and
    a barely-trained head's scores all lie within 1e-5 of each other: its stored AUC could then differ from the
    recorded one by 0.3. Every metric recomputed from these values equals the recorded one."""
    return np.asarray(y_score).tolist()  # float32 or float64 values, each exactly a Python float
