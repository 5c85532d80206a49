"""Study 1's training as ordinary ``medfm finetune`` options (issue 17): the warm-up-then-constant schedule,
the optimiser's no-decay rule, the ``study1`` augmentation policy, ``--init-from``, and frozen rows through
the fine-tune path leaving every backbone tensor bit-identical.

References are computed here from study 1's code (sajjad-sh33/Medical-Transfer-Learning @02db977); the
runs use real MobileNetV2 weights at 32-64 px on the real PneumoniaMNIST subset, seconds each.
"""

from __future__ import annotations

import math
import warnings
import numpy as np

import pytest
import torch

from tests.test_finetune import one_thread

EXACT = dict(schedule="constant", warmup_start_lr=1e-8, no_decay="biases_norms", augment="study1", drop_last=True)


class Study1LinearWarmup(torch.optim.lr_scheduler.LRScheduler):
    """Study 1's ``LinearWarmup`` (``utils/_utils.py:L116-164`` @02db977), retyped as the reference: it sets every
    group to ``eta_min``, then adds ``(max_lr - eta_min) / warmup_iters`` per step while its counter is
    ``<= warmup_iters``, the constructor's own step included; ``warmup_epochs`` wins over ``warmup_iters``."""

    def __init__(self, optimizer, max_lr, warmup_iters=0, warmup_epochs=0, eta_min=1e-8, steps_per_epoch=None):
        if warmup_epochs:
            warmup_iters = steps_per_epoch * warmup_epochs
        if not warmup_iters:  # neither set (every dataset but APTOS/DDSM/ISIC/CheXpert, classification.py:L103-112)
            warmup_iters = 1
        self.warmup_iters, self.eta_min, self.max_lr = warmup_iters, eta_min, max_lr
        for group in optimizer.param_groups:
            group["lr"] = eta_min
        super().__init__(optimizer, -1)

    def get_lr(self):
        if self.last_epoch > self.warmup_iters:
            return [g["lr"] for g in self.optimizer.param_groups]
        return [g["lr"] + (1 / self.warmup_iters) * (self.max_lr - self.eta_min) for g in self.optimizer.param_groups]


def study1_rates(steps: int, peak: float, warmup_iters=0, warmup_epochs=0, steps_per_epoch=None) -> list[float]:
    """The rate each optimiser step of study 1's trainer uses (``defaults/trainer.py:L104-126``: step, then
    ``scheduler.step()`` once per iteration)."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=peak)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sched = Study1LinearWarmup(opt, peak, warmup_iters, warmup_epochs, steps_per_epoch=steps_per_epoch)
        rates = []
        for _ in range(steps):
            rates.append(opt.param_groups[0]["lr"])
            sched.step()  # (the optimiser step in between does not touch the rate)
    return rates


def medfm_rates(schedule: str, steps: int, peaks: list[float], start: float, warmup: int) -> list[list[float]]:
    """The rates medfm's ``LambdaLR`` gives each group, built as ``run_finetune`` builds it."""
    from medfm.finetune.engine import lr_lambdas

    opt = torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": p} for p in peaks])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambdas(schedule, peaks, start, warmup, steps))
    rates = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(steps):
            rates.append([g["lr"] for g in opt.param_groups])
            sched.step()
    return rates


def test_constant_schedule_is_study1_linear_warmup_step_for_step():
    from medfm.finetune.engine import lr_at, warmup_cosine

    for warmup_iters, steps in ((250, 260), (7, 30), (1, 5)):  # long (ISIC/CheXpert: 1,000), short, shortest
        ref = study1_rates(steps, 1e-4, warmup_iters=warmup_iters)
        got = medfm_rates("constant", steps, [1e-4, 1e-4], 1e-8, warmup_iters)
        for s in range(steps):
            assert got[s][0] == pytest.approx(ref[s], rel=1e-9, abs=0) and got[s][1] == got[s][0], (warmup_iters, s)
        # the code's off-by-one: peak at step warmup - 1, then one more increment, held
        assert ref[warmup_iters - 1] == pytest.approx(1e-4, rel=1e-9)
        assert ref[-1] == pytest.approx(1e-4 + (1e-4 - 1e-8) / warmup_iters, rel=1e-9)
    # warm-up in epochs (APTOS/DDSM: 5 epochs x steps per epoch), no cap even when it outlasts the run
    ref = study1_rates(40, 1e-4, warmup_iters=1000, warmup_epochs=5, steps_per_epoch=9)
    assert [lr_at("constant", s, 1e-4, 1e-8, 45, 40) for s in range(40)] == pytest.approx(ref, rel=1e-9)
    # cosine from 0 is today's multiplier bit for bit; a start rate lifts the warm-up only
    assert medfm_rates("cosine", 50, [2e-4], 0.0, 5) == [[2e-4 * warmup_cosine(50, 5)(s)] for s in range(50)]
    rates = [r[0] for r in medfm_rates("cosine", 50, [2e-4], 1e-6, 5)]
    assert rates[0] == pytest.approx(1e-6 + (2e-4 - 1e-6) / 5) and rates[4] == pytest.approx(2e-4)
    assert rates[20] == pytest.approx(2e-4 * 0.5 * (1 + math.cos(math.pi * 15 / 45)))
    assert lr_at("constant", 0, 3e-4, 1e-8, 0, 10) == lr_at("constant", 9, 3e-4, 1e-8, 0, 10) == 3e-4
    # the code without any warm-up falls back to one step: lr, then 2 lr - 1e-8 (medfm: --warmup-steps 1)
    ref = study1_rates(4, 1e-4)
    assert ref == pytest.approx([1e-4, 2e-4 - 1e-8, 2e-4 - 1e-8, 2e-4 - 1e-8], rel=1e-9)
    assert [lr_at("constant", s, 1e-4, 1e-8, 1, 4) for s in range(4)] == pytest.approx(ref, rel=1e-9)


def test_study1_no_decay_rule_decays_the_deit_tokens():
    """study 1's get_params_groups (defaults/wrappers.py:L235-251): no decay iff name ends in .bias or 1-D."""
    from medfm.finetune import FinetuneConfig
    from medfm.finetune.model import exempt_from_decay
    from medfm.heads import HEADS

    cfg = FinetuneConfig(backbone="x", dataset="y", head="deit", head_depth=1, deit_weights=_deit_random())
    head = HEADS.get("deit").build_module(16, 2, cfg, 4)
    params = dict(head.named_parameters())
    study = {n for n, p in params.items() if exempt_from_decay(n, p, "biases_norms")}
    assert study == {n for n, p in params.items() if n.endswith(".bias") or len(p.shape) == 1}
    assert "cls_token" not in study and "pos_embed" not in study and "blocks.0.norm1.weight" in study
    medfm = {n for n, p in params.items() if exempt_from_decay(n, p)}
    assert medfm == study | {"cls_token", "pos_embed"}


def test_study1_augmentation_policy_is_the_codes_train_transforms(mobilenet_weights):
    """params.json's train_transforms in get_trans_list's order (defaults/bases.py:L63-158), after the eval
    preprocessing's resize + centre crop, before ToTensor / Normalize."""
    from PIL import Image
    from torchvision import transforms as T

    from medfm.backbones import create_backbone
    from medfm.finetune.data import _flat, policy_for, train_transform

    name, aug = policy_for("study1", "pneumoniamnist", None)
    backbone = create_backbone("mobilenetv2", weights=str(mobilenet_weights), img_size=64)
    steps = _flat(train_transform(backbone, aug))
    kinds = [type(s).__name__ for s in steps]
    eval_kinds = [type(s).__name__ for s in _flat(backbone.transform)]
    at = kinds.index("RandomResizedCrop")
    assert kinds[:at] == eval_kinds[: eval_kinds.index("MaybeToTensor")]  # the 64 px crop first
    assert kinds[at:at + 4] == ["RandomResizedCrop", "RandomVerticalFlip", "RandomHorizontalFlip", "RandomApply"]
    assert kinds[at + 4:] == ["MaybeToTensor", "Normalize"]
    crop, vflip, hflip, jitter = steps[at:at + 4]
    assert crop.size == (64, 64) and crop.scale == (0.8, 1.2) and crop.interpolation == T.InterpolationMode.BILINEAR
    assert crop.ratio == pytest.approx((3 / 4, 4 / 3))
    assert vflip.p == hflip.p == 0.5 and jitter.p == 0.8 and len(jitter.transforms) == 1
    cj = jitter.transforms[0]
    assert [*cj.brightness, *cj.contrast, *cj.saturation, *cj.hue] == pytest.approx([0.8, 1.2, 0.8, 1.2, 0.9, 1.1,
                                                                                     -0.1, 0.1])
    img = Image.new("L", (90, 70), 128)
    assert train_transform(backbone, aug)(img).shape == (3, 64, 64)


def _deit_random():
    """'random' where the deit head takes it (issue 17 makes ImageNet its default); None where None is random."""
    from medfm.errors import MedfmError
    from medfm.finetune import FinetuneConfig
    from medfm.heads import HEADS

    try:
        cfg = FinetuneConfig(backbone="mobilenetv2", dataset="x", head="deit", head_depth=1, deit_weights="random")
        HEADS.get("deit").build_module(8, 2, cfg, 4)
        return "random"
    except MedfmError:
        return None


def _cfg(pneu_subset, mobilenet_weights, out, **kw):
    from medfm.finetune import FinetuneConfig

    base = dict(backbone="mobilenetv2", weights=str(mobilenet_weights), dataset=str(pneu_subset), img_size=64,
                unfreeze=0, epochs=2, batch_size=8, fraction=0.25, lr=1e-3, seed=0, num_workers=0, deterministic=True,
                out=str(out), results=str(out.parent / "results.sqlite"))
    return FinetuneConfig(**{**base, **kw})


@pytest.mark.parametrize("head", ["linear", "deit"])
def test_frozen_row_leaves_every_backbone_tensor_bit_identical(head, pneu_subset, mobilenet_weights, tmp_path):
    """unfreeze=0 with study 1's training: only the head trains; every backbone parameter AND buffer
    (MobileNetV2's BatchNorm running statistics) is bit-identical to the weights file afterwards."""
    from medfm.backbones import create_backbone
    from medfm.finetune import run_finetune
    from medfm.finetune.engine import lr_at
    from medfm.heads import HEADS

    extra = dict(head_depth=1, deit_weights=_deit_random()) if head == "deit" else {}
    cfg = _cfg(pneu_subset, mobilenet_weights, tmp_path / head, head=head, warmup_epochs=1, **EXACT, **extra)
    with one_thread():
        rec = run_finetune(cfg)
    fresh = create_backbone("mobilenetv2", weights=str(mobilenet_weights), img_size=64)
    want = {k: v.clone() for k, v in fresh.net.state_dict().items()}
    assert any("running_mean" in k for k in want)
    trained = torch.load(tmp_path / head / "model.pt", weights_only=True)
    assert {k[4:] for k in trained if k.startswith("net.")} == set(want)
    assert all(torch.equal(trained["net." + k], v) for k, v in want.items())
    # the head did train, and it is all that trained
    torch.manual_seed(0)
    dim, tokens = (1280, 4)
    untrained = HEADS.get(head).build_module(dim, 2, cfg, tokens).state_dict()
    assert any(not torch.equal(trained["head." + k], v) for k, v in untrained.items())
    assert rec["trainable_params"] == sum(v.numel() for v in untrained.values() if v.is_floating_point())
    # the schedule ran as the code's: 16 images / batch 8 (drop_last) = 2 steps per epoch, 1 warm-up epoch
    hp = rec["hyperparameters"]
    assert hp["precision"] == "fp32"  # CPU trains in fp32 whatever amp says
    assert hp["warmup_steps"] == 2 and hp["schedule"] == "constant" and hp["augment"] == "study1"
    for e, h in enumerate(rec["history"]):
        assert h["lr"] == pytest.approx(lr_at("constant", 2 * (e + 1), 1e-3, 1e-8, 2, 4), rel=1e-12)
    # a backbone in train mode would have moved those statistics: the check above can fail
    fresh.net.train()
    with torch.no_grad():
        fresh.net(torch.randn(4, 3, 64, 64))
    assert any(not torch.equal(fresh.net.state_dict()[k], v) for k, v in want.items() if "running_mean" in k)


def test_init_from_round_trip_and_identity(pneu_subset, mobilenet_weights, tmp_path):
    """A fine-tune's model.pt loaded with --init-from is the same model: the same tensors, the same val
    predictions; its path and sha256 are in the run identity; a head of another shape is refused."""
    from medfm.config import FinetuneConfig
    from medfm.errors import MedfmError
    from medfm.finetune import run_finetune
    from medfm.finetune.data import eval_loader
    from medfm.finetune.engine import predict
    from medfm.finetune.initfrom import load_init
    from medfm.finetune.runner import build_model, finetune_inputs, finetune_run_key
    from medfm.distributed import Dist
    from medfm.heads import HEADS
    from medfm.metrics import compute_metrics

    with one_thread():
        a = run_finetune(_cfg(pneu_subset, mobilenet_weights, tmp_path / "a", img_size=32, unfreeze=1, epochs=1))
        saved = torch.load(tmp_path / "a" / "model.pt", weights_only=True)
        cfg = _cfg(pneu_subset, mobilenet_weights, tmp_path / "b", img_size=32, unfreeze=1, epochs=1,
                   init_from=str(tmp_path / "a" / "model.pt"))
        dataset, spec = finetune_inputs(cfg)
        model, init = build_model(cfg, spec, HEADS.get("linear"), 2)
        assert init["tensors_loaded"] == len(saved) and init["tensors_from_weights"] == 0
        assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())
        val = dataset.splits["val"]
        d = Dist()
        probs = predict(model, eval_loader(val, model._backbone.transform, 0, 1, 16, 0, False), len(val), "binary",
                        torch.device("cpu"), False, d)
        assert compute_metrics("binary", val.labels, probs) == a["val"]
        # the backbone only: the head starts fresh (study 1's load_from_pretrained)
        fresh_head, _ = build_model(cfg.model_copy(update={"init_from": None}), spec, HEADS.get("linear"), 2)
        load_init(fresh_head, cfg.init_from, "backbone")
        state = fresh_head.state_dict()
        assert all(torch.equal(state[k], v) for k, v in saved.items() if k.startswith("net."))
        assert not torch.equal(state["head.weight"] if "head.weight" in state else state["head.fc.weight"],
                               saved["head.weight"] if "head.weight" in saved else saved["head.fc.weight"])
        three, _ = build_model(cfg.model_copy(update={"init_from": None}), spec, HEADS.get("linear"), 3)
        with pytest.raises(MedfmError, match="init-from-parts backbone"):
            load_init(three, cfg.init_from, "all")
        torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "not-weights.pt")
        with pytest.raises(MedfmError, match="holds no state_dict of named tensors"):
            load_init(three, str(tmp_path / "not-weights.pt"))
        b = run_finetune(cfg)
    plain = FinetuneConfig(**{**cfg.model_dump(), "init_from": None})
    assert b["identity"]["finetune"]["init_from"] == {"path": str((tmp_path / "a" / "model.pt").resolve()),
                                                      "sha256": init["sha256"]}
    assert b["init_from"]["sha256"] == init["sha256"] and len(init["sha256"]) == 64
    assert b["run_key"] != finetune_run_key(plain)


def test_new_options_at_their_defaults_leave_run_keys_as_they_were():
    """A fine-tune that sets none of these options has the key and identity it had before they existed."""
    from medfm.finetune import FinetuneConfig
    from medfm.finetune.runner import ADDED_AT_DEFAULT, identity_settings

    plain = FinetuneConfig(backbone="mobilenetv2", dataset="busi")
    assert {k: getattr(plain, k) for k in ADDED_AT_DEFAULT} == ADDED_AT_DEFAULT
    assert not set(identity_settings(plain)) & set(ADDED_AT_DEFAULT)
    assert set(plain.to_dict()) - set(identity_settings(plain)) == set(ADDED_AT_DEFAULT)
    exact = identity_settings(plain.model_copy(update={"schedule": "constant", "warmup_start_lr": 1e-8}))
    assert exact["schedule"] == "constant" and exact["warmup_start_lr"] == 1e-8 and "drop_last" not in exact


def test_init_from_a_wrong_file_is_one_error_line(cli, pneu_subset, mobilenet_weights, tmp_path):
    line = cli.error("finetune", "--backbone", "mobilenetv2", "--weights", mobilenet_weights, "--dataset", pneu_subset,
                     "--img-size", 32, "--epochs", 1, "--init-from", pneu_subset, "--out", tmp_path / "bad")
    assert line.startswith("medfm: error: --init-from") and "not a readable medfm checkpoint" in line


def test_val_drop_last_scores_the_codes_shuffled_full_batches(pneu_subset, mobilenet_weights, tmp_path):
    """--val-drop-last (study 1's val loader: shuffle, drop_last): the val metric that picks the epoch is the
    metric of a seeded shuffle of val minus its last incomplete batch; the recorded val/test metrics still use
    every image. Checked against the saved model's own val predictions."""
    from medfm.distributed import Dist
    from medfm.errors import MedfmError
    from medfm.finetune import run_finetune
    from medfm.finetune.data import eval_loader
    from medfm.finetune.engine import predict
    from medfm.finetune.runner import build_model, finetune_inputs, finetune_run_key, val_rows
    from medfm.heads import HEADS
    from medfm.metrics import compute_metrics

    rows = val_rows(32, 12, 0, 0)
    assert len(rows) == 24 and len(set(rows.tolist())) == 24 and rows.max() < 32
    assert np.array_equal(rows, val_rows(32, 12, 0, 0)) and not np.array_equal(rows, val_rows(32, 12, 0, 1))
    with pytest.raises(MedfmError, match="fewer than one batch of 64"):
        val_rows(32, 64, 0, 0)

    cfg = _cfg(pneu_subset, mobilenet_weights, tmp_path / "v", img_size=32, epochs=1, batch_size=12, keep="last",
               val_drop_last=True)
    with one_thread():
        rec = run_finetune(cfg)
        dataset, spec = finetune_inputs(cfg)
        model, _ = build_model(cfg.model_copy(update={"init_from": None}), spec, HEADS.get("linear"), 2)
        model.load_state_dict(torch.load(tmp_path / "v" / "model.pt", weights_only=True))
        val = dataset.splits["val"]
        probs = predict(model, eval_loader(val, model._backbone.transform, 0, 1, 16, 0, False), len(val), "binary",
                        torch.device("cpu"), False, Dist())
    assert compute_metrics("binary", val.labels, probs) == rec["val"]  # the record: every val image
    kept = val_rows(len(val), 12, 0, 0)
    scored = compute_metrics("binary", val.labels[kept], probs[kept], ["roc_auc"])["roc_auc"]
    assert rec["history"][0]["val_roc_auc"] == pytest.approx(scored, abs=1e-12)
    assert rec["hyperparameters"]["val_drop_last"] is True
    assert finetune_run_key(cfg) != finetune_run_key(cfg.model_copy(update={"val_drop_last": False}))


def test_finetune_rows_record_a_test_ci_and_study3s_mean_of_replicates(pneu_subset, mobilenet_weights, tmp_path):
    """Fine-tune records carry a test-set CI (default: percentile of 1,000 resamples); ``ci=mean_of_replicates``
    records study 3's interval and the replicates' mean, recomputed here from the record's own test scores."""
    from medfm.finetune import run_finetune
    from medfm.finetune.runner import finetune_run_key
    from medfm.protocol import bootstrap_ci, bootstrap_replicates, mean_of_replicates_ci

    cfg = _cfg(pneu_subset, mobilenet_weights, tmp_path / "p", img_size=32, epochs=1)
    with one_thread():
        plain = run_finetune(cfg)
        study3 = run_finetune(cfg.model_copy(update={"out": str(tmp_path / "m"), "ci": "mean_of_replicates",
                                                     "bootstrap": 500}))
    for rec in (plain, study3):
        y = np.asarray(rec["predictions"]["test"]["y_true"])
        scores = np.asarray(rec["predictions"]["test"]["y_score"])
        head = rec["headline_metric"]
        if rec is plain:
            assert head["bootstrap"] == 1000 and "ci" not in head
            assert head["ci95"] == list(bootstrap_ci("roc_auc", y, scores, 1000, seed=0))
        else:
            reps = bootstrap_replicates("roc_auc", y, scores, 500)
            assert head["ci"] == "mean_of_replicates" and head["bootstrap"] == 500
            assert head["ci95"] == list(mean_of_replicates_ci(reps)) and head["replicate_mean"] == reps.mean()
            assert head["ci95"][1] - head["ci95"][0] < (plain["headline_metric"]["ci95"][1] - plain["headline_metric"]["ci95"][0]) / 5
    assert plain["headline_metric"]["value"] == study3["headline_metric"]["value"]  # the same model and test rows
    assert plain["run_key"] == finetune_run_key(cfg) != study3["run_key"]


def test_study3_training_order_and_eval_mode_after_the_first_validation(pneu_subset, mobilenet_weights, tmp_path):
    """``train_shuffle=false`` visits the rows in the same order every epoch; ``eval_after_first_val`` trains
    epoch 2 on in eval mode, so a fully unfrozen MobileNetV2's BatchNorm statistics after 2 epochs are those
    after epoch 1 (a 1-epoch run, same seed and constant rate), while its weights did move; without the option
    they move on."""
    from torch.utils.data import TensorDataset

    from medfm.finetune import run_finetune
    from medfm.finetune.data import train_loader

    ds = TensorDataset(torch.arange(10))
    fixed = train_loader(ds, np.zeros(10, int), 4, False, 0, 0, 1, 0, False, torch.Generator(), shuffle=False)
    orders = []
    for epoch in range(2):
        fixed.sampler.set_epoch(epoch)
        orders.append(list(fixed.sampler))
    assert orders == [list(range(10))] * 2
    mixed = train_loader(ds, np.zeros(10, int), 4, False, 0, 0, 1, 0, False, torch.Generator())
    assert list(mixed.sampler) != list(range(10))

    common = dict(img_size=32, unfreeze="all", schedule="constant", warmup_steps=0, train_shuffle=False, keep="last")
    with one_thread():
        run_finetune(_cfg(pneu_subset, mobilenet_weights, tmp_path / "one", epochs=1, **common))
        two = run_finetune(_cfg(pneu_subset, mobilenet_weights, tmp_path / "two", epochs=2, eval_after_first_val=True,
                                **common))
        run_finetune(_cfg(pneu_subset, mobilenet_weights, tmp_path / "plain", epochs=2, **common))
    states = {k: torch.load(tmp_path / k / "model.pt", weights_only=True) for k in ("one", "two", "plain")}
    stats = [k for k in states["one"] if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(states["two"][k], states["one"][k]) for k in stats)
    assert any(not torch.equal(states["plain"][k], states["one"][k]) for k in stats)
    conv = next(k for k in states["one"] if k.endswith("weight") and states["one"][k].ndim == 4)
    assert not torch.equal(states["two"][conv], states["one"][conv])  # it trained, in eval mode
    assert two["hyperparameters"]["eval_after_first_val"] is True and two["hyperparameters"]["train_shuffle"] is False


def test_val_batch_mean_is_study3s_mean_of_per_batch_accuracies(pneu_subset, mobilenet_weights, tmp_path):
    """--val-batch-mean: the epoch's val score is the mean of the per-batch metric over the seeded shuffle in
    batches of --batch-size, the last smaller batch kept (32 val rows, batch 12: 12 + 12 + 8), checked against
    the saved model's own val predictions; the record's val metrics pool every image."""
    from medfm.distributed import Dist
    from medfm.finetune import run_finetune
    from medfm.finetune.data import eval_loader
    from medfm.finetune.engine import predict
    from medfm.finetune.runner import build_model, finetune_inputs, val_order
    from medfm.heads import HEADS
    from medfm.metrics import compute_metrics

    cfg = _cfg(pneu_subset, mobilenet_weights, tmp_path / "b", img_size=32, epochs=1, batch_size=12, keep="last",
               val_batch_mean=True, metric="accuracy")
    with one_thread():
        rec = run_finetune(cfg)
        dataset, spec = finetune_inputs(cfg)
        model, _ = build_model(cfg, spec, HEADS.get("linear"), 2)
        model.load_state_dict(torch.load(tmp_path / "b" / "model.pt", weights_only=True))
        val = dataset.splits["val"]
        probs = predict(model, eval_loader(val, model._backbone.transform, 0, 1, 16, 0, False), len(val), "binary",
                        torch.device("cpu"), False, Dist())
    order = val_order(len(val), 0, 0)
    batches = [order[:12], order[12:24], order[24:]]
    want = np.mean([compute_metrics("binary", val.labels[b], probs[b], ["accuracy"])["accuracy"] for b in batches])
    assert rec["history"][0]["val_accuracy"] == pytest.approx(want, abs=1e-12)
    assert rec["val"]["accuracy"] == compute_metrics("binary", val.labels, probs, ["accuracy"])["accuracy"]
    assert rec["hyperparameters"]["val_batch_mean"] is True


def _scaled_run(scaler, opt_cls=torch.optim.SGD, scale_x=1.0, clip=0.05, steps=4):
    """A few real training steps of train_epoch on a small MLP: with a loss scaler or without."""
    from medfm.distributed import Dist
    from medfm.finetune.engine import train_epoch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 3))
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(steps * 4, 8, generator=gen) * scale_x
    labels = torch.randint(0, 3, (steps * 4,), generator=gen)
    loader = [(x[k:k + 4], torch.arange(k, k + 4), []) for k in range(0, steps * 4, 4)]
    opt = opt_cls(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    train_epoch(model, loader, labels, opt, sched, task="multiclass", weight=None, accum=1, clip=clip,
                device=torch.device("cpu"), amp=False, d=Dist(), scaler=scaler)
    return model, sched


def test_fp16_loss_scaling_clips_and_steps_as_unscaled_training():
    """amp_dtype=fp16's GradScaler path (study 1's trainer): the loss is scaled before backward and the gradients
    unscaled before the clip, so with exact power-of-two scaling the weights are those of unscaled training,
    clip active (SGD: a clip of scaled gradients would shrink every step 2**16-fold). A step whose scaled
    gradients overflow is skipped, the scale halves, and the schedule still advances, as the code's."""
    plain, _ = _scaled_run(None)
    scaled, _ = _scaled_run(torch.amp.GradScaler("cpu", init_scale=2.0 ** 16))
    for a, b in zip(plain.parameters(), scaled.parameters()):
        assert torch.allclose(a, b, rtol=0, atol=1e-6)
    torch.manual_seed(0)
    start = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 3))
    assert any(not torch.equal(a, b) for a, b in zip(start.parameters(), plain.parameters()))  # it trained
    huge = torch.amp.GradScaler("cpu", init_scale=2.0 ** 127, growth_interval=1000)
    skipped, sched = _scaled_run(huge, scale_x=1e4, steps=1)
    assert all(torch.equal(a, b) for a, b in zip(start.parameters(), skipped.parameters()))  # overflowed: no step
    assert huge.get_scale() == 2.0 ** 126 and sched.last_epoch == 1


def test_amp_dtype_fp16_is_study1_exact_and_keeps_other_keys():
    """Study 1's exact rows ask for fp16 + GradScaler; every other fine-tune keeps its key (bf16 is the default)."""
    from medfm.fidelity import STUDY1, Row
    from medfm.finetune import FinetuneConfig
    from medfm.finetune.runner import identity_settings

    settings = STUDY1.row_settings(Row("dinov2_vits14", "busi", "linear", "frozen", 0))
    assert settings["amp"] is True and settings["amp_dtype"] == "fp16"
    plain = FinetuneConfig(backbone="mobilenetv2", dataset="busi")
    assert plain.amp_dtype == "bf16" and "amp_dtype" not in identity_settings(plain)
    assert identity_settings(plain.model_copy(update={"amp_dtype": "fp16"}))["amp_dtype"] == "fp16"
