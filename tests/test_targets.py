"""The targets policy (``medfm.targets``) held by every head and by fine-tuning, on real images.

Real BreastMNIST images through the real DINOv2 ViT-S/14 weights at 56 px (pooled CLS features and
4 x 4 patch tokens), with multilabel targets made for the test: three labels (the real
malignant/benign label, brightness above the median, contrast above the median) and a quarter of
the entries marked ``IGNORE`` (CheXpert's ``uncertain=ignore``). An ignored entry must contribute
exactly zero to the gradient of every loss, to logreg's fit, to kNN votes and to class weights.
Probe and fine-tune must train on the same rows for one (dataset, fraction, seed).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medfm.heads import HEADS, heads_for, needs_tokens
from medfm.targets import IGNORE, class_weights, known_mask, label_budget, loss_grad, masked_loss, rows_sha256

N_TRAIN, N_VAL = 96, 48


@pytest.fixture(scope="module")
def images(data_root):
    npz = np.load(data_root / "breastmnist.npz")
    return npz["train_images"][: N_TRAIN + N_VAL], npz["train_labels"][: N_TRAIN + N_VAL, 0]


def made_up_targets(imgs: np.ndarray, label: np.ndarray, seed: int = 0) -> np.ndarray:
    """[N, 3] uint8: the real label, bright, high-contrast; 25 % of the entries IGNORE."""
    flat = imgs.reshape(len(imgs), -1).astype(np.float64)
    y = np.stack([label, flat.mean(1) > np.median(flat.mean(1)), flat.std(1) > np.median(flat.std(1))], 1)
    y = y.astype(np.uint8)
    y[np.random.default_rng(seed).random(y.shape) < 0.25] = IGNORE
    return y


@pytest.fixture(scope="module")
def real(images, dinov2_s_weights):
    """Pooled features, tokens and made-up multilabel targets of real images; the backbone that made them."""
    from PIL import Image

    from medfm.backbones import create_backbone

    imgs, label = images
    bb = create_backbone("dinov2_vits14", weights=str(dinov2_s_weights), img_size=56)
    x = torch.stack([bb.transform(Image.fromarray(im)) for im in imgs])
    with torch.no_grad():
        pooled, tokens = bb.embed(x, with_tokens=True)
    y = made_up_targets(imgs, label)
    assert ((y == 0).sum(0) > 5).all() and ((y == 1).sum(0) > 5).all() and (y == IGNORE).sum() > 50
    return {"x": x, "pooled": pooled.numpy(), "tokens": tokens.numpy(), "y": y, "backbone": bb}


def split(a):
    return a[:N_TRAIN], a[N_TRAIN:]


def ignored(y) -> np.ndarray:
    return ~np.asarray(known_mask(np.asarray(y)))


# -- gradients: linear, DeiT and fine-tune losses ------------------------------------------------------

def test_linear_grid_gradient_is_autograd_of_the_masked_loss_and_zero_on_ignored_entries(real):
    X, y = real["pooled"][:N_TRAIN], real["y"][:N_TRAIN]
    yt = torch.as_tensor(y.astype(np.float32))
    W = torch.randn(X.shape[1], 4, 3, generator=torch.Generator().manual_seed(0)) * 0.05  # 4 heads of a grid
    logits = torch.einsum("bd,dgc->bgc", torch.as_tensor(X), W).requires_grad_(True)
    weight = torch.as_tensor(class_weights(y, 3, "multilabel"))
    sum(masked_loss(logits[:, g], yt, "multilabel", weight) for g in range(4)).backward()
    closed = loss_grad(logits.detach(), yt, "multilabel", weight)  # what LinearProbe steps with
    torch.testing.assert_close(closed, logits.grad, rtol=1e-5, atol=1e-7)
    off = torch.as_tensor(ignored(y))
    assert (closed[off.unsqueeze(1).expand_as(closed)] == 0).all()  # exactly zero, every head
    assert (closed[~off.unsqueeze(1).expand_as(closed)] != 0).all()
    # single-label, class-weighted: the same function, the same agreement
    yl = torch.as_tensor(real["y"][:N_TRAIN, 0].clip(max=1).astype(np.int64))
    w1 = torch.as_tensor(class_weights(yl.numpy(), 2, "binary"))
    z = logits.detach()[:, :, :2].clone().requires_grad_(True)
    sum(masked_loss(z[:, g], yl, "binary", w1) for g in range(4)).backward()
    torch.testing.assert_close(loss_grad(z.detach(), yl, "binary", w1), z.grad, rtol=1e-5, atol=1e-7)


@pytest.fixture
def head_outputs():
    """Every output of a ``DeiTHead`` or fine-tune head during training, kept with its gradient."""
    from medfm.heads.deit import DeiTHead

    seen = []

    def keep(module, inputs, output):
        if isinstance(module, (DeiTHead, torch.nn.Linear)) and output.requires_grad and getattr(module, "_watch", False):
            output.retain_grad()
            seen.append((inputs[0].detach(), output))

    handle = torch.nn.modules.module.register_module_forward_hook(keep)
    yield seen
    handle.remove()


def test_deit_probe_gets_no_gradient_from_ignored_entries(real, head_outputs):
    from medfm.config import ProbeConfig
    from medfm.heads.deit import DeiTHead

    tokens, y = real["tokens"][:N_TRAIN], real["y"][:N_TRAIN]
    DeiTHead._watch = True
    try:
        cfg = ProbeConfig(cache="-", head="deit", head_depth=1, deit_weights="random", epochs=1, head_batch_size=32,
                          class_weight=True)
        probe = HEADS.get("deit").build_probe(cfg, "multilabel", "roc_auc", "cpu")
        probe.fit(tokens, y, real["tokens"][N_TRAIN:], real["y"][N_TRAIN:], num_classes=3)
    finally:
        del DeiTHead._watch
    batches = [(x, out) for x, out in head_outputs if out.grad is not None]
    assert sum(len(x) for x, _ in batches) == N_TRAIN  # one epoch: every training row once
    flat = torch.as_tensor(tokens).flatten(1)
    for x, out in batches:
        rows = (x.flatten(1)[:, None, :] == flat[None]).all(-1).float().argmax(1)  # which rows this batch holds
        off = torch.as_tensor(ignored(y[rows.numpy()]))
        assert (out.grad[off] == 0).all() and (out.grad[~off] != 0).all()


def test_finetune_loss_gets_no_gradient_from_ignored_entries(real, head_outputs):
    from medfm.distributed import Dist
    from medfm.finetune import FinetuneConfig
    from medfm.finetune.engine import train_epoch
    from medfm.finetune.model import FinetuneModel

    n = 32  # two batches of real images through the backbone (last block trainable) and the head
    y = torch.as_tensor(real["y"][:n])
    cfg = FinetuneConfig(backbone="dinov2_vits14", dataset="-", head="linear")
    head = HEADS.get("linear").build_module(384, 3, cfg, 16)
    torch.nn.init.normal_(head.weight, std=0.05)  # away from the zero init, so every logit differs
    head._watch = True
    model = FinetuneModel(real["backbone"], head, HEADS.get("linear").reads, unfreeze=1)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    idx = list(range(n))
    loader = [(real["x"][i : i + 16], idx[i : i + 16], []) for i in range(0, n, 16)]
    weight = torch.as_tensor(class_weights(real["y"][:n], 3, "multilabel"))
    train_epoch(model, loader, y, opt, sched, task="multilabel", weight=weight, accum=1, clip=None,
                device=torch.device("cpu"), amp=False, d=Dist())
    outs = [out for _, out in head_outputs]
    assert len(outs) == len(loader)
    grad = torch.cat([o.grad for o in outs])
    off = torch.as_tensor(ignored(real["y"][:n]))
    assert off.sum() > 10 and (grad[off] == 0).all() and (grad[~off] != 0).all()


# -- logreg, kNN, class weights ------------------------------------------------------------------------------

def test_logreg_fits_each_label_on_its_known_rows_only(real):
    from sklearn.linear_model import LogisticRegression

    from medfm.heads.logreg import LogRegProbe

    (X, Xv), (y, yv) = split(real["pooled"]), split(real["y"])
    probe = LogRegProbe("multilabel", "roc_auc", wds=[1e-3]).fit(X, y, Xv, yv)
    Xs = probe.scaler_.transform(X)
    for c, model in enumerate(probe.model_):
        rows = np.flatnonzero(y[:, c] != IGNORE)
        ref = LogisticRegression(C=1.0 / (1e-3 * len(rows)), max_iter=1000, random_state=0).fit(Xs[rows], y[rows, c])
        np.testing.assert_allclose(model.coef_, ref.coef_, rtol=1e-6, atol=1e-8)
    assert probe.predict_proba(Xv).shape == (N_VAL, 3) and np.isfinite(probe.score(Xv, yv))


def test_knn_votes_and_class_weights_count_known_labels_only(real):
    from medfm.heads.knn import KNNProbe

    (X, Xv), (y, yv) = split(real["pooled"]), split(real["y"])
    probe = KNNProbe("multilabel", "roc_auc", ks=[7], temperature=0.07).fit(X, y, Xv, yv)
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    sim = unit(Xv.astype(np.float64)) @ unit(X.astype(np.float64)).T
    top = np.argsort(-sim, axis=1)[:, :7]
    w = np.exp(np.take_along_axis(sim, top, 1) / 0.07)[..., None]
    known, pos = (y != IGNORE)[top], (y == 1)[top]
    expected = (w * pos).sum(1) / (w * known).sum(1)  # a neighbour votes only on labels it knows
    np.testing.assert_allclose(probe.predict_proba(Xv), expected, rtol=2e-4)
    naive = (w * np.where(y == IGNORE, 255, y)[top]).sum(1) / w.sum(1)  # 255 as a vote: what must not happen
    assert np.abs(naive - expected).max() > 1

    pw = class_weights(y, 3, "multilabel")
    np.testing.assert_allclose(pw, [(y[:, c] == 0).sum() / (y[:, c] == 1).sum() for c in range(3)], rtol=1e-6)
    assert not np.allclose(pw, (len(y) - y.sum(0)) / np.maximum(y.sum(0), 1))  # 255 as 255 positives: what must not happen
    assert class_weights(np.where(y == IGNORE, 0, y), 3, "multilabel").tolist() != pw.tolist()  # ignored != negative


def test_every_head_trains_on_multilabel_targets_with_ignored_entries(real):
    """Each registered probe head, built from the registry and fed what it declares it reads."""
    from medfm.config import ProbeConfig

    cfg = ProbeConfig(cache="-", epochs=1, head_depth=1, deit_weights="random", ks=[5, 10], lrs=[1e-3, 1e-2],
                      wds=[0.0, 1e-3], min_steps=50)
    (y, yv) = split(real["y"])
    scores = {}
    for name in heads_for("probe"):
        spec = HEADS.get(name)
        X, Xv = split(real["tokens"] if spec.reads == "tokens" else real["pooled"])
        head = spec.build_probe(cfg, "multilabel", "roc_auc", "cpu").fit(X, y, Xv, yv, num_classes=3)
        p = head.predict_proba(Xv)
        assert p.shape == (N_VAL, 3) and np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all(), name
        assert head.predict(Xv).shape == (N_VAL, 3) and set(np.unique(head.predict(Xv))) <= {0, 1}
        scores[name] = head.score(Xv, yv)
    assert all(s > 0.6 for n, s in scores.items() if n != "deit"), scores  # brightness/contrast are easy from features
    assert needs_tokens(["linear", "deit"]) and not needs_tokens(["linear", "logreg", "knn"])


# -- one label budget for probe and fine-tune ---------------------------------------------------------------

def _manifest(root, imgs, cols: dict[str, np.ndarray], splits: np.ndarray):
    from PIL import Image

    root.mkdir()
    lines = [",".join(["path", *cols, "split"])]
    for i, im in enumerate(imgs):
        Image.fromarray(im).save(root / f"{i}.png")
        lines.append(",".join([f"{i}.png", *(str(v[i]) for v in cols.values()), splits[i]]))
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root / "labels.csv"


def _budget_datasets(tmp_path, imgs, label):
    """Three real-image datasets: binary, multiclass with one single-image class in train, multilabel."""
    n = 48
    imgs, label = imgs[:n], label[:n]
    splits = np.array(["train"] * 32 + ["val"] * 8 + ["test"] * 8)
    names = np.array(["malignant", "benign"])[label]
    three = names.copy()
    three[[3, 33, 41]] = "rare"  # exactly one rare image in train (and one each in val and test)
    ml = made_up_targets(imgs, label)
    ml[ml == IGNORE] = 0  # a manifest holds 0/1 only
    return {
        "binary": _manifest(tmp_path / "binary", imgs, {"label": names}, splits),
        "one-sample class": _manifest(tmp_path / "rare", imgs, {"label": three}, splits),
        "multilabel": _manifest(tmp_path / "ml", imgs, {f"l{c}": ml[:, c] for c in range(3)}, splits),
    }


def test_probe_and_finetune_train_on_the_same_rows(images, mobilenet_weights, tmp_path):
    from medfm.config import ExtractConfig, ProbeConfig
    from medfm.data import create_dataset
    from medfm.extract import run_extract
    from medfm.finetune import FinetuneConfig, run_finetune
    from medfm.probe import run_probe

    store = str(tmp_path / "results.sqlite")
    for kind, csv in _budget_datasets(tmp_path, *images).items():
        common = dict(backbone="mobilenetv2", weights=str(mobilenet_weights), dataset=str(csv), img_size=32)
        train_labels = create_dataset(str(csv)).splits["train"].labels
        expected = label_budget(train_labels, 0.25, 1)
        cache = run_extract(ExtractConfig(**common, cache=str(tmp_path / f"{csv.parent.name}.zarr"), num_workers=0,
                                          pixels="none")).cache
        probe = run_probe(ProbeConfig(cache=str(cache), head="knn", ks=[3], fraction=0.25, seed=1, bootstrap=0,
                                      out=str(tmp_path / f"probe-{csv.parent.name}"), results=store))
        ft = run_finetune(FinetuneConfig(**common, unfreeze=0, epochs=1, batch_size=16, fraction=0.25, seed=1,
                                         warmup_steps=0, num_workers=0, save_model=False,
                                         out=str(tmp_path / f"ft-{csv.parent.name}"), results=store))
        assert probe["train_rows_sha256"] == ft["train_rows_sha256"] == rows_sha256(expected), kind
        assert probe["n"]["train"] == ft["n"]["train"] == len(expected), kind
        if kind == "one-sample class":
            assert set(train_labels[expected]) == set(train_labels), "every class keeps >= 1 row"
        if kind == "multilabel":
            kept = train_labels[expected]
            assert ((kept == 1).any(0) & (kept == 0).any(0)).all(), "every label keeps a positive and a negative"


def test_label_budget_policy_on_ignored_entries_and_tiny_classes():
    rng = np.random.default_rng(3)
    y = (rng.random((400, 4)) < 0.03).astype(np.uint8)
    y[rng.random(y.shape) < 0.3] = IGNORE
    y[:, 3] = IGNORE
    y[7, 3] = 1  # label 3: one known positive, no known negative
    keep = label_budget(y, 0.02, 0)
    assert 7 in keep and np.array_equal(keep, label_budget(y, 0.02, 0)) and not np.array_equal(keep, label_budget(y, 0.02, 1))
    for c in range(3):
        assert (y[keep, c] == 1).any() and (y[keep, c] == 0).any()
    assert len(keep) <= round(0.02 * 400) + 2 * 4  # the random share, plus at most one top-up per label and value
    single = np.array([0] * 60 + [1] * 39 + [2])
    kept = label_budget(single, 0.1, 0)
    assert 99 in kept and set(single[kept]) == {0, 1, 2} and np.array_equal(label_budget(single, 1.0, 0), np.arange(100))
