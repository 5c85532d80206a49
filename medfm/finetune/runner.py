"""``medfm finetune``: unfreeze the last N blocks, train with a head, pick the best epoch on val, test it.

The run folder holds ``config.json`` (rerun with ``--config``), ``last.pt`` / ``best.pt`` checkpoints
(every epoch, atomic), ``results.json``, ``model.pt`` (the best model's full state_dict) and
``history.png``. A killed run continues from ``last.pt`` when rerun (``--resume``, the default) and
ends where an uninterrupted one would. The result row goes to the same store as the probes'.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from medfm import __version__
from medfm.backbones import check_grey_mode, resolve_backbone
from medfm.backbones.norm import stats_workers, with_norm
from medfm.data import create_dataset
from medfm.errors import MedfmError
from medfm.extract.loader import default_workers
from medfm.finetune import checkpoint as ckpt
from medfm.config import FinetuneConfig, dataset_options
from medfm.finetune.data import SeededImages, eval_loader, policy_for, train_loader, train_transform
from medfm.distributed import Dist, setup
from medfm.finetune.distributed import load_model_state, load_optimizer_state, model_state, optimizer_state, unwrap, wrap
from medfm.finetune.engine import loss_scaler, lr_lambdas, predict, train_epoch
from medfm.finetune.initfrom import init_identity, load_init
from medfm.finetune.model import FinetuneModel, param_groups
from medfm.heads import HEADS
from medfm.metrics import compute_metrics, stored_scores
from medfm.protocol import ci_record
from medfm.heads.deit_weights import with_deit_identity
from medfm.identity import finetune_identity, preprocessing_record, with_identity
from medfm.results import ResultsStore, finish_run, run_key, start_run
from medfm.targets import class_weights, label_budget, rows_sha256
from medfm.ui import console, progress

# settings that do not change what a run computes (where it writes, how it is launched)
# (grey is in the backbone identity's preprocessing instead, so keys of runs made before it existed stay valid)
NOT_IDENTITY = ("out", "results", "overwrite", "resume", "device", "num_workers", "data_root", "save_model", "grey",
                "resize", "resize_size", "norm",  # in the backbone identity's preprocessing, as grey
                "backbones_file",  # where the user's entry was read; the entry itself is in the backbone identity
                "drop_cutoff", "tokens_from")  # in the backbone identity when set, so earlier keys stay valid


def finetune_inputs(cfg: FinetuneConfig):
    """The dataset and resolved backbone spec a fine-tune reads (no model built, nothing trained)."""
    dataset = create_dataset(cfg.dataset, cfg.data_root, metric=cfg.metric, **dataset_options(cfg))
    check_grey_mode(cfg.grey, dataset)
    reads_tokens = HEADS.get(cfg.head).reads == "tokens"  # --tokens-from matters only to a head that reads tokens
    spec = resolve_backbone(cfg.backbone, cfg.weights, cfg.img_size, cfg.feature, grey=cfg.grey,
                            backbones_file=cfg.backbones_file, drop_cutoff=cfg.drop_cutoff,
                            tokens_from=cfg.tokens_from if reads_tokens else "patch", resize=cfg.resize,
                            resize_size=cfg.resize_size)
    # --norm dataset: the train split's mean/std (computed once, kept beside the caches); protocol: the declared ones
    spec = with_norm(spec, dataset, cfg.norm, cfg.dataset, stats_workers(cfg.num_workers), say=console.print)
    return dataset, spec


# study 1's training options (issue 17), left out of a run's key and identity while at these defaults, so
# fine-tunes made before the options existed keep their keys (a sweep still finds them done) and their
# report groups (as a backbone identity leaves out layers=1)
ADDED_AT_DEFAULT = {"schedule": "cosine", "warmup_start_lr": 0.0, "warmup_epochs": None, "no_decay": "biases_norms_tokens",
                    "drop_last": False, "train_shuffle": True, "eval_after_first_val": False, "val_drop_last": False,
                    "val_batch_mean": False, "bootstrap": 1000, "ci": "percentile", "backbone_eval": False, "init_from": None, "init_from_parts": "all",
                    "mlp_hidden": 256, "amp_dtype": "bf16"}


def val_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """A shuffled val loader's order in one epoch (seeded here by run seed and epoch; the studies' are unseeded)."""
    return np.random.default_rng([seed, epoch, 0x7A1]).permutation(n)


def val_rows(n: int, batch: int, seed: int, epoch: int) -> np.ndarray:
    """The val rows study 1's val loader scores in one epoch: the shuffle without its last incomplete batch
    (``DataLoader(shuffle=True, drop_last=True)``, params.json valloader; the metric pools every kept batch,
    ``defaults/trainer.py:L183-222``)."""
    kept = n - n % batch
    if kept == 0:
        raise MedfmError(f"--val-drop-last: val has {n} images, fewer than one batch of {batch}, so the code's val "
                         "loader would score none", "use a smaller --batch-size, or drop --val-drop-last")
    return val_order(n, seed, epoch)[:kept]


def epoch_val_score(cfg: FinetuneConfig, task: str, metric: str, labels: np.ndarray, probs: np.ndarray, epoch: int) -> float:
    """The val score that picks the tested epoch: the metric of every val image (medfm); of the study 1 val
    loader's rows (``val_drop_last``); or, with ``val_batch_mean``, the mean of the metric of each batch of
    ``--batch-size`` in the shuffled order, the last smaller one included unless dropped (study 3:
    ``np.average`` of per-batch accuracies of a shuffled val loader, ``utils.py:L190-213``)."""
    if not (cfg.val_drop_last or cfg.val_batch_mean):
        return compute_metrics(task, labels, probs, [metric])[metric]
    n = len(probs)
    rows = val_rows(n, cfg.batch_size, cfg.seed, epoch) if cfg.val_drop_last else val_order(n, cfg.seed, epoch)
    if not cfg.val_batch_mean:
        return compute_metrics(task, labels[rows], probs[rows], [metric])[metric]
    batches = [rows[k:k + cfg.batch_size] for k in range(0, len(rows), cfg.batch_size)]
    return float(np.mean([compute_metrics(task, labels[b], probs[b], [metric])[metric] for b in batches]))


def identity_settings(cfg: FinetuneConfig) -> dict:
    """The config as the run's identity holds it: ``init_from`` becomes the file's path and sha256; the
    options of ``ADDED_AT_DEFAULT`` appear only when set to something else."""
    settings = {k: v for k, v in cfg.to_dict().items() if k not in ADDED_AT_DEFAULT or v != ADDED_AT_DEFAULT[k]}
    if cfg.init_from is not None:
        settings["init_from"] = init_identity(cfg.init_from)
    return with_deit_identity(settings)


def finetune_run_key(cfg: FinetuneConfig, inputs=None) -> str:
    """The results-store key of this fine-tune: dataset content, backbone and weights, metric and every
    setting that changes what is computed. ``inputs`` = ``finetune_inputs(cfg)`` when already at hand
    (``medfm sweep`` resolves them once per dataset x backbone and checks every row's key before training)."""
    dataset, spec = inputs or finetune_inputs(cfg)
    identity = {"kind": "finetune", "dataset": dataset.identity, "backbone": spec.identity(), "metric": dataset.headline_metric,
                "settings": {k: v for k, v in identity_settings(cfg).items() if k not in NOT_IDENTITY}}
    return run_key(identity)


def build_model(cfg: FinetuneConfig, spec, head_spec, num_classes: int) -> tuple[FinetuneModel, dict | None]:
    """The model a fine-tune starts from (on CPU): the backbone with its last ``--unfreeze`` blocks trainable,
    the head seeded by ``--seed``, then ``--init-from`` loaded over both; and what was loaded (None without it)."""
    backbone = spec.build("cpu")
    unfreeze = cfg.blocks_to_unfreeze(len(backbone.blocks()))
    with torch.no_grad():
        s = spec.img_size
        pooled, toks = backbone.embed(torch.zeros(1, 3, s, s), with_tokens=True)
    dim = int(toks.shape[-1] if head_spec.reads == "tokens" else pooled.shape[-1])
    torch.manual_seed(cfg.seed)
    head = head_spec.build_module(dim, num_classes, cfg, int(toks.shape[1]))
    model = FinetuneModel(backbone, head, head_spec.reads, unfreeze, backbone_eval=cfg.backbone_eval)
    init = None
    if cfg.init_from is not None:
        init = {**init_identity(cfg.init_from), **load_init(model, cfg.init_from, cfg.init_from_parts)}
        console.print(f"started from {init['path']} ({init['tensors_loaded']} tensors, {cfg.init_from_parts})")
    return model, init


def run_finetune(cfg: FinetuneConfig) -> dict:
    d, device = setup(cfg.device)
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        if cfg.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.backends.cudnn.benchmark = False
            torch.use_deterministic_algorithms(True)
        return _run(cfg, d, device)
    finally:
        torch.use_deterministic_algorithms(was_deterministic)  # in-process callers get their setting back
        d.close()


def _run(cfg: FinetuneConfig, d: Dist, device: torch.device) -> dict:
    start = time.perf_counter()
    head_spec = HEADS.get(cfg.head)
    head_spec.require("finetune")
    dataset, spec = finetune_inputs(cfg)
    task, metric, C = dataset.task, dataset.headline_metric, dataset.num_classes
    if not len(dataset.splits.get("val", ())):
        raise MedfmError(f"dataset {dataset.name} has no val split to choose the best epoch on", "give it a val split")
    if cfg.val_drop_last:  # before any training: a val split smaller than one batch would score nothing
        val_rows(len(dataset.splits["val"]), cfg.batch_size, cfg.seed, 0)
    if cfg.balanced_sampling and not cfg.train_shuffle:
        raise MedfmError("--balanced-sampling draws a random sample every epoch, so it cannot keep one fixed order "
                         "(--no-train-shuffle)", "use one of the two")
    if cfg.balanced_sampling and task == "multilabel":
        raise MedfmError("balanced_sampling needs one class per image; this dataset is multilabel",
                         "use class_weight (per-label positive weights) instead")
    if cfg.batch_size % d.world:
        raise MedfmError(f"--batch-size {cfg.batch_size} is not divisible by the {d.world} torchrun processes",
                         "use a multiple of --nproc-per-node")
    key = finetune_run_key(cfg, (dataset, spec))
    store = ResultsStore(cfg.results) if d.is_main else None  # not a results store: refused before any training
    out, done = d.broadcast(start_run(cfg.out, cfg.overwrite, "finetune",
                                      f"{dataset.name}-{spec.entry.name}-u{cfg.unfreeze}-{cfg.head}", key, store)
                            if d.is_main else None)
    if done is not None:
        console.print(f"[green]stored[/] the finished run in {out} (its row was missing from {done['results_store']})")
        return done
    last_path, best_path = out / ckpt.LAST, out / ckpt.BEST
    resuming = last_path.exists() and cfg.resume and not cfg.overwrite
    if d.is_main:
        _prepare_dir(out, cfg, last_path)
    d.barrier()

    # model: frozen backbone, last N blocks (+ final norm) trainable, head seeded by --seed
    console.print(f"building [bold]{spec.entry.name}[/] ({spec.entry.model_id}, weights: {spec.weights.origin}) on {device}")
    model, init = build_model(cfg, spec, head_spec, C)
    backbone, unfreeze, n_blocks = model._backbone, model.unfreeze, model.num_layers
    if cfg.grad_checkpointing:
        if not hasattr(backbone.net, "set_grad_checkpointing"):
            raise MedfmError(f"{spec.entry.name} does not support gradient checkpointing", "drop --grad-checkpointing")
        backbone.net.set_grad_checkpointing(True)
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    # data
    train = dataset.splits["train"]
    train_idx = label_budget(train.labels, cfg.fraction, cfg.seed)
    aug_name, aug = policy_for(cfg.augment, dataset.name, cfg.colour_jitter)
    train_ds = SeededImages(train, train_transform(backbone, aug), train_idx.tolist(), cfg.seed)
    workers = cfg.num_workers if cfg.num_workers is not None else default_workers(device)
    pin = device.type == "cuda"
    loader_gen = torch.Generator().manual_seed(cfg.seed)
    per_rank = cfg.batch_size // d.world
    if len(train_idx) % d.world and d.is_main:
        console.print(f"[yellow]note:[/] {len(train_idx)} training images over {d.world} processes: DistributedSampler "
                      f"repeats {d.world - len(train_idx) % d.world} per epoch to even the shares")
    loader = train_loader(train_ds, train.labels[train_idx], per_rank, cfg.balanced_sampling, cfg.seed, d.rank, d.world,
                          workers, pin, loader_gen, drop_last=cfg.drop_last, shuffle=cfg.train_shuffle)
    if not len(loader):
        raise MedfmError(f"--drop-last leaves no training batch: {len(train_idx)} training images per epoch, "
                         f"batches of {cfg.batch_size}", "lower --batch-size or drop --drop-last")
    evals = {s: eval_loader(dataset.splits[s], backbone.transform, d.rank, d.world, per_rank, workers, pin)
             for s in ("val", "test")}
    labels_t = torch.as_tensor(train.labels)
    weight = torch.as_tensor(class_weights(train.labels[train_idx], C, task), device=device) if cfg.class_weight else None

    # optimiser + schedule
    updates_per_epoch = math.ceil(len(loader) / cfg.grad_accum)
    total_steps = cfg.epochs * updates_per_epoch
    asked = cfg.warmup_steps if cfg.warmup_epochs is None else round(cfg.warmup_epochs * updates_per_epoch)
    warmup = asked if cfg.schedule == "constant" else min(asked, total_steps // 10)  # study 1 caps nothing
    if warmup < asked:
        console.print(f"warm-up capped at {warmup} steps (a tenth of this run's {total_steps} optimiser steps)")

    state = {"epoch": -1, "best": -math.inf, "best_epoch": -1, "bad_epochs": 0, "history": []}
    if resuming:
        saved = ckpt.load(last_path)
        if saved["run_key"] != key:
            raise MedfmError(f"{last_path} is a checkpoint of a different run (other settings, data or weights)",
                             "pass another --out, or --overwrite to start this run afresh there")
        load_model_state(model, model, saved["model"])  # before wrapping: plain module on every rank
        state = saved["state"]
        console.print(f"[green]resuming[/] {out} after epoch {state['epoch'] + 1}")
    keys = ckpt.trainable_keys(model)
    model.to(device)
    wrapped = wrap(model, d, device, cfg.distributed)
    groups = param_groups(model, cfg.lr, cfg.head_lr or cfg.lr, cfg.weight_decay, cfg.layer_decay, cfg.no_decay)
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambdas(cfg.schedule, [g["initial_lr"] for g in groups],
                                                              cfg.warmup_start_lr, warmup, total_steps))
    scaler = loss_scaler(device, cfg.amp, cfg.amp_dtype, cfg.distributed == "fsdp")
    if resuming:
        load_optimizer_state(wrapped, opt, saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        if scaler is not None and saved.get("scaler"):
            scaler.load_state_dict(saved["scaler"])
        ckpt.set_rng_state(saved["rng"], loader_gen)
        del saved

    eval_model = wrapped if cfg.distributed == "fsdp" else unwrap(wrapped)
    if d.is_main:
        console.print(f"fine-tuning {unfreeze}/{n_blocks} blocks + {cfg.head} head ({n_trainable:,} trainable parameters) "
                      f"on {len(train_idx)} train / {len(dataset.splits['val'])} val images, {d.world} process(es); "
                      f"{metric} on val picks the epoch")
    with progress() as bar:
        ptask = bar.add_task("epoch", total=len(loader), rate="", visible=d.is_main)
        for epoch in range(state["epoch"] + 1, cfg.epochs):
            loader.sampler.set_epoch(epoch)
            train_ds.epoch = epoch
            bar.reset(ptask, total=len(loader), description=f"epoch {epoch + 1}/{cfg.epochs}")
            best_txt = f" | best val {metric} {state['best']:.4f}" if state["best_epoch"] >= 0 else ""

            def on_batch(loss, _t=ptask, _b=best_txt):
                bar.update(_t, advance=1, rate=f"loss {loss:.4f}{_b}")

            loss = train_epoch(wrapped, loader, labels_t, opt, sched, task=task, weight=weight, accum=cfg.grad_accum,
                               clip=cfg.grad_clip, device=device, amp=cfg.amp, d=d, on_batch=on_batch,
                               train_mode=not (cfg.eval_after_first_val and epoch > 0), amp_dtype=cfg.amp_dtype,
                               scaler=scaler)
            val_probs = predict(eval_model, evals["val"], len(dataset.splits["val"]), task, device, cfg.amp, d,
                                cfg.amp_dtype)
            val_score = epoch_val_score(cfg, task, metric, np.asarray(dataset.splits["val"].labels), val_probs, epoch)
            state["history"].append({"epoch": epoch + 1, "train_loss": loss, f"val_{metric}": val_score,
                                     "lr": sched.get_last_lr()[0]})
            bar.update(ptask, rate=f"loss {loss:.4f} | val {metric} {val_score:.4f}")
            state["epoch"] = epoch
            improved = bool(np.isfinite(val_score) and val_score > state["best"])
            if improved:
                state.update(best=val_score, best_epoch=epoch, bad_epochs=0)
            else:
                state["bad_epochs"] += 1
            stop = bool(cfg.early_stop_patience and state["bad_epochs"] >= cfg.early_stop_patience)
            state["stopped_early"] = stop
            weights = ckpt.trainable_state(model_state(wrapped, model), keys)  # collective under FSDP
            opt_state = optimizer_state(wrapped, opt)
            if d.is_main:
                if improved:
                    ckpt.save_atomic({"model": weights, "epoch": epoch}, best_path)
                ckpt.save_atomic({"run_key": key, "model": weights, "optimizer": opt_state, "scheduler": sched.state_dict(),
                                  "scaler": scaler.state_dict() if scaler is not None else None,
                                  "rng": ckpt.rng_state(loader_gen), "state": state}, last_path)
            del weights, opt_state
            d.barrier()
            if stop:
                console.print(f"early stop: val {metric} has not improved for {cfg.early_stop_patience} epochs")
                break

    # the best epoch on val is the one tested (or the last, with keep='last')
    if cfg.keep == "best" and best_path.exists():
        load_model_state(wrapped, model, ckpt.load(best_path)["model"])
    probs = {s: predict(eval_model, evals[s], len(dataset.splits[s]), task, device, cfg.amp, d, cfg.amp_dtype)
             for s in ("val", "test")}
    val = compute_metrics(task, dataset.splits["val"].labels, probs["val"])
    test = compute_metrics(task, dataset.splits["test"].labels, probs["test"])
    record = {
        "medfm_version": __version__,
        "kind": "finetune",
        "dataset": dataset.name,
        "task": task,
        "classes": dataset.classes,
        "backbone": spec.entry.name,
        "weights": spec.weights.origin,
        "weights_sha256": spec.weights.sha256,
        "feature": spec.feature if head_spec.reads == "pooled" else "tokens",
        "img_size": spec.img_size,
        "preprocessing": preprocessing_record(spec.identity()["preprocessing"]),
        "head": cfg.head,
        "unfreeze": unfreeze,
        "blocks": n_blocks,
        "trainable_params": n_trainable,
        "fraction": cfg.fraction,
        "seed": cfg.seed,
        "headline_metric": {"name": metric, "value": test[metric],
                            **ci_record(metric, dataset.splits["test"].labels, probs["test"], cfg.bootstrap, cfg.ci)},
        "hyperparameters": {"lr": cfg.lr, "head_lr": cfg.head_lr or cfg.lr, "weight_decay": cfg.weight_decay,
                            "layer_decay": cfg.layer_decay, "warmup_steps": warmup, "schedule": cfg.schedule,
                            "warmup_start_lr": cfg.warmup_start_lr, "no_decay": cfg.no_decay, "drop_last": cfg.drop_last,
                            "val_drop_last": cfg.val_drop_last, "val_batch_mean": cfg.val_batch_mean,
                            "train_shuffle": cfg.train_shuffle,
                            "eval_after_first_val": cfg.eval_after_first_val,
                            "backbone_eval": cfg.backbone_eval, "epochs": cfg.epochs,
                            "batch_size": cfg.batch_size, "grad_accum": cfg.grad_accum, "grad_clip": cfg.grad_clip,
                            "augment": aug_name, "class_weight": cfg.class_weight,
                            "balanced_sampling": cfg.balanced_sampling,
                            "precision": cfg.amp_dtype if cfg.amp and device.type == "cuda" else "fp32"},  # what ran
        "init_from": init,
        "best_epoch": state["best_epoch"] + 1,
        "tested_epoch": state["best_epoch"] + 1 if cfg.keep == "best" and best_path.exists() else state["epoch"] + 1,
        "epochs_run": state["epoch"] + 1,
        "stopped_early": state.get("stopped_early", False),
        "history": state["history"],
        "val": val,
        "test": test,
        "n": {"train": int(len(train_idx)), "val": len(dataset.splits["val"]), "test": len(dataset.splits["test"])},
        "train_rows_sha256": rows_sha256(train_idx),
        "val_policy": "; ".join(dataset.notes) or "val split from the dataset",
        "duplicates": dataset.identity.get("duplicates"),  # identical-image groups kept (warn) or dropped
        "cache": None,
        "cache_fingerprint": None,
        "world_size": d.world,
        "device": str(device),
        "wall_time_s": round(time.perf_counter() - start, 3),
        "out": str(out),
        "run_key": key,
    }
    # per-sample test scores, as probe rows keep them: the report's paired tests score entries on the same rows
    record["predictions"] = {"test": {"y_true": np.asarray(dataset.splits["test"].labels).tolist(),
                                      "y_score": stored_scores(probs["test"])}}
    with_identity(record, finetune_identity(identity_settings(cfg), dataset.name, dataset.identity, spec.identity(), metric, unfreeze,
                                            n_blocks, head_spec.reads == "tokens"))
    full = model_state(wrapped, model) if cfg.save_model else None  # collective under FSDP
    if d.is_main:
        _write_outputs(out, cfg, record, full)
        finish_run(out, record, store, "finetune")
    d.barrier()
    return record


def _prepare_dir(out: Path, cfg: FinetuneConfig, last: Path) -> None:
    """Refuse to overwrite a finished run or silently restart an unfinished one."""
    if (out / "results.json").exists() and not cfg.overwrite:
        raise MedfmError(f"{out / 'results.json'} already exists", "pass another --out, or --overwrite to replace it")
    if last.exists() and not cfg.resume and not cfg.overwrite:
        raise MedfmError(f"{out} holds an unfinished run ({last.name})",
                         "rerun with --resume to continue it, or --overwrite to start afresh")
    if cfg.overwrite:
        for name in (ckpt.LAST, ckpt.BEST, "results.json", "model.pt"):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps({"finetune": cfg.to_dict()}, indent=2))


def _write_outputs(out: Path, cfg: FinetuneConfig, record: dict, full_state: dict | None) -> None:
    if full_state is not None:
        ckpt.save_atomic({k: v.detach().cpu() for k, v in full_state.items()}, out / "model.pt")
    _plot_history(out / "history.png", record)


def _plot_history(path: Path, record: dict) -> None:
    """Training curve (loss and val metric per epoch) for the run's report."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hist = record["history"]
    name = record["headline_metric"]["name"]
    fig, ax = plt.subplots(figsize=(5, 3))
    ep = [h["epoch"] for h in hist]
    ax.plot(ep, [h["train_loss"] for h in hist], "o-", label="train loss")
    ax.set_xlabel("epoch")
    ax2 = ax.twinx()
    ax2.plot(ep, [h[f"val_{name}"] for h in hist], "s-", color="tab:orange", label=f"val {name}")
    ax.set_title(f"{record['backbone']} u{record['unfreeze']} {record['head']} on {record['dataset']}", fontsize=9)
    fig.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
