import numpy as np
import pytest
from sklearn import metrics as skm

from medfm.errors import MedfmError
from medfm.metrics import METRICS, check_metric_for_task, compute_metrics, metrics_for_task

rng = np.random.default_rng(0)


def softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_binary_auc_matches_sklearn():
    y = rng.integers(0, 2, 200)
    p = softmax(rng.normal(size=(200, 2)) + y[:, None] * np.array([0, 1.0]))
    assert METRICS.get("roc_auc").fn(y, p) == pytest.approx(skm.roc_auc_score(y, p[:, 1]))


def test_multiclass_auc_is_macro_one_vs_rest():
    y = rng.integers(0, 4, 300)
    p = softmax(rng.normal(size=(300, 4)) + np.eye(4)[y])
    ours = METRICS.get("roc_auc").fn(y, p)
    assert ours == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr", average="macro"))


def test_multiclass_auc_skips_classes_absent_from_the_split():
    y = np.array([0, 0, 1, 1, 0, 1])  # class 2 never occurs
    p = softmax(rng.normal(size=(6, 3)))
    onehot = np.eye(3)[y]
    expected = np.mean([skm.roc_auc_score(onehot[:, c], p[:, c]) for c in (0, 1)])
    assert METRICS.get("roc_auc").fn(y, p) == pytest.approx(expected)


def test_multilabel_auc_and_accuracy():
    y = rng.integers(0, 2, (100, 5))
    p = 1 / (1 + np.exp(-(rng.normal(size=(100, 5)) + 2 * y - 1)))
    assert METRICS.get("roc_auc").fn(y, p) == pytest.approx(skm.roc_auc_score(y, p, average="macro"))
    assert METRICS.get("accuracy").fn(y, p) == pytest.approx(((p >= 0.5) == y).mean())
    assert "balanced_accuracy" not in metrics_for_task("multilabel")


def test_quadratic_kappa_and_balanced_accuracy():
    y = np.array([0, 1, 2, 3, 4, 4, 3, 2])
    perfect = np.eye(5)[y]
    assert METRICS.get("quadratic_kappa").fn(y, perfect) == pytest.approx(1.0)
    off_by_one = np.eye(5)[np.clip(y + 1, 0, 4)]
    expected = skm.cohen_kappa_score(y, np.clip(y + 1, 0, 4), weights="quadratic")
    assert METRICS.get("quadratic_kappa").fn(y, off_by_one) == pytest.approx(expected)
    constant = np.tile(np.eye(5)[0], (len(y), 1))
    assert METRICS.get("balanced_accuracy").fn(y, constant) == pytest.approx(1 / 5)


def test_compute_metrics_and_task_check():
    y = rng.integers(0, 3, 60)
    p = softmax(rng.normal(size=(60, 3)))
    out = compute_metrics("multiclass", y, p)
    assert set(out) == set(metrics_for_task("multiclass"))
    with pytest.raises(MedfmError, match="does not apply"):
        check_metric_for_task("balanced_accuracy", "multilabel")
    with pytest.raises(MedfmError, match="did you mean 'roc_auc'"):
        METRICS.get("roc-auc")
