"""Run configurations: every CLI option is a key here, and a run saves the config it ran with.

A config file (JSON or YAML) may hold the keys of one command flat, or sections named after the
commands (``extract:``, ``probe:``); options given on the command line override the file. Rerunning
a saved ``config.json`` with ``--config`` reproduces the run (kaiko eva does the same).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, ClassVar, Literal, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from medfm.errors import MedfmError
from medfm.heads import heads_for, heads_help


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    SECTION: ClassVar[str] = ""
    EXAMPLE: ClassVar[str] = ""  # a complete command line, shown when a required option is missing

    @classmethod
    def load(cls, file: str | Path | None, overrides: dict) -> _Config:
        data = {}
        if file is not None:
            data = _read_file(Path(file))
            if isinstance(data.get(cls.SECTION), dict):
                data = data[cls.SECTION]
        data.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**data)
        except ValidationError as exc:
            missing = [str(e["loc"][0]) for e in exc.errors() if e["type"] == "missing" and e["loc"]]
            if missing:
                given = " and ".join(f"--{k.replace('_', '-')}" for k in missing)
                example = f"e.g. `{cls.EXAMPLE}`" if cls.EXAMPLE else "see `medfm <command> --help`"
                raise MedfmError(f"missing {given} (an option, or a key in --config)", example) from None
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "config"
            origin = f" in {file}" if file else ""
            raise MedfmError(f"invalid setting {where}{origin}: {err['msg']}",
                             f"see `medfm {cls.SECTION or '<command>'} --help`") from None

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")

    @model_validator(mode="before")
    @classmethod
    def _comma_lists(cls, data):
        """A list key given as text ('0.1,1.0' on the command line, `--probe ks=5,11`, a config file) is split on commas."""
        if not isinstance(data, dict):
            return data
        split = {key: [v.strip() for v in value.split(",") if v.strip()] for key, value in data.items()
                 if isinstance(value, str) and key in cls.model_fields
                 and get_origin(cls.model_fields[key].annotation) is list}
        return {**data, **split}


def _read_file(path: Path) -> dict:
    if not path.is_file():
        raise MedfmError(f"config file {path} not found", "check the --config path")
    text = path.read_text()
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
    except Exception as exc:
        raise MedfmError(f"config file {path} is not valid {path.suffix[1:].upper()}: {exc}", "fix its syntax") from None
    if not isinstance(data, dict):
        raise MedfmError(f"config file {path} must hold a mapping of settings", "see README 'Configs'")
    return data


def _batch_size(value):
    """A positive whole number, or 'auto' (the CLI passes both as text)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        number = int(value) if not isinstance(value, bool) else 0
        if number >= 1 and number == float(value):
            return number
    except (TypeError, ValueError):
        pass
    raise ValueError(f"must be a positive whole number or 'auto', not {value!r}")


BatchSize = Annotated[int | Literal["auto"], BeforeValidator(_batch_size)]


def _img_sizes(value):
    """One size (64) or sizes per backbone ('dinov2_vits14=56,mobilenetv2=64', or a mapping); each >= 16."""
    if value is None or isinstance(value, dict):
        sizes = value
    elif isinstance(value, str) and "=" in value:
        sizes = {}
        for item in value.split(","):
            name, sep, size = item.partition("=")
            if not sep or not name.strip():
                raise ValueError(f"{item!r} is not BACKBONE=SIZE")
            sizes[name.strip()] = size.strip()
    else:
        sizes = {"": value}
    if sizes is None:
        return None
    out = {}
    for name, size in sizes.items():
        try:
            number = int(size)
        except (TypeError, ValueError):
            raise ValueError(f"image size {size!r} is not a whole number") from None
        if number < 16 or number > MAX_IMG_SIZE or isinstance(size, bool) or number != float(size):
            raise ValueError(f"image size {size!r} must be a whole number from 16 to {MAX_IMG_SIZE}")
        out[name] = number
    return out[""] if "" in out else out


ImgSizes = Annotated[int | dict[str, int] | None, BeforeValidator(_img_sizes)]


def _opt(default=..., help: str = "", cli: dict | None = None, **constraints):
    """A config field that is also a command-line option: ``help`` is its ``--help`` text (one declaration)."""
    extra = {"cli": cli} if cli else None
    return Field(default, description=help, json_schema_extra=extra, **constraints)


MAX_IMG_SIZE = 4096  # the largest input any registry backbone or study uses is 1024 px; beyond this is a typo


# How a dataset is read: declared once here, used by every config that reads one (extract, finetune, prepare).
def _split_seed_opt():
    return _opt(0, "seed of any split medfm makes (a whole number >= 0)", ge=0)


def _ci_opt():
    return _opt("percentile", "the test metric's 95% CI: percentile (of the bootstrap replicates), or "
                              "mean_of_replicates (study 3's printed interval: a bootstrap CI, RandomState(47), of the "
                              "replicates' mean; far narrower)")


def _duplicates_opt():
    return _opt(None, "identical images under two names (across splits: leakage; different labels: contradiction): "
                      "error, warn (keep and report) or drop (remove leaking and contradicting copies) "
                      "[error for a manifest or folder, warn for a registry dataset]")


def _rehash_opt():
    return _opt(False, "hash every image again for the dataset's content identity instead of trusting the sidecar "
                       "for files whose size, inode, mtime and ctime are unchanged", cli={"flag": "--rehash"})


def _allow_missing_class_opt():
    return _opt(False, "allow a class that val/test hold but train does not (recorded in the dataset identity)",
                cli={"flag": "--allow-missing-class"})


Duplicates = Literal["error", "warn", "drop"] | None


def dataset_options(cfg) -> dict:
    """The keyword arguments of ``create_dataset`` that a config sets."""
    return {"seed": cfg.split_seed, "duplicates": cfg.duplicates, "rehash": cfg.rehash,
            "allow_missing_class": cfg.allow_missing_class}


def check_input_memory(batch_size: int, img_size: int, option: str = "--img-size") -> None:
    """Refuse, before anything is allocated, an input batch that cannot fit this machine's memory.

    The float32 batch alone is ``batch * 3 * size**2 * 4`` bytes and the loader keeps several in
    flight (prefetch, transforms, the first activations): 8 batches are the floor of what a run needs.
    """
    need = 8 * batch_size * 3 * img_size * img_size * 4
    try:
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    if need > have:
        raise MedfmError(f"{option} {img_size} with a batch of {batch_size} needs at least {need / 2**30:.0f} GiB of "
                         f"memory for its input batches, more than this machine's {have / 2**30:.0f} GiB",
                         f"lower {option} or --batch-size")


BACKBONES_FILE_HELP = ("your own backbones registry (YAML/TOML) [$MEDFM_BACKBONES, else "
                       "~/.config/medfm/backbones.{yaml,toml} if present]")


class _BackboneDatasetConfig(_Config):
    """The keys that say which backbone runs on which dataset and split: one definition for extract and finetune.

    Keys are dumped in declaration order, base first: these open every saved extract / finetune config.
    """

    backbone: str = _opt(help="backbone name (`medfm backbones`), or timm:<model>, open_clip:<model>/<tag>, hf:<org>/<repo>")
    dataset: str = _opt(help="dataset name (`medfm datasets`), CSV manifest or image folder")
    weights: str | None = _opt(None, "PATH to a local checkpoint file or folder, 'random' (seeded random init), "
                                     "or omit for the official weights")
    data_root: str | None = _opt(None, "folder holding registry datasets [$MEDFM_DATA, ../shared/data]")
    img_size: int | None = _opt(None, "input size [the backbone's default] (ViTs resample their position embedding)", ge=16,
                                le=MAX_IMG_SIZE)
    feature: str | None = _opt(None, "pooled feature kind: cls, mean, cls+mean, pooled, trunk "
                                     "[the backbone's (the studies') default; `medfm backbones --features`]")
    # issue 17 (study 1's code): features from an intermediate block; CoCa's attention-pooler tokens
    drop_cutoff: int | None = _opt(None, "features from block N (0-based; study 1's partial.drop_cutoff): the blocks "
                                         "after it never run, a ViT's final norm is applied to block N's output "
                                         "[none: the whole model]", ge=0)
    tokens_from: Literal["patch", "attn_pool"] = _opt("patch", "tokens attention heads read: patch (the backbone's "
                                                               "patch tokens) or attn_pool (CoCa: pooled token + the "
                                                               "attention pooler's 255 outputs, as study 1)")
    split_seed: int = _split_seed_opt()
    grey: Literal["repeat", "red"] = _opt("repeat", "grey images: repeat (to RGB) or red (the stem's red-channel "
                                                    "filter only, as study 1's 1-channel stem)")
    # preprocessing policy (medfm/backbones/preprocess.py, norm.py; README "Preprocessing policies")
    resize: Literal["crop", "squash", "pad"] = _opt(
        "crop", "how an image becomes the input square: crop (the backbone's own: shorter side, centre crop), "
                "squash (study 1: both sides to --resize-size, centre crop) or pad (MedMNIST+: original pixels "
                "centred on black, shrunk only if larger)")
    resize_size: int | None = _opt(None, "the side S before the centre crop: squash's square side "
                                         "[round(img_size * 256 / 224)], or crop's shorter side (torchvision "
                                         "Resize(S), bilinear) [the backbone's own resize]", ge=16, le=MAX_IMG_SIZE)
    norm: Literal["backbone", "dataset", "protocol"] = _opt(
        "backbone", "normalise with the backbone's mean/std, the train split's own (per channel, after --resize; "
                    "one channel with --grey red; computed once and kept beside the caches), or the values the "
                    "dataset's protocol declares (study 1's hard-coded ones on its :study1_code protocols)")
    duplicates: Duplicates = _duplicates_opt()
    rehash: bool = _rehash_opt()
    allow_missing_class: bool = _allow_missing_class_opt()
    backbones_file: str | None = _opt(None, BACKBONES_FILE_HELP)

    @model_validator(mode="after")
    def _input_fits_memory(self):
        batch = getattr(self, "batch_size", 1)
        if self.img_size is not None:
            check_input_memory(batch if isinstance(batch, int) else 1, self.img_size)
        return self


class ExtractConfig(_BackboneDatasetConfig):
    SECTION: ClassVar[str] = "extract"
    EXAMPLE: ClassVar[str] = "medfm extract --backbone dinov2_vits14 --dataset busi"
    cache: str | None = _opt(None, "cache path (.zarr dir or .h5 file) [$MEDFM_CACHE/<dataset>/<backbone>-...-<fingerprint>.zarr]")
    format: Literal["zarr", "h5"] = _opt("zarr", "cache format")
    tokens: bool = _opt(False, "also store the patch tokens [N, T, D] (for attention heads)")
    layers: int | None = _opt(None, "--feature of each of the last k blocks, concatenated [1: the model's output]", ge=1)
    batch_size: BatchSize = _opt(64, "images per forward pass, or 'auto' (GPU: the largest power of two that fits "
                                     "memory; CPU: 64)")
    num_workers: int | None = _opt(None, "image-decoding worker processes [auto]", ge=0)
    device: str = _opt("auto", "auto, cpu, cuda, cuda:1 ...")
    compile: bool = _opt(False, "torch.compile the backbone's forward pass (same features; compiles before the run, "
                                "tens of seconds; faster on GPU)")
    dtype: Literal["float16", "float32"] = _opt("float16", "stored feature dtype")
    resume: bool = _opt(True, "continue an interrupted extraction")
    wait: bool = _opt(False, "if another process is writing this cache, wait for it and reuse its result "
                             "[off: stop at once, naming that process]")
    chunk_rows: int | None = _opt(None, "rows per resumable chunk, a multiple of --batch-size [auto: <= 1024 rows, <= 32 MB]", ge=1)
    skip_bad: bool = _opt(False, "skip rows whose file is missing/unreadable or label unknown (each listed on the log)",
                          cli={"flag": "--skip-bad"})
    pixels: str | None = _opt(None, "pixel cache from `medfm prepare`: PATH, or 'none' [auto: a matching one under $MEDFM_CACHE]")


class FinetuneConfig(_BackboneDatasetConfig):  # feature: the linear head's input, as on the probe path
    SECTION: ClassVar[str] = "finetune"
    EXAMPLE: ClassVar[str] = "medfm finetune --backbone dinov2_vits14 --dataset busi --unfreeze 2"
    unfreeze: int | Literal["all"] = _opt(0, "train the last N blocks (0 = frozen backbone, 'all' or -1 = full fine-tune)")
    head: str = _opt("linear", f"head: {heads_help('finetune')} (`medfm heads`)")
    head_depth: int = _opt(12, "deit head: DeiT-B blocks (study 1 uses all 12)", ge=1)
    mlp_hidden: int = _opt(256, "mlp head: hidden width (study 3: 256)", ge=1)
    deit_weights: str | None = _opt(None, "deit head: ImageNet DeiT-B start: omit for deit_base_patch16_224.fb_in1k "
                                          "($MEDFM_DEIT_WEIGHTS, the weights folder, or the hub), PATH to a checkpoint "
                                          "(timm keys), or 'random' (random init, explicitly)")
    metric: str | None = _opt(None, "early-stopping / best-checkpoint metric [the dataset's headline]")
    epochs: int = _opt(100, "training epochs", ge=1)
    batch_size: int = _opt(32, "global batch per step, split over torchrun processes", ge=1)
    grad_accum: int = _opt(1, "steps accumulated per optimiser update", ge=1)
    lr: float = _opt(1e-4, "peak learning rate of the last unfrozen block (study 1: 1e-4)", gt=0)
    head_lr: float | None = _opt(None, "head learning rate [--lr]", gt=0)
    weight_decay: float = _opt(1e-5, "AdamW decoupled decay (study 1: 1e-5); none on what --no-decay names", ge=0)
    layer_decay: float = _opt(1.0, "block i of L gets lr * layer_decay**(L - 1 - i)", gt=0, le=1)
    warmup_steps: int = _opt(1000, "linear warm-up (optimiser steps; with --schedule cosine capped at a tenth of the run)",
                             ge=0)
    # study 1's training as ordinary options (issue 17; code locations in medfm/finetune/engine.py, model.py, data.py)
    schedule: Literal["cosine", "constant"] = _opt("cosine", "after the warm-up: cosine to 0 (medfm), or constant "
                                                             "(study 1's LinearWarmup, no cap on the warm-up)")
    warmup_start_lr: float = _opt(0.0, "the warm-up rises linearly from this rate (study 1: 1e-8)", ge=0)
    warmup_epochs: float | None = _opt(None, "warm-up length in epochs (x optimiser steps per epoch), overrides "
                                             "--warmup-steps (study 1: 5 for APTOS/DDSM)", ge=0)
    no_decay: Literal["biases_norms_tokens", "biases_norms"] = _opt(
        "biases_norms_tokens", "parameters without weight decay: biases, 1-D parameters (norms) and position/CLS/"
                               "register tokens (medfm), or biases and 1-D parameters only (study 1)")
    drop_last: bool = _opt(False, "drop the last incomplete training batch of each epoch (study 1's trainloader)")
    bootstrap: int = _opt(1000, "test-set bootstrap resamples for the 95% CI (0 = none)", ge=0)
    ci: Literal["percentile", "mean_of_replicates"] = _ci_opt()
    train_shuffle: bool = _opt(True, "reshuffle the training images every epoch; false: the same order every epoch "
                                     "(study 3's train loader)")
    eval_after_first_val: bool = _opt(False, "train in eval mode (BatchNorm statistics fixed, dropout off) from the "
                                             "second epoch on, as study 3's loop, whose validation sets eval mode and "
                                             "never sets train mode back")
    val_batch_mean: bool = _opt(False, "score each epoch's val metric as the mean of its per-batch values over a "
                                       "seeded shuffle of val in batches of --batch-size (study 3: the mean of "
                                       "per-batch accuracies of its shuffled val loader)")
    val_drop_last: bool = _opt(False, "score each epoch's val metric, which picks the tested epoch, on a seeded "
                                      "shuffle of val minus its last incomplete batch of --batch-size, as study 1's "
                                      "val loader (shuffle, drop_last); the final val/test metrics use every image")
    backbone_eval: bool = _opt(False, "keep the whole backbone in eval mode, trained blocks too (dropout/drop-path "
                                      "off, BatchNorm statistics fixed), as study 1's frozen-backbone forward does")
    init_from: str | None = _opt(None, "start from a saved fine-tune: PATH to its model.pt or best.pt (strict key "
                                       "match; path and sha256 recorded) (study 1's transfer_learning_params)")
    init_from_parts: Literal["all", "backbone"] = _opt("all", "what --init-from loads: backbone and head, or the "
                                                              "backbone only (study 1: backbone only; a new head)")
    grad_clip: float | None = _opt(1.0, "max global grad norm (null in a --config file = off)", gt=0)
    amp: bool = _opt(True, "mixed precision on CUDA (CPU always trains in fp32)")
    amp_dtype: Literal["bf16", "fp16"] = _opt("bf16", "--amp's autocast dtype: bf16, or fp16 with a dynamic loss "
                                                      "scaler (GradScaler; clipping sees unscaled gradients), as "
                                                      "study 1's torch.cuda.amp autocast + GradScaler")
    grad_checkpointing: bool = _opt(False, "recompute block activations in the backward pass (less memory)")
    augment: str = _opt("auto", "augmentation policy: 'auto' (by dataset modality), 'none', or a policy name")
    colour_jitter: float | None = _opt(None, "override the policy's colour jitter (grey modalities: 0 unless set)", ge=0)
    class_weight: bool = _opt(False, "inverse-frequency class weights in the loss")
    balanced_sampling: bool = _opt(False, "draw training samples with equal class probability instead")
    keep: Literal["best", "last"] = _opt("best", "weights tested: the best epoch on val, or the last epoch")
    early_stop_patience: int = _opt(0, "epochs without val improvement before stopping; 0 = off", ge=0)
    fraction: float = _opt(1.0, "label budget: stratified share of train (>= 1 per class)", gt=0, le=1)
    seed: int = _opt(0, "training seed (label budget, init of the head, order, augmentation)")
    device: str = _opt("auto", "auto, cpu, cuda")
    num_workers: int | None = _opt(None, "image-decoding worker processes [auto]", ge=0)
    distributed: Literal["ddp", "fsdp"] = _opt("ddp", "under torchrun: DDP, or FSDP for models too big per GPU")
    deterministic: bool = _opt(False, "deterministic kernels (resume = uninterrupted run, bit for bit on CPU)")
    out: str | None = _opt(None, "run folder [$MEDFM_RUNS/finetune/...]")
    resume: bool = _opt(True, "continue from the run folder's last checkpoint when there is one")
    overwrite: bool = _opt(False, "replace an existing run in --out")
    save_model: bool = _opt(True, "write the best model's full state_dict to <out>/model.pt")
    results: str | None = _opt(None, "results store (SQLite) to append to [$MEDFM_RUNS/results.sqlite]")

    @field_validator("head")
    @classmethod
    def _finetune_head(cls, v: str) -> str:
        if v not in heads_for("finetune"):
            raise ValueError(f"{v!r} is not a fine-tune head; fine-tune heads: {', '.join(heads_for('finetune'))}")
        return v

    @field_validator("unfreeze")
    @classmethod
    def _unfreeze_range(cls, v):
        if isinstance(v, int) and v < -1:
            raise ValueError("must be >= 0, or -1 / 'all' for a full fine-tune")
        return v

    def blocks_to_unfreeze(self, total: int) -> int:
        """How many of ``total`` blocks train."""
        if self.unfreeze == "all" or self.unfreeze == -1:
            return total
        return min(int(self.unfreeze), total)


class PrepareConfig(_Config):
    SECTION: ClassVar[str] = "prepare"
    EXAMPLE: ClassVar[str] = "medfm prepare --dataset busi --size 256"
    dataset: str = _opt(help="dataset name (`medfm datasets`), CSV manifest or image folder")
    size: int = _opt(256, "side of the stored RGB squares (shorter side -> size, centre crop), e.g. 224, 256, 518", ge=16,
                     le=MAX_IMG_SIZE)
    data_root: str | None = _opt(None, "folder holding registry datasets [$MEDFM_DATA, ../shared/data]")
    out: str | None = _opt(None, "pixel cache path (.zarr) [$MEDFM_CACHE/<dataset>/pixels-<size>px-<fingerprint>.zarr]")
    workers: int | None = _opt(None, "decoding worker processes [auto: the CPU count, at most 8]", ge=0)
    chunk_rows: int | None = _opt(None, "rows per resumable chunk [auto: a power of two, <= ~8 MB]", ge=1)
    compress: Literal["none", "lz4", "zstd"] = _opt("none", "chunk codec: none reads fastest, zstd is smallest on disk")
    split_seed: int = _split_seed_opt()
    skip_bad: bool = _opt(False, "skip rows whose file is missing/unreadable or label unknown", cli={"flag": "--skip-bad"})
    resume: bool = _opt(True, "continue an interrupted prepare")
    duplicates: Duplicates = _duplicates_opt()
    rehash: bool = _rehash_opt()
    allow_missing_class: bool = _allow_missing_class_opt()
    wait: bool = _opt(False, "if another process is writing this pixel cache, wait for it and reuse its result "
                             "[off: stop at once, naming that process]")


class ProbeConfig(_Config):
    SECTION: ClassVar[str] = "probe"
    EXAMPLE: ClassVar[str] = "medfm probe --cache medfm-cache/busi/dinov2_vits14-cls-224px-<fp>.zarr --head linear"
    cache: str | None = _opt(None, "feature cache made by `medfm extract` [every finished cache under $MEDFM_CACHE "
                                   "whose probe with these options is not in the results store yet]")
    dataset: str | None = _opt(None, "without --cache: only caches of this dataset (name or short name)")
    backbone: str | None = _opt(None, "without --cache: only caches of this backbone")
    head: str = _opt("linear", f"head: {heads_help('probe')} (`medfm heads`)")
    metric: str | None = _opt(None, "metric that chooses hyper-parameters [the dataset's headline metric]")
    out: str | None = _opt(None, "run folder for config.json + results.json [$MEDFM_RUNS/probe/...]")
    seed: int = _opt(0, "training seed (also draws the label budget)")
    solver: Literal["lbfgs", "grid"] = _opt("lbfgs", "linear head solver: lbfgs (exact regularised logistic regression "
                                                     "along the --wds path, full-batch L-BFGS, warm-started) or grid "
                                                     "(DINOv2-style --lrs x --wds grid trained with Adam: the studies' "
                                                     "protocol; --epochs, --batch-size, --min-steps)")
    lrs: list[float] = _opt([1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1], "linear head, grid solver: learning rates")
    wds: list[float] = _opt([0.0, 1e-5, 1e-4, 1e-3, 1e-2], "linear and logreg heads: weight decays of the grid")
    epochs: int = _opt(30, "training epochs", ge=1)
    batch_size: int = _opt(1024, "linear head, grid solver: mini-batch size", ge=1)
    min_steps: int = _opt(200, "linear head, grid solver: at least this many steps, so tiny label budgets converge", ge=1)
    normalize: Literal["standard", "l2", "none"] = _opt("standard", "feature normalisation (statistics from train)")
    class_weight: bool = _opt(False, "inverse-frequency class weights")
    device: str = _opt("auto", "auto, cpu, cuda")
    overwrite: bool = _opt(False, "replace results.json in an existing --out")
    results: str | None = _opt(None, "results store (SQLite) to append to [$MEDFM_RUNS/results.sqlite]")
    fraction: float = _opt(1.0, "label budget: stratified share of train (>= 1 per class), drawn with --seed", gt=0, le=1)
    ks: list[int] = _opt([10, 20, 50, 100, 200], "knn head: k values swept, best on val")
    temperature: float = _opt(0.07, "knn head: weight of a neighbour = exp(cosine / temperature)", gt=0)
    head_depth: int = _opt(12, "deit head: DeiT-B blocks kept, 1..12", ge=1, le=12)
    deit_weights: str | None = _opt(None, "deit head: ImageNet DeiT-B start: omit for deit_base_patch16_224.fb_in1k "
                                          "($MEDFM_DEIT_WEIGHTS, the weights folder, or the hub), PATH to a checkpoint "
                                          "(timm keys), or 'random' (random init, explicitly)")
    head_lr: float = _opt(1e-4, "deit head: AdamW learning rate", gt=0)
    head_batch_size: int = _opt(64, "deit head: mini-batch size", ge=1)
    bootstrap: int = _opt(1000, "test-set bootstrap resamples for the 95% CI (0 = none)", ge=0)
    ci: Literal["percentile", "mean_of_replicates"] = _ci_opt()
    store_predictions: bool = _opt(True, "keep per-sample test scores in the record (ROC curves, pooled CIs in reports)")


class SweepConfig(_Config):
    SECTION: ClassVar[str] = "sweep"
    EXAMPLE: ClassVar[str] = "medfm sweep --backbones dinov2_vits14,mobilenetv2 --datasets breastmnist"
    preset: str | None = _opt(None, "a named study grid (--list-presets); explicit lists override it")
    backbones: list[str] = _opt([], "backbones")
    datasets: list[str] = _opt([], "datasets")
    heads: list[str] = _opt([], f"heads: {heads_help('probe')} (`medfm heads`) [linear]")
    fractions: list[float] = _opt([], "label budgets, e.g. 0.01,0.1,1.0 [1.0]")
    seeds: list[int] = _opt([], "seeds, e.g. 0,1,2 [0]")
    weights: dict[str, str] = _opt({}, "BACKBONE=PATH|random (others: official weights)")
    backbones_file: str | None = _opt(None, BACKBONES_FILE_HELP)
    data_root: str | None = _opt(None, "folder holding registry datasets [$MEDFM_DATA, ../shared/data]")
    img_size: ImgSizes = _opt(None, "input size: one for every backbone (64), or per backbone "
                                    "(dinov2_vits14=56,mobilenetv2=64; others: their default) [each backbone's default]")
    grey: Literal["repeat", "red"] = _opt("repeat", "grey images: repeated to RGB, or through the stem's red filter "
                                                    "only (extraction and fine-tunes)")
    # preprocessing of every extract and fine-tune (medfm/backbones/preprocess.py); unset: the preset's, else the default
    resize: Literal["crop", "squash", "pad"] | None = _opt(None, "resize policy of every row: crop, squash or pad "
                                                                 "(`medfm extract --help`) [the preset's, else crop]")
    resize_size: int | None = _opt(None, "the side S before every row's centre crop (squash, crop) [the preset's, "
                                         "else the policy's default]", ge=16, le=MAX_IMG_SIZE)
    norm: Literal["backbone", "dataset", "protocol"] | None = _opt(None, "normalisation of every row: backbone, dataset or protocol "
                                                             "[the preset's, else backbone]")
    tokens: bool | None = _opt(None, "store patch tokens [auto: when a head needs them]")
    extract_batch_size: BatchSize = _opt(64, "images per forward pass when extracting, or 'auto' (GPU: largest that fits)")
    duplicates: Duplicates = _duplicates_opt()  # applied to every extract and fine-tune of the sweep
    keep_going: bool = _opt(False, "a row that fails is recorded (with its error) and the sweep goes on; the summary "
                                   "lists the failures and the exit status is 2", cli={"flag": "--keep-going"})
    device: str = _opt("auto", "auto, cpu, cuda")
    results: str | None = _opt(None, "results store [$MEDFM_RUNS/results.sqlite]")
    out: str | None = _opt(None, "folder of per-row run folders (probes and fine-tunes) [$MEDFM_RUNS/sweep/<preset>]")
    probe: dict = _opt({}, "any `medfm probe` setting for every probe, e.g. ks=5,11 (the common ones also have "
                           "their own options below)")
    scenarios: list[Literal["frozen", "unfrozen"]] = _opt([], "frozen (probe rows), unfrozen (fine-tune rows) or "
                                                              "frozen,unfrozen [preset's, else frozen]")
    unfreeze: list[int | Literal["all"]] = _opt([], "unfrozen rows: last N blocks trained, a row per value (N or 'all') "
                                                    "[preset's, else all]")
    finetune: dict = _opt({}, "any `medfm finetune` setting for every fine-tune, e.g. epochs=10")
    plan_only: bool = _opt(False, "print the plan (and what is done), run nothing", cli={"flag": "--plan"})
    # issue 17 (fidelity): how closely the rows follow the study's code (medfm.fidelity)
    fidelity: Literal["fast", "exact"] | None = _opt(None, "fast: medfm's cached path (frozen rows = extract + probe); "
                                                          "exact: the preset's study as its code ran it (every row a "
                                                          "fine-tune, frozen rows with unfreeze 0; needs --preset) "
                                                          "[the preset's, else fast]")


class ReportConfig(_Config):
    SECTION: ClassVar[str] = "report"
    EXAMPLE: ClassVar[str] = "medfm report --results medfm-runs/results.sqlite"
    results: str | None = _opt(None, "results store (SQLite) to read [$MEDFM_RUNS/results.sqlite]")
    out: str = _opt("medfm-report", "output folder")
    bootstrap: int = _opt(1000, "resamples for the seed-pooled 95% CI and the paired tests (0: none; binary ROC-AUC "
                                "pairs still get DeLong's test)", ge=0)
    kind: Literal["probe", "finetune"] | None = _opt(None, "only probe or finetune rows")
    dataset: list[str] = _opt([], "only these datasets")
    fraction: list[float] = _opt([], "only these label budgets")
    where: list[str] = _opt([], "only rows whose run identity has FIELD=VALUE, e.g. backbone=mobilenetv2, "
                                "weights=random, img_size=224, unfreeze=2 (a field given twice: either value)")
    published: str | None = _opt(None, "CSV of published numbers (dataset, backbone, protocol, image_size, metric, value, "
                                       "source, note[, settings]) shown beside matching entries; shipped: "
                                       "medfm/published/*.csv")
